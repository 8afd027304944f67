"""The snippets of README.md and docs/*.md that claim an output, and how their output is compared.

The convention (described for writers in docs/architecture.md, "Snippets that claim an output"):

- a ```` ```python ```` block with `>>>` lines is a doctest: it runs, and each expected output
  is compared with what the line printed or returned;
- a ```` ```console ```` block is a shell session: a line starting with `$ ` is a command
  (continued on lines starting with `> `), the lines after it up to the next `$ ` are what it
  prints (stdout and stderr together); every command must exit 0 (write `|| echo "exit $?"`
  where a non-zero exit is the claim);
- expected output matches loosely: `...` stands for any text (ids, timings), runs of whitespace
  are equal, and every number matches within a tolerance: relative `rtol` (default 1e-3) or
  half a unit in the last digit written, whichever is larger;
- a block that claims an output but is not run (a block without a language, a ```` ```text ````
  or ```` ```output ```` block, or a block with a `# →` / `# ->` comment) carries a marker on
  the line before its fence:
  `<!-- doc-test: skip: <the reason> -->`; `<!-- doc-test: rtol=1e-2 timeout=300 -->` sets a
  run block's tolerance and time limit.

Everything else is not a claim: snippets that show no output, and diagrams and layouts, which
name what they are (```` ```tree ````, ```` ```diagram ````).
"""

from __future__ import annotations

import doctest
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

DEFAULT_RTOL = 1e-3
DEFAULT_TIMEOUT_S = 240.0

FENCE_OPEN = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
MARKER = re.compile(r"^\s*<!--\s*doc-test:\s*(?P<body>.*?)\s*-->\s*$")
# an output claimed in a comment of a code block: `# → 201`, `# -> value`, `# => value`
ARROW_COMMENT = re.compile(r"#\s*(→|->|=>)\s*\S")
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
SHOWN_OUTPUT = {"", "text", "output"}  # a block without a language is shown output


@dataclass
class Snippet:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    body: str
    marker: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def kind(self) -> str:
        """doctest, console, or claim (an output claim nothing here can run); "" for none."""
        if self.lang in ("python", "py", "pycon") and re.search(r"^>>> ", self.body, re.M):
            return "doctest"
        if self.lang == "console":
            return "console"
        if self.lang in SHOWN_OUTPUT or ARROW_COMMENT.search(self.body):
            return "claim"
        return ""

    @property
    def skip_reason(self) -> str | None:
        return self.marker.get("skip")

    @property
    def rtol(self) -> float:
        return float(self.marker.get("rtol", DEFAULT_RTOL))

    @property
    def timeout_s(self) -> float:
        return float(self.marker.get("timeout", DEFAULT_TIMEOUT_S))


def parse_marker(body: str) -> dict[str, str]:
    """`skip: reason` or `key=value key=value`."""
    if body.startswith("skip"):
        reason = body[4:].lstrip(":").strip()
        return {"skip": reason}
    out = {}
    for word in body.split():
        key, sep, value = word.partition("=")
        if not sep or key not in ("rtol", "timeout"):
            raise ValueError(f"doc-test marker: {word!r} is not skip: <reason>, rtol= or timeout=")
        float(value)
        out[key] = value
    return out


def snippets(page: Path) -> list[Snippet]:
    lines = page.read_text().splitlines()
    out: list[Snippet] = []
    i = 0
    while i < len(lines):
        m = FENCE_OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        fence = m.group("fence")
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        marker = {}
        if i > 0 and (mm := MARKER.match(lines[i - 1])):
            marker = parse_marker(mm.group("body"))
        lang = m.group("info").split()[0] if m.group("info").strip() else ""
        out.append(Snippet(page, i + 1, lang, "\n".join(lines[i + 1 : j]) + "\n", marker))
        i = j + 1
    return out


def all_snippets() -> list[Snippet]:
    return [s for page in PAGES for s in snippets(page)]


# ---------------------------------------------------------------------------- comparing output
def _tolerance(written: str, rtol: float) -> float:
    mantissa, _, exponent = written.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    half_unit = 0.5 * 10.0 ** (-decimals + (int(exponent) if exponent else 0))
    return max(rtol * abs(float(written)), half_unit)


def normalise(text: str) -> str:
    """What a terminal shows: each line's text after its last carriage return."""
    lines = []
    for line in text.split("\n"):
        line = line.rstrip("\r")
        lines.append(line.rsplit("\r", 1)[-1].rstrip())
    return "\n".join(lines).strip("\n")


def matches(expected: str, got: str, rtol: float = DEFAULT_RTOL) -> bool:
    """`got` matches `expected` with `...` as any text, whitespace runs equal and numbers within
    tolerance (relative `rtol`, or half a unit of the last digit written)."""
    expected, got = normalise(expected).strip(), normalise(got).strip()
    pattern, written = [], []
    for piece in re.split(r"(\.\.\.|\s+|" + NUMBER.pattern + ")", expected):
        if not piece:
            continue
        if piece == "...":
            pattern.append(r".*?")
        elif piece.isspace():
            pattern.append(r"\s+")
        elif NUMBER.fullmatch(piece):
            pattern.append(f"({NUMBER.pattern})")
            written.append(piece)
        else:
            pattern.append(re.escape(piece))
    m = re.compile("".join(pattern), re.S).fullmatch(got)
    if m is None:
        return False
    for w, g in zip(written, m.groups(), strict=True):
        a, b = float(w), float(g)
        if math.isnan(a) or not abs(a - b) <= _tolerance(w, rtol):
            return False
    return True


class ToleranceChecker(doctest.OutputChecker):
    """doctest's comparison, then ours: ellipsis, whitespace and numbers within tolerance."""

    def __init__(self, rtol: float) -> None:
        super().__init__()
        self.rtol = rtol

    def check_output(self, want: str, got: str, optionflags: int) -> bool:
        return super().check_output(want, got, optionflags) or matches(want, got, self.rtol)


# ---------------------------------------------------------------------------- console sessions
@dataclass
class Command:
    text: str  # the command as bash reads it (continuation lines joined with newlines)
    expected: str


def commands(body: str) -> list[Command]:
    out: list[Command] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            out.append(Command(line[2:], ""))
        elif not out:
            raise ValueError(f"console block: output before the first `$ ` command: {line!r}")
        elif line.startswith("> ") or line == ">":
            if out[-1].expected:
                raise ValueError(f"console block: `> ` continuation after output: {line!r}")
            out[-1].text += "\n" + line[2:]
        else:
            out[-1].expected += line + "\n"
    return out
