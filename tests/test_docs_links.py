"""Every relative link in README.md and docs/*.md resolves inside the repository.

A link's file must exist under the repository root (nothing outside it, such as ../shared),
and a `#fragment` must name a heading of the target page, slugged as GitHub slugs headings.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and [text](target "title"), not images' URLs inside code spans or fences
LINK = re.compile(r"(?<!\\)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def prose(text: str) -> str:
    """The page without fenced code blocks and code spans, where brackets are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[*_`]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page: Path) -> list[str]:
    text = prose(page.read_text())
    return LINK.findall(text) + REF_DEF.findall(text)


def test_pages_exist():
    assert (ROOT / "docs").is_dir(), "docs/ holds the reference pages the README links to"
    assert len(PAGES) > 5


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path):
    bad = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.is_relative_to(ROOT):
            bad.append(f"{target}: outside the repository")
            continue
        if not dest.exists():
            bad.append(f"{target}: {dest.relative_to(ROOT)} does not exist")
            continue
        if fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            bad.append(f"{target}: no heading '#{fragment}' in {dest.relative_to(ROOT)}")
    assert not bad, f"{page.relative_to(ROOT)}: " + "; ".join(bad)


def test_no_references_outside_the_repository():
    for page in PAGES:
        assert "../shared" not in page.read_text(), f"{page.relative_to(ROOT)} names ../shared"


def test_checker_catches_broken_links(tmp_path: Path):
    """The checker itself: a missing file, an unknown anchor and ../ outside are found."""
    page = ROOT / "docs" / "measures.md"
    assert "new-measures" in anchors(ROOT / "docs" / "generalization.md")
    assert slug("Studies: does a measure predict generalization *here*?") == (
        "studies-does-a-measure-predict-generalization-here"
    )
    text = "[a](missing.md) [b](models.md#nope) `[c](in-code.md)` [d](../../x.md)"
    found = LINK.findall(prose(text))
    assert found == ["missing.md", "models.md#nope", "../../x.md"]
    assert not (page.parent / "missing.md").exists()
    assert "nope" not in anchors(page.parent / "models.md")


# a file a docstring or comment names by its path from the repository root (docs/studies.md,
# service/serve.py), or a top-level page by name (README.md)
CODE_TOPS = ("service", "tasks", "clients")
PATH_IN_CODE = re.compile(
    r"(?<![\w/.])((?:service|tasks|clients|tests|docs|deploy|examples)/[\w./-]*\w"
    r"\.(?:py|md|yaml|toml|txt))"
)
PAGE_IN_CODE = re.compile(r"(?<![\w/.])([A-Z][A-Z_]+\.md)\b")


def named_files(text: str) -> list[str]:
    return PATH_IN_CODE.findall(text) + PAGE_IN_CODE.findall(text)


def test_files_named_in_product_code_exist():
    """A docstring that sends the reader to a page or module sends them somewhere real."""
    bad = []
    sources = [p for top in CODE_TOPS for p in sorted((ROOT / top).rglob("*.py"))]
    for source in sources:
        for name in named_files(source.read_text()):
            if not any((base / name).exists() for base in (ROOT, ROOT / "clients" / "python")):
                bad.append(f"{source.relative_to(ROOT)}: {name}")
    assert len(sources) > 100
    assert not bad, "named files that do not exist: " + "; ".join(bad)


def test_the_code_scan_finds_named_files():
    text = '"""See docs/studies.md and SCIENCE.md; service/serve.py starts it (not x/docs/y.md)."""'
    assert named_files(text) == ["docs/studies.md", "service/serve.py", "SCIENCE.md"]
