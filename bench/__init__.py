"""Benchmarks: printed, and kept as markdown under bench/results/; never asserted."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def report(name: str, lines: list[str]) -> None:
    """Print a benchmark's report and keep it as bench/results/<name>.md."""
    text = "\n".join(lines).rstrip("\n") + "\n"
    print(text, end="")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
