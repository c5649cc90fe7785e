"""The repository explains itself: its links resolve and it cites only documents it holds."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", flags=re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target) or ![alt](target), with an optional "title".
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", flags=re.MULTILINE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
# A document's name: a word character, then path characters, ending in ".md".
_MD_NAME = re.compile(r"(?<![\w./-])([\w][\w./-]*\.md)(?![\w-])")
# The same name as a whole string literal: in a test, a file the test itself makes.
_MD_LITERAL = re.compile(r"""["']([^"'\n]*\.md)["']""")


def _repository_files() -> list[Path]:
    """Every file a checkout holds: tracked ones, and new ones git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    return sorted({ROOT / name for name in listed.split("\0") if name and (ROOT / name).is_file()})


def _text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercased, punctuation out, - for spaces."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    for heading in _HEADING.findall(_FENCE.sub("", markdown)):
        base = slug(heading)
        seen = counts.get(base, 0)
        counts[base] = seen + 1
        found.add(base if seen == 0 else f"{base}-{seen}")
    return found


def broken_links(page: Path, root: Path) -> list[str]:
    """The relative links of a Markdown page that lead nowhere, as 'target: why'."""
    text = page.read_text()
    prose = _INLINE_CODE.sub("", _FENCE.sub("", text))
    broken = []
    for target in _LINK.findall(prose):
        if _SCHEME.match(target):
            continue  # http(s), mailto: not ours to check offline
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.is_relative_to(root.resolve()) or not resolved.exists():
            broken.append(f"{target}: no such file in the repository")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text()):
            broken.append(f"{target}: no heading makes the anchor #{anchor}")
    return broken


def missing_documents(files: Iterable[Path], root: Path) -> list[str]:
    """Every `NAME.md` a file names that the repository does not hold, as 'file: NAME.md'.

    A name is held when it resolves from the naming file's folder or the repository's root,
    or, for a bare name, a file of that name is anywhere in the repository. Under ``tests/``,
    a name the file also spells as a whole string literal (the end of one) is a fixture the
    test writes, not a citation.
    """
    files = list(files)
    basenames = {path.name for path in files}
    missing = []
    for path in files:
        text = _text(path)
        if text is None:
            continue
        relative = path.relative_to(root)
        fixtures = set(_MD_LITERAL.findall(text)) if relative.parts[0] == "tests" else set()
        for name in _MD_NAME.findall(_URL.sub("", text)):
            held = (
                any(fixture.endswith(name) for fixture in fixtures)
                or (path.parent / name).is_file()
                or (root / name).is_file()
                or ("/" not in name and name in basenames)
            )
            if not held:
                missing.append(f"{relative}: {name}")
    return missing


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_relative_link_in_readme_and_docs_resolves() -> None:
    broken = [
        f"{page.relative_to(ROOT)}: {why}" for page in _pages() for why in broken_links(page, ROOT)
    ]
    assert broken == []


def test_no_file_cites_a_document_the_repository_lacks() -> None:
    files = [path for path in _repository_files() if path != Path(__file__).resolve()]
    assert missing_documents(files, ROOT) == []


def test_the_docs_have_an_architecture_page_that_readme_links() -> None:
    assert "(docs/architecture.md)" in (ROOT / "README.md").read_text()
    assert (ROOT / "docs" / "architecture.md").is_file()


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n\n## Two words\n\n## Two words\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/guide.md#two-words) [dup](docs/guide.md#two-words-1) [web](https://x.org/a.md)"
        " [gone](docs/gone.md) [bad anchor](docs/guide.md#three) [self](#nowhere)\n"
        "```\n[in code](nothing.md)\n```\n"
    )
    assert broken_links(page, tmp_path) == [
        "docs/gone.md: no such file in the repository",
        "docs/guide.md#three: no heading makes the anchor #three",
        "#nowhere: no heading makes the anchor #nowhere",
    ]
    script = tmp_path / "run.sh"
    script.write_text("# see PLAN.md and docs/guide.md; guide.md; *.md; https://h/x/NOTES.md\n")
    (tmp_path / "tests").mkdir()
    test = tmp_path / "tests" / "test_notes.py"
    test.write_text('(tmp / "note.md").write_text("x")  # note.md is ours; RULES.md is not\n')
    files = [page, script, tmp_path / "docs" / "guide.md", test]
    assert missing_documents(files, tmp_path) == [
        "README.md: docs/gone.md",
        "README.md: nothing.md",
        "run.sh: PLAN.md",
        "tests/test_notes.py: RULES.md",
    ]


def test_slugs_follow_github() -> None:
    assert slug("Generation requests and reply events") == "generation-requests-and-reply-events"
    assert (
        slug("Notes on the embedded broker (Tansu 0.6)") == "notes-on-the-embedded-broker-tansu-06"
    )
    assert slug("`status` and `dead-letters`") == "status-and-dead-letters"
