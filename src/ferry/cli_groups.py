"""The `ferry` root command: verbs grouped by task in `--help`, and the error boundary.

click lists a group's commands alphabetically with descriptions cut at 45 characters;
a newcomer reading `ferry --help` looks for a task (serve, make a model smaller, ship it),
so the verbs are listed under the task they belong to, each with its whole first line.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import click

from ferry import cli_errors

# Task -> verbs, in the order `ferry --help` shows them. A verb not listed here (one a
# later change adds) appears under "Other", so it is never hidden.
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Serve", ("serve", "examples")),
    ("Models", ("save", "optimize", "lite")),
    ("Edge", ("edge",)),
    ("Deploy", ("package", "unpack", "push", "pull", "deploy", "endpoints", "invoke")),
    ("Keys", ("keys",)),
    ("About", ("version",)),
)


def first_sentence(command: click.Command) -> str:
    """A verb's whole first sentence (click would cut it at 45 characters); the help
    formatter wraps it under the description column."""
    if command.short_help:
        return command.short_help
    paragraph = " ".join(inspect.cleandoc(command.help or "").split("\n\n")[0].split())
    # A sentence ends at a full stop before a capital ("e.g. model" and "... or" go on).
    end = re.search(r"\.\s+(?=[A-Z])", paragraph)
    return paragraph if end is None else paragraph[: end.start() + 1]


class FerryGroup(click.Group):
    """The root group: grouped verbs in --help, and every escaping exception turned
    into one line by `ferry.cli_errors` (click's own exceptions pass untouched)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            raise cli_errors.report(exc, ctx) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        commands = {
            name: command
            for name in self.list_commands(ctx)
            if (command := self.get_command(ctx, name)) is not None and not command.hidden
        }
        placed: set[str] = set()
        for title, names in (*SECTIONS, ("Other", tuple(commands))):
            rows = [
                (name, first_sentence(commands[name]))
                for name in names
                if name in commands and name not in placed
            ]
            placed.update(name for name, _ in rows)
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
