"""The README's runnable blocks and the outputs it shows, read from README.md itself.

tests/test_readme_tour.py runs what this module extracts, so the commands a newcomer
copies are the commands the suite runs; a README edit that breaks one fails the test.

The README marks a fenced block with an HTML comment (invisible on GitHub) on the line
before it:

* `<!-- readme-test: write -->`: a file; its first line `# NAME` names it;
* `<!-- readme-test: run -->`: shell lines, run in order. A line ending in `\\` goes on.
  A comment line `# -> TEXT` right under a command is what that command prints (its
  stdout), in a short form: `...` stands for any text, a number with a decimal point for
  any number, and spacing is loose; everything else must be there as shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = re.compile(r"^<!-- readme-test: (run|write) -->\s*$")
FENCE = "```"
EXPECTED_PREFIX = "# -> "


@dataclass
class Command:
    """One shell command of a run block and what the README shows it printing."""

    line: str
    expected: str | None = None


@dataclass
class Block:
    kind: str  # "run" or "write"
    text: str
    commands: list[Command] = field(default_factory=list)

    @property
    def file_name(self) -> str:
        """A write block's file name, from its first line (`# train.py`)."""
        first = self.text.splitlines()[0]
        match = re.fullmatch(r"#\s*(\S+)\s*", first)
        if not match:
            raise ValueError(f"a readme-test write block starts with '# NAME', not {first!r}")
        return match.group(1)


def section(heading: str, text: str | None = None) -> str:
    """The body of the `## heading` section (up to the next `## `)."""
    text = README.read_text() if text is None else text
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    if not match:
        raise ValueError(f"README.md has no section '## {heading}'")
    return match.group(1)


def marked_blocks(body: str) -> list[Block]:
    """The fenced blocks of `body` that a readme-test marker precedes, in order."""
    lines = body.splitlines()
    blocks: list[Block] = []
    for index, line in enumerate(lines):
        marker = MARKER.match(line)
        if not marker:
            continue
        start = index + 1
        if start >= len(lines) or not lines[start].startswith(FENCE):
            raise ValueError(f"a readme-test marker is not followed by a code fence: {line!r}")
        end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith(FENCE))
        text = "\n".join(lines[start + 1 : end]) + "\n"
        block = Block(marker.group(1), text)
        if block.kind == "run":
            block.commands = commands(text)
        blocks.append(block)
    return blocks


def commands(text: str) -> list[Command]:
    """Shell commands (continuations joined) with the `# -> ` output shown under each."""
    result: list[Command] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if pending:
            pending += " " + stripped
        elif stripped.startswith(EXPECTED_PREFIX.strip()):
            if not result:
                raise ValueError(f"an expected output with no command above it: {raw!r}")
            shown = stripped.removeprefix(EXPECTED_PREFIX.strip()).strip()
            previous = result[-1].expected
            result[-1].expected = shown if previous is None else f"{previous} {shown}"
            continue
        elif not stripped or stripped.startswith("#"):
            continue
        else:
            pending = stripped
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        result.append(Command(pending))
        pending = ""
    if pending:
        raise ValueError(f"a run block ends inside a continued line: {pending!r}")
    return result


_ELLIPSIS = "..."
_TOKEN = re.compile(r"\.\.\.|[-+]?\d+\.\d+(?:[eE][-+]?\d+)?|\s+|[^\s\w]|\w+")
_FLOAT = re.compile(r"[-+]?\d+\.\d+(?:[eE][-+]?\d+)?")
_ANY_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def output_pattern(shown: str) -> re.Pattern[str]:
    """The regular expression that an output the README shows as `shown` must match in
    full: `...` any text, a decimal number any number, spacing loose (optional around
    punctuation, at least one space between two words that the README spaces apart)."""
    parts: list[str] = []
    previous_word = False
    spaced = False
    for token in _TOKEN.findall(shown.strip()):
        if token.isspace():
            spaced = True
            continue
        word = bool(re.match(r"\w", token) or _FLOAT.fullmatch(token))
        if parts:
            parts.append(r"\s+" if (spaced and previous_word and word) else r"\s*")
        if token == _ELLIPSIS:
            parts.append(".*?")
        elif _FLOAT.fullmatch(token):
            parts.append(_ANY_NUMBER)
        else:
            parts.append(re.escape(token))
        previous_word, spaced = word, False
    return re.compile("".join(parts), re.S)


def shows(shown: str, output: str) -> bool:
    """Whether `output` is what the README shows as `shown`."""
    return output_pattern(shown).fullmatch(output.strip()) is not None
