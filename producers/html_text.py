"""HTML to the plain text we store: paragraphs kept, markup, navigation and boilerplate gone."""

from __future__ import annotations

import trafilatura
from lxml import html as lxml_html


def main_text(html: str) -> str:
    """The main content of a whole page, as Markdown-flavoured text (paragraphs, code, tables).

    Empty when the page has no main content (a bot wall, an empty shell).
    """
    text = trafilatura.extract(
        html,
        output_format="markdown",
        include_tables=True,
        include_formatting=True,
        include_comments=False,
        # Recall over precision: a writer's short pages must not vanish.
        favor_recall=True,
        with_metadata=False,
        deduplicate=False,
    )
    return (text or "").strip()


def fragment_text(html: str) -> str:
    """The text of an HTML fragment that is all content (a feed entry, an export's body).

    Nothing here is boilerplate, so every paragraph is kept: trafilatura's
    boilerplate filter would drop short ones.
    """
    text = trafilatura.extract(
        f"<html><body><article>{html}</article></body></html>",
        output_format="markdown",
        include_tables=True,
        include_formatting=True,
        favor_recall=True,
        with_metadata=False,
        deduplicate=False,
        no_fallback=False,
    )
    if text:
        return text.strip()
    return _all_text(html)


def _all_text(html: str) -> str:
    try:
        root = lxml_html.fragment_fromstring(html, create_parent="div")
    except (ValueError, TypeError):
        return ""
    blocks = [" ".join(b.text_content().split()) for b in root.iter("p", "li", "h1", "h2", "h3")]
    text = "\n\n".join(b for b in blocks if b)
    return text or " ".join(root.text_content().split())
