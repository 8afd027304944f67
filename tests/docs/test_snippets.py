"""Every snippet of README.md and docs/*.md that claims an output is run, and its output compared.

tests/docs/snippets.py holds the convention (`>>>` doctests in ```` ```python ```` blocks, `$ `
sessions in ```` ```console ```` blocks, `<!-- doc-test: skip: reason -->` for a claim that is
not run). Doctests run in this process, in a folder holding the quickstart's model.pt2 and
digits.npz; console sessions run with bash in that folder with `SHARPNESS_URL` set to a real
service (gateway, Celery worker, Redis) shared by every snippet. A claim that is neither run
nor marked fails `test_every_output_claim_is_run_or_marked`.
"""

from __future__ import annotations

import doctest
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.docs import snippets
from tests.docs.conftest import reader_env
from tests.docs.snippets import Snippet, ToleranceChecker, commands, matches, normalise

SNIPPETS = snippets.all_snippets()
CLAIMS = [s for s in SNIPPETS if s.kind]
RUN = [s for s in CLAIMS if s.kind in ("doctest", "console")]

# Snippets whose claim is true once a change in progress lands: {where they are: reason}.
# Keyed by page and a line of the snippet, so edits elsewhere on the page do not move them.
XFAIL: dict[tuple[str, str], str] = {}


def _id(s: Snippet) -> str:
    return s.where


def _xfail(s: Snippet) -> str | None:
    rel = str(s.page.relative_to(snippets.ROOT))
    return next((r for (page, line), r in XFAIL.items() if page == rel and line in s.body), None)


def needs_service(s: Snippet) -> bool:
    return s.kind == "console" or "sharpness_client" in s.body


@pytest.fixture
def env_for(request: pytest.FixtureRequest, docs_folder: Path):
    def make(s: Snippet) -> dict[str, str]:
        stack = request.getfixturevalue("docs_stack") if needs_service(s) else None
        return reader_env(stack)

    return make


def test_every_output_claim_is_run_or_marked() -> None:
    unmarked = [
        f"{s.where} ({s.lang or 'no language'})"
        for s in CLAIMS
        if s.kind == "claim" and not s.skip_reason
    ]
    assert not unmarked, (
        "these snippets claim an output that no test runs: write them as a ```python block "
        "with >>> lines or a ```console block, or mark them on the line before the fence "
        "with <!-- doc-test: skip: <reason> -->: " + "; ".join(unmarked)
    )
    empty = [s.where for s in SNIPPETS if "skip" in s.marker and not s.skip_reason]
    assert not empty, f"a skip marker needs its reason: {empty}"


def test_the_docs_have_run_snippets() -> None:
    kinds = {s.kind for s in RUN if not s.skip_reason}
    assert kinds == {"doctest", "console"}, kinds


@pytest.mark.parametrize("snippet", [s for s in SNIPPETS if s.skip_reason], ids=_id)
def test_marked_not_run(snippet: Snippet) -> None:
    pytest.skip(f"{snippet.where}: {snippet.skip_reason}")


@pytest.mark.integration
@pytest.mark.parametrize("snippet", [s for s in RUN if not s.skip_reason], ids=_id)
def test_snippet_output(snippet: Snippet, env_for, docs_folder: Path, monkeypatch) -> None:
    reason = _xfail(snippet)  # an expected failure only if it fails: xfail(strict=False)
    env = env_for(snippet)
    try:
        if snippet.kind == "doctest":
            run_doctest(snippet, env, docs_folder, monkeypatch)
        else:
            run_console(snippet, env, docs_folder)
    except AssertionError:
        if reason:
            pytest.xfail(reason)
        raise


def run_doctest(s: Snippet, env: dict[str, str], folder: Path, monkeypatch) -> None:
    monkeypatch.chdir(folder)
    for key in [k for k in os.environ if k.startswith("SHARPNESS_")]:
        monkeypatch.delenv(key)
    if "SHARPNESS_URL" in env:
        monkeypatch.setenv("SHARPNESS_URL", env["SHARPNESS_URL"])
    test = doctest.DocTestParser().get_doctest(s.body, {}, s.where, str(s.page), s.line)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    runner = doctest.DocTestRunner(checker=ToleranceChecker(s.rtol), optionflags=flags)
    report: list[str] = []
    runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0, f"{s.where}: no >>> examples"
    assert result.failed == 0, f"{s.where} (rtol {s.rtol}):\n" + "".join(report)


def run_console(s: Snippet, env: dict[str, str], folder: Path) -> None:
    cmds = commands(s.body)
    for program in ("jq", "curl"):
        if program in s.body and shutil.which(program) is None:
            pytest.skip(f"{s.where} uses {program}, which is not installed")
    assert cmds, f"{s.where}: a console block without a `$ ` command"
    tag = uuid.uuid4().hex
    script = ["exec 2>&1"]
    for i, c in enumerate(cmds):
        script += [f"printf '\\n{tag} start {i}\\n'", c.text, f"printf '\\n{tag} rc {i} %d\\n' $?"]
    proc = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=folder,
        env=env,
        capture_output=True,
        timeout=s.timeout_s,
    )
    out = proc.stdout.decode(errors="replace")  # bytes: keep the \r a terminal shows
    for i, c in enumerate(cmds):
        head, tail = f"\n{tag} start {i}\n", f"\n{tag} rc {i} "
        start, end = out.find(head), out.find(tail)
        assert start >= 0 and end >= 0, f"{s.where}: `{c.text}` did not finish:\n{out}"
        got = out[start + len(head) : end]
        rc = int(out[end:].split(None, 4)[3])
        assert rc == 0, f"{s.where}: `{c.text}` exited {rc}:\n{got}"
        assert matches(c.expected, got, s.rtol), (
            f"{s.where}: `{c.text}` (rtol {s.rtol})\n--- expected\n{c.expected}\n"
            f"--- got\n{normalise(got)}"
        )


# ---------------------------------------------------------------------------- the checker itself
def test_matching_rules() -> None:
    assert matches("lambda_max 1.638", "lambda_max   1.6381339")
    assert matches("lambda_max 1.6", "lambda_max 1.64")  # half a unit of the last digit written
    assert not matches("lambda_max 1.6", "lambda_max 1.66")
    assert matches("value 1.6381", "value 1.6390", rtol=1e-3)
    assert not matches("value 1.6381", "value 1.6500", rtol=1e-3)
    assert matches("job ... submitted", "job 0f3a-77 submitted")
    assert matches("hvps 12", "hvps 12") and not matches("hvps 12", "hvps 13")
    assert matches("True", "True") and not matches("True", "False")
    assert matches("a\n  b", "a b\n")
    assert matches("done", "running 3\rdone")  # what a terminal shows after \r
    assert not matches("a", "a b")  # the whole output, not a prefix


def test_console_commands_and_markers(tmp_path: Path) -> None:
    cmds = commands("$ echo a \\\n> b\na b\n$ true\n")
    assert [c.text for c in cmds] == ["echo a \\\nb", "true"]
    assert [c.expected for c in cmds] == ["a b\n", ""]
    page = tmp_path / "p.md"
    page.write_text(
        "x\n<!-- doc-test: skip: needs a GPU -->\n```text\nout\n```\n\n"
        "```sh\ncurl $B/v1/models  # → 201\n```\n\n<!-- doc-test: rtol=1e-2 -->\n"
        "```python\n>>> 1 + 1\n2\n```\n\n```tree\ntree/\n```\n\n```\nout\n```\n"
    )
    found = snippets.snippets(page)
    assert [s.kind for s in found] == ["claim", "claim", "doctest", "", "claim"]
    assert found[0].skip_reason == "needs a GPU" and found[1].skip_reason is None
    assert found[2].rtol == 1e-2
    with pytest.raises(ValueError, match="not skip"):
        snippets.parse_marker("skp: typo")
