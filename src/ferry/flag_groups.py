"""A group of `ferry serve` flags that lives with the subsystem it configures.

Why: `serve` has over a hundred flags. Those of one subsystem (TF Serving's own flags,
SageMaker, Triton's extensions, HTTPS, CORS, logs and traces) are declared next to the
code that uses them, and read back there as one options object, so `ferry.cli` neither
lists them nor passes each one through. A group's flags are ordinary click options
(`--config`, FERRY_* variables and both spellings reach them as any other flag, see
`ferry.cli_config` and `ferry.cli_spelling`) that are not parameters of the command:
each value is recorded in the click context under the group's key, and the group's
module reads it back with `given`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
# One flag: its name(s) (the first is the one shown) and click.option's keyword arguments.
FlagSpec = tuple[str | tuple[str, ...], dict[str, Any]]
# A boolean flag in TF Serving's forms: `--flag`, `--flag=true`, `--flag=false`.
BOOL_FLAG: dict[str, Any] = {"type": click.BOOL, "is_flag": False, "flag_value": True}
# Called with each recorded value, for a flag that acts at once (TF Serving's --version).
OnRecord = Callable[[click.Context, str, Any], None]


@dataclass(frozen=True)
class FlagGroup:
    """Flags recorded in `ctx.meta[meta_key]` by parameter name.

    A value of None is not recorded: it is a flag whose default is None and that was not
    given, so `given` holds only what some source set (TF Serving's flags warn about
    each one given). Other defaults are recorded as values."""

    meta_key: str
    flags: Sequence[FlagSpec]
    on_record: OnRecord | None = None

    def add_to(self, command: F) -> F:
        """Add the group's flags to a click command, in the order of `flags` in --help."""
        for names, kwargs in reversed(self.flags):
            spelled = (names,) if isinstance(names, str) else names
            option = click.option(*spelled, expose_value=False, callback=self._record, **kwargs)
            command = option(command)
        return command

    def _record(self, ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return value
        assert param.name is not None
        ctx.meta.setdefault(self.meta_key, {})[param.name] = value
        if self.on_record is not None:
            self.on_record(ctx, param.name, value)
        return value

    def given(self, ctx: click.Context) -> dict[str, Any]:
        """The recorded values, by parameter name (a copy: callers may change it)."""
        return dict(ctx.meta.get(self.meta_key, {}))
