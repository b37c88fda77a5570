"""The one escaping function: user text shows literally in Markdown and in plotly's HTML subset."""

from __future__ import annotations

import re

import pytest
from markdown_it import MarkdownIt

from tests.hostile.strings import MARKUP, OUTSIDE
from ui.safe_text import escape_text

_md = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def _visible_text(html: str) -> str:
    """The text a browser shows for ``html`` made of one paragraph (entities decoded, tags dropped)."""
    import html as html_lib

    return html_lib.unescape(re.sub(r"<[^>]+>", "", html)).strip()


@pytest.mark.parametrize("text", [*MARKUP, "1. not a list", "- item", "> quote", "http://198.51.100.7:9/x", "a\nb", "www.x.org", "me@x.org"])
def test_markdown_shows_the_text_literally(text: str) -> None:
    html = _md.render(escape_text(text))
    assert html.count("<") == 2, html  # only the paragraph's own <p> ... </p>
    assert "<a " not in html and "<img" not in html
    visible = _visible_text(html)
    assert visible.replace("\u200b", "") == text.replace("\n", " ")
    # no bare address left for Streamlit's GFM autolinker (it links after unescaping)
    assert re.search(r"(?i)https?://|www\.|\w@\w", visible) is None


@pytest.mark.parametrize("text", MARKUP)
def test_plot_text_has_no_tags(text: str) -> None:
    escaped = escape_text(text, plot=True)
    assert "<" not in escaped and ">" not in escaped
    assert escaped.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") == text


def test_none_and_numbers() -> None:
    assert escape_text(None) == "" and escape_text(3) == "3" and escape_text(1.5) == "1\\.5"
    assert "<img" in _md.render(f"![x]({OUTSIDE}/a.png)")  # the reference renderer does render raw markup
    assert "<img" not in _md.render(escape_text(f"![x]({OUTSIDE}/a.png)"))


def test_no_page_shows_an_error_message_as_markdown() -> None:
    """Error messages quote user text (paths, cells, labels): every page passes them through escape_text."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sources = [*root.glob("pages/*.py"), *root.glob("ui/*.py"), root / "home.py", root / "app.py"]
    raw = re.compile(r"st\.(?:sidebar\.)?(?:error|warning|info|success|caption|markdown|toast)\((?:str\(exc\)|f\"[^\"\n]*\{exc\})")
    found = [f"{p.name}: {m.group(0)}" for p in sources if p.is_file() for m in raw.finditer(p.read_text())]
    assert found == []
