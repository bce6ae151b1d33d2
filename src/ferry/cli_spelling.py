"""One spelling for ferry's flags, the other accepted everywhere.

ferry's flags are snake_case (`--rest_api_port`, `--max_request_bytes`): `ferry serve`
is the command people type most, and most of its flags are TF Serving's, whose names
must stay as TF Serving spells them so that launch commands and Kubernetes manifests
move over unchanged. One style for every command then means TF Serving's. The
kebab-case twin of each flag (`--max-request-bytes`, as click and the AWS CLI spell
flags) is accepted too, on every command, and hidden from --help so each flag is shown
once. `add_spelling_aliases` walks the finished command tree once, at import, so a flag
added later gets its twin without anyone remembering to.
"""

from __future__ import annotations

import click


class AliasedOption(click.Option):
    """An option with older or other names that stay accepted but are not shown:
    `click.option("--endpoint_url", "--s3_endpoint_url", cls=AliasedOption,
    hidden_aliases=("--s3_endpoint_url",))`."""

    def __init__(self, *args, hidden_aliases: tuple[str, ...] = (), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hidden_aliases = tuple(hidden_aliases)


def _twin(name: str) -> str | None:
    """`--a_b` <-> `--a-b`; None for short options and names without a separator."""
    if not name.startswith("--"):
        return None
    body = name[2:]
    if "_" in body:
        return "--" + body.replace("_", "-")
    if "-" in body:
        return "--" + body.replace("-", "_")
    return None


def canonical(name: str) -> str:
    """The shown (snake_case) spelling of a long option name."""
    return "--" + name[2:].replace("-", "_") if name.startswith("--") else name


def _with_twins(names: list[str], hidden: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """(names to show, all names accepted): the snake_case spellings shown, each
    kebab-case twin accepted too; `hidden` names (either spelling) accepted only."""
    hidden_spellings = {canonical(name) for name in hidden}
    shown: list[str] = []
    for name in names:
        spelled = canonical(name)
        if spelled in hidden_spellings:
            continue
        if spelled not in shown:
            shown.append(spelled)
    shown = shown or [canonical(name) for name in names[:1]]
    accepted = list(shown)
    for name in [*names, *shown]:
        twin = _twin(name)
        for candidate in (name, twin):
            if candidate is not None and candidate not in accepted:
                accepted.append(candidate)
    return shown, accepted


def _hide_twins(option: click.Option, shown: list[str], shown_secondary: list[str]) -> None:
    """Make --help list only `shown` for this option (click has no per-name hiding)."""
    unbound = type(option).get_help_record

    def help_record(ctx: click.Context) -> tuple[str, str] | None:
        accepted, secondary = option.opts, option.secondary_opts
        option.opts, option.secondary_opts = shown, shown_secondary
        try:
            return unbound(option, ctx)
        finally:
            option.opts, option.secondary_opts = accepted, secondary

    option.get_help_record = help_record  # type: ignore[method-assign]


def add_spelling_aliases(command: click.Command) -> None:
    """Give every long option of `command` and its subcommands both spellings."""
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        shown, accepted = _with_twins(param.opts, getattr(param, "hidden_aliases", ()))
        shown_secondary, accepted_secondary = _with_twins(param.secondary_opts)
        if accepted == param.opts and accepted_secondary == param.secondary_opts:
            continue
        param.opts, param.secondary_opts = accepted, accepted_secondary
        _hide_twins(param, shown, shown_secondary)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_spelling_aliases(sub)
