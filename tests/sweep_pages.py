"""A minimal reading of a sweep's index.html with the standard library's parser (test helper)."""

from __future__ import annotations

from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Element:
    def __init__(self, tag: str, attrs: dict[str, str | None], parents: list["Element"]):
        self.tag, self.attrs, self.parents, self.text = tag, attrs, parents, ""

    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def within(self, tag: str, **attrs: str) -> bool:
        return any(p.tag == tag and all(p.attrs.get(k) == v for k, v in attrs.items()) for p in self.parents)


class Page(HTMLParser):
    """Every element with its attributes, its text (its descendants' included) and its ancestors."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._open: list[Element] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        element = Element(tag, dict(attrs), list(self._open))
        self.elements.append(element)
        if tag not in VOID:
            self._open.append(element)

    def handle_endtag(self, tag):
        while self._open:
            if self._open.pop().tag == tag:
                break

    def handle_data(self, data):
        for element in self._open:
            element.text += data

    def find(self, tag: str, cls: str | None = None, **attrs: str) -> list[Element]:
        return [e for e in self.elements if e.tag == tag and (cls is None or cls in e.classes())
                and all(e.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())]
