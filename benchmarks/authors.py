"""Build the multi-author evaluation corpus for the style benchmark from Debian's perl-doc.

The benchmark fine-tunes one LoRA adapter per author and checks that generated text is
attributed to the right writer, so it needs several real authors with tens of thousands of
words each.  Shipping such texts is not needed (and their licences vary), so this script
builds the corpus at benchmark time from the ``perl-doc`` Debian package, whose pod pages
have well-known single authors:

* brian d foy: the perlfaq series (which he has maintained since 2002),
* Tom Christiansen: perldsc, perllol, perlipc, perltie, perlopentut, perlunicook,
* Mark Kvale: perlretut and perlrequick,
* Larry Wall: perlstyle, perlsyn, perldata, perlsub, perlmod, perlform (his original
  manual pages; later edited by the Perl 5 Porters).

The pod sources are taken from ``--pod-dir``, else from an installed perl-doc
(``/usr/share/perl/*/pod``), else from ``apt-get download perl-doc`` unpacked with
``dpkg-deb -x`` into a temporary folder (no other network access).  Every pod page is
converted to simple Markdown (headings become ``#`` lines, paragraphs and lists are kept,
formatting codes are flattened), split at ``=head1``/``=head2`` boundaries into documents
of roughly 300-5000 words, and written to ``OUT/<author-slug>/<doc-slug>.md``.  A JSON
summary ``{author: {"documents": n, "words": w}}`` is printed on stdout.

Usage::

    python benchmarks/authors.py --out /tmp/authors
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

AUTHORS: dict[str, list[str]] = {
    "brian-d-foy": [f"perlfaq{i}" for i in range(1, 10)],
    "tom-christiansen": ["perldsc", "perllol", "perlipc", "perltie", "perlopentut", "perlunicook"],
    "mark-kvale": ["perlretut", "perlrequick"],
    "larry-wall": ["perlstyle", "perlsyn", "perldata", "perlsub", "perlmod", "perlform"],
}

MIN_WORDS = 300
MAX_WORDS = 5000
# Preferred document size: a new document starts at the next heading past this.
TARGET_WORDS = 1500
# Sections that are credits or licence text rather than the author's prose.
SKIP_SECTIONS = re.compile(
    r"^(AUTHORS?|AUTHOR AND COPYRIGHT|AUTHORS AND COPYRIGHT|COPYRIGHT.*|LICEN[CS]E.*|"
    r"CREDITS|ACKNOWLEDGEMENTS?|REVISION|SEE ALSO|VERSION)$",
    re.IGNORECASE,
)
# A document whose verbatim (code) share exceeds this loses its code blocks.
CODE_DOMINATES = 0.5


@dataclass
class Section:
    """One ``=head1``/``=head2`` piece of a pod page rendered as Markdown blocks."""

    title: str
    level: int
    blocks: list[tuple[str, str]]  # (kind, text) with kind "text" or "code"


def _find_pod_dir(explicit: str | None, workdir: Path) -> Path:
    """Return a folder holding perl-doc's ``*.pod`` files, downloading perl-doc if needed."""
    if explicit:
        return Path(explicit)
    for cand in sorted(Path("/usr/share/perl").glob("*/pod"), reverse=True):
        if (cand / "perlretut.pod").is_file():
            return cand
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise SystemExit("perl-doc not installed and apt-get/dpkg-deb unavailable; use --pod-dir")
    # _apt drops privileges and must be able to write the download folder.
    workdir.chmod(0o777)
    subprocess.run(
        ["apt-get", "download", "perl-doc"], cwd=workdir, check=True, stdout=subprocess.DEVNULL
    )
    debs = sorted(workdir.glob("perl-doc_*.deb"))
    if not debs:
        raise SystemExit("apt-get download perl-doc produced no .deb")
    root = workdir / "root"
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(root)], check=True)
    for cand in sorted(root.glob("usr/share/perl/*/pod"), reverse=True):
        return cand
    raise SystemExit("perl-doc .deb has no usr/share/perl/*/pod folder")


_ENTITIES = {
    "lt": "<",
    "gt": ">",
    "verbar": "|",
    "sol": "/",
    "quot": '"',
    "amp": "&",
    "eacute": "é",
    "auml": "ä",
    "ouml": "ö",
    "uuml": "ü",
    "aring": "å",
}


def _entity(name: str) -> str:
    """Decode the body of an ``E<...>`` pod escape."""
    if name.isdigit():
        return chr(int(name))
    if name.lower().startswith("0x"):
        return chr(int(name, 16))
    return _ENTITIES.get(name, name)


def _link(body: str) -> str:
    """Render the body of an ``L<...>`` link as its visible text."""
    if "|" in body:
        return body.split("|", 1)[0]
    if "/" in body:
        page, _, sec = body.partition("/")
        sec = sec.strip('"')
        return f'"{sec}" in {page}' if page else f'"{sec}"'
    return body


def _inline(text: str) -> str:
    """Flatten pod formatting codes (C<>, B<>, L<>, E<> ...) into Markdown-ish text."""

    def double(m: re.Match[str]) -> str:
        code, body = m.group(1), m.group(3).strip()
        return _apply(code, body)

    text = re.sub(r"([A-Z])(<{2,})\s(.*?)\s\2", lambda m: double(m), text, flags=re.S)
    text = re.sub(r"([A-Z])(<{2,})\s(.*?)\s>{2,}", lambda m: double(m), text, flags=re.S)
    inner = re.compile(r"([A-Z])<([^<>]*)>")
    for _ in range(10):
        new = inner.sub(lambda m: _apply(m.group(1), m.group(2)), text)
        if new == text:
            break
        text = new
    return text


def _apply(code: str, body: str) -> str:
    """Apply one formatting code to its already flattened body."""
    if code == "C":
        return f"`{body}`"
    if code == "B":
        return f"**{body}**"
    if code in ("I", "F"):
        return f"*{body}*"
    if code == "E":
        return _entity(body)
    if code == "L":
        return _link(body)
    if code in ("X", "Z"):
        return ""
    return body


def parse_pod(source: str) -> list[Section]:
    """Split a pod page into sections of Markdown text and verbatim code blocks."""
    sections = [Section("", 1, [])]
    skip_depth = 0
    for para in re.split(r"\n\s*\n", source.replace("\r\n", "\n")):
        if not para.strip():
            continue
        if para.startswith("="):
            cmd, _, rest = para.partition(" ")
            cmd = cmd.split("\n", 1)[0]
            rest = " ".join(rest.split())
            if cmd == "=begin":
                skip_depth += 1
            elif cmd == "=end":
                skip_depth = max(0, skip_depth - 1)
            elif skip_depth:
                continue
            elif cmd in ("=head1", "=head2"):
                sections.append(Section(_inline(rest), int(cmd[-1]), []))
            elif cmd in ("=head3", "=head4"):
                hashes = "#" * int(cmd[-1])
                sections[-1].blocks.append(("text", f"{hashes} {_inline(rest)}"))
            elif cmd == "=item":
                item = _inline(rest)
                if item and item not in ("*", "-"):
                    item = re.sub(r"^(\*|\d+\.?)\s*", "", item)
                    sections[-1].blocks.append(("text", f"- {item}"))
            continue
        if skip_depth:
            continue
        if para[0] in " \t":
            sections[-1].blocks.append(("code", para.rstrip()))
        else:
            sections[-1].blocks.append(("text", " ".join(_inline(para).split())))
    return [s for s in sections if s.blocks or s.title]


def _words(text: str) -> int:
    """Count whitespace separated words."""
    return len(text.split())


def _render(sections: list[Section]) -> str:
    """Render sections to Markdown, dropping code blocks when they dominate the text."""
    blocks = [b for s in sections for b in s.blocks]
    code = sum(_words(t) for k, t in blocks if k == "code")
    total = sum(_words(t) for _, t in blocks) or 1
    keep_code = code / total <= CODE_DOMINATES
    out: list[str] = []
    for s in sections:
        if s.title:
            out.append("#" * s.level + " " + s.title)
        for kind, text in s.blocks:
            if kind == "code":
                if keep_code:
                    out.append("\n".join("    " + ln for ln in _dedent(text).splitlines()))
            else:
                out.append(text)
    return "\n\n".join(out).strip() + "\n"


def _dedent(text: str) -> str:
    """Remove the common indentation of a verbatim block."""
    lines = text.expandtabs(8).splitlines()
    pad = min((len(ln) - len(ln.lstrip()) for ln in lines if ln.strip()), default=0)
    return "\n".join(ln[pad:] for ln in lines)


def _slug(text: str) -> str:
    """Make a short lowercase file-name slug."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:60].rstrip("-") or "section"


def split_documents(page: str, sections: list[Section]) -> list[tuple[str, str]]:
    """Group a page's sections into (slug, markdown) documents of MIN..MAX words."""
    sections = [s for s in sections if not SKIP_SECTIONS.match(s.title.strip())]
    if sections and sections[0].title.strip().upper() == "NAME":
        sections = sections[1:]
    docs: list[tuple[str, str]] = []
    group: list[Section] = []

    def flush() -> None:
        if group:
            title = next((s.title for s in group if s.title), page)
            docs.append((f"{page}-{len(docs) + 1:02d}-{_slug(title)}", _render(group)))
            group.clear()

    for sec in sections:
        size = _words(_render([sec]))
        current = _words(_render(group)) if group else 0
        # Start a new document at a top-level heading once the current one is long enough,
        # at any heading past the target size, or when this section would overflow the limit.
        if group and (
            (sec.level == 1 and current >= MIN_WORDS)
            or current >= TARGET_WORDS
            or (current + size > MAX_WORDS and current >= MIN_WORDS)
        ):
            flush()
        group.append(sec)
    flush()
    # Merge a too-short tail into the previous document.
    if len(docs) > 1 and _words(docs[-1][1]) < MIN_WORDS:
        _, text = docs.pop()
        prev_slug, prev = docs.pop()
        docs.append((prev_slug, prev + "\n" + text))
    return docs


def build(pod_dir: Path, out: Path) -> dict[str, dict[str, int]]:
    """Write every author's documents under ``out`` and return the summary."""
    summary: dict[str, dict[str, int]] = {}
    for author, pages in AUTHORS.items():
        folder = out / author
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        n_docs = n_words = 0
        for page in pages:
            path = pod_dir / f"{page}.pod"
            if not path.is_file():
                print(f"warning: {path} missing, skipped", file=sys.stderr)
                continue
            sections = parse_pod(path.read_text(encoding="utf-8", errors="replace"))
            for slug, text in split_documents(page, sections):
                words = _words(text)
                if words < MIN_WORDS // 2:
                    continue
                (folder / f"{slug}.md").write_text(text, encoding="utf-8")
                n_docs += 1
                n_words += words
        summary[author] = {"documents": n_docs, "words": n_words}
    return summary


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, locate or fetch perl-doc, build the corpus and print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--pod-dir", help="folder with perl-doc *.pod files (skips apt)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="authors-") as tmp:
        pod_dir = _find_pod_dir(args.pod_dir, Path(tmp))
        summary = build(pod_dir, Path(args.out))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
