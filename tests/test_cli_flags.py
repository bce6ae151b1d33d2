"""The `ferry` command's surface: verbs grouped by task in --help, one flag spelling
shown (snake_case, as TF Serving's) and the other accepted on every command, help text
on every option, and `ferry version`."""

from __future__ import annotations

import click
from support.cli import run_ferry

from ferry.cli import main
from ferry.cli_groups import SECTIONS, first_sentence
from ferry.distribution import DISTRIBUTION, installed_version


def _commands(command: click.Command, path: str = "ferry"):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _commands(sub, f"{path} {name}")


def test_help_lists_the_verbs_under_their_task_with_whole_descriptions() -> None:
    done = run_ferry("--help")
    assert done.returncode == 0
    titles = [
        line[:-1] for line in done.stdout.splitlines() if line.endswith(":") and line[:1] != " "
    ]
    assert titles[0] == "Options"
    # "Other" holds any verb a later change adds without placing it.
    assert [t for t in titles[1:] if t != "Other"] == [title for title, _ in SECTIONS]
    serve_section = done.stdout.split("Serve:")[1].split("Models:")[0]
    assert serve_section.split()[0] == "serve" and "examples" in serve_section.split()
    flat = " ".join(done.stdout.split())
    for name in ("save", "push", "package"):
        assert f"{name} {first_sentence(main.commands[name])}" in flat


def test_every_option_of_every_command_has_help() -> None:
    missing = [
        f"{path} {param.opts[0]}"
        for path, command in _commands(main)
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden and not param.help
    ]
    assert missing == []


def test_help_shows_one_spelling_per_flag() -> None:
    done = run_ferry("deploy", "kubernetes", "--help")
    assert done.returncode == 0
    listed = [line.split()[0] for line in done.stdout.splitlines() if line.startswith("  --")]
    assert "--model_volume" in listed
    assert "--model-volume" not in " ".join(listed)


def test_both_spellings_give_the_same_result() -> None:
    base = ("deploy", "kubernetes", "web", "--model", "/models/m")
    snake = run_ferry(*base, "--model_volume", "claim-1", "--aws_secret", "aws")
    kebab = run_ferry(*base, "--model-volume", "claim-1", "--aws-secret", "aws")
    assert snake.returncode == 0, snake.stderr
    assert snake.stdout == kebab.stdout
    assert "claim-1" in snake.stdout


def test_serve_takes_kebab_case_too() -> None:
    """A typo'd value shows the flag was parsed under its kebab spelling."""
    done = run_ferry("serve", "models", "--max-header-count", "0")
    assert done.returncode == 2
    assert "Invalid value for '--max_header_count'" in done.stderr


def test_version_names_ferry_and_the_frameworks_found() -> None:
    done = run_ferry("version")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[0] == f"ferry {installed_version()} ({DISTRIBUTION})"
    assert lines[1].startswith("Python 3.")
    assert any(line.startswith("numpy ") for line in lines)
    assert any(line.startswith("onnxruntime ") for line in lines)
    assert run_ferry("--version").stdout == done.stdout
