"""The reference sections of docs/ are what docs/generate.py makes of the code (issue 15).

The flags, endpoints and gRPC methods in docs/commands.md, docs/endpoints.md and
docs/tfserving_flags.md are rendered from the click commands, the OpenAPI operation
table, the proto descriptors and the TF Serving flag table; a change to any of them
without `make docs` fails here, naming the page. The generator itself runs as a script
with another home folder and working folder (its output must not depend on the machine),
and every option of every verb has help, since that help is the documentation.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import click
import pytest

from ferry.cli import main

REPO = Path(__file__).resolve().parents[1]
GENERATOR = REPO / "docs" / "generate.py"


@pytest.fixture(scope="module")
def generate() -> ModuleType:
    """docs/generate.py as a module (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("ferry_docs_generate", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pages(generate: ModuleType) -> dict[Path, tuple[str, str]]:
    return generate.generated_pages()


def test_the_committed_pages_are_what_the_generator_writes(pages) -> None:
    stale = {}
    for path, (current, generated) in pages.items():
        if current != generated:
            diff = difflib.unified_diff(
                current.splitlines(), generated.splitlines(), "committed", "generated", lineterm=""
            )
            stale[path.name] = "\n".join(list(diff)[:40])
    assert not stale, "out of date, run `make docs`: " + "; ".join(
        f"docs/{name}:\n{diff}" for name, diff in stale.items()
    )


def test_every_page_has_its_sections_and_keeps_its_prose(pages, generate) -> None:
    for path, (current, _) in pages.items():
        names = [match["name"] for match in generate.SECTION.finditer(current)]
        assert sorted(names) == sorted(generate.PAGES[path.name]), path.name
        outside = generate.SECTION.sub("", current)
        assert outside.strip().startswith("# "), f"{path.name} lost its hand-written title"


def test_render_replaces_only_the_marked_section_and_refuses_a_missing_marker(generate) -> None:
    text = "# Title\n\nprose\n<!-- generated: x -->\nold\n<!-- end generated -->\nmore prose\n"

    rendered = generate.render(text, {"x": lambda: "new\n"}, "page.md")

    assert rendered == text.replace("old\n", "new\n")
    with pytest.raises(generate.GenerateError, match="missing"):
        generate.render(text, {"x": lambda: "", "y": lambda: ""}, "page.md")
    with pytest.raises(generate.GenerateError, match="unknown"):
        generate.render(text, {}, "page.md")


def test_the_reference_lists_every_shown_option_of_every_verb(pages) -> None:
    commands_page = next(text for path, (_, text) in pages.items() if path.name == "commands.md")
    missing = []
    for path, command in _commands(main, ["ferry"]):
        heading = f"`{' '.join(path)}`"
        if heading not in commands_page:
            missing.append(heading)
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                shown = next(opt for opt in param.opts if opt.startswith("-"))
                if f"`{shown}`" not in commands_page:
                    missing.append(f"{heading} {shown}")
    assert not missing, missing


def test_every_option_of_every_verb_has_help() -> None:
    """The help is the reference: an option without it would be a blank row."""
    undocumented = [
        f"{' '.join(path)} {param.opts[0]}"
        for path, command in _commands(main, ["ferry"])
        for param in command.params
        if isinstance(param, click.Option) and not (param.help or "").strip()
    ]
    assert not undocumented, f"options without help: {undocumented}"


def test_the_flags_that_label_endpoints_are_real_serve_flags(generate) -> None:
    serve = main.commands["serve"]
    flags = {opt for param in serve.params for opt in getattr(param, "opts", ())}
    labels = [*generate._http_configurations(), *generate._grpc_configurations()]
    named = {word for label in labels for word in label.split()}
    assert named, "no configuration names a flag"
    assert named <= flags, named - flags


def test_the_script_writes_the_same_pages_on_any_machine(tmp_path: Path, pages) -> None:
    """Run as `make docs` runs it, from another folder with another home: nothing out of
    date, so no default or path of this machine is in the pages."""
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for path, (_, text) in pages.items():
        for local in (str(REPO), str(Path.home())):
            if len(local) < 2:
                continue
            assert local not in text, f"docs/{path.name} names this machine's {local}"


def _commands(command: click.Command, path: list[str]):
    """Every command of the tree with its path, the root first."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            if not sub.hidden:
                yield from _commands(sub, [*path, name])
