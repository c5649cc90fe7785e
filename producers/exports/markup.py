"""Picking the parts out of an export's HTML page: its title line, dates, links and body."""

from __future__ import annotations

from typing import Any

from lxml import etree
from lxml import html as lxml_html

from producers.exports.normalize import tidy

# lxml ships no type information; an element is what its parser returns.
Element = Any


def parse_page(text: str) -> Element:
    """The page's root element. Raises ValueError when it is not parseable HTML."""
    try:
        return lxml_html.document_fromstring(text)
    except (etree.ParserError, ValueError) as error:
        raise ValueError(f"not parseable HTML: {error}") from None


def first(root: Element, css_class: str) -> Element | None:
    found = root.find_class(css_class)
    return found[0] if found else None


def text_of(element: Element | None) -> str:
    """The element's text on one line, tidied; empty for no element."""
    if element is None:
        return ""
    return tidy(" ".join(str(element.text_content()).split()))


def drop(elements: list[Element]) -> None:
    """Removes the elements, keeping the text that follows each one."""
    for element in elements:
        element.drop_tree()


def inner_html(element: Element) -> str:
    """The markup inside ``element``, without the element's own tag."""
    parts = [element.text or ""]
    parts += [lxml_html.tostring(child, encoding="unicode") for child in element]
    return "".join(str(part) for part in parts)
