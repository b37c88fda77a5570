"""Hostile strings: text that Markdown or HTML would turn into links, images or markup, and bad names."""

from __future__ import annotations

#: An address outside the app; a browser that requests it has rendered user text as Markdown/HTML.
OUTSIDE = "http://198.51.100.7:9"

#: Text that Markdown / HTML renderers (Streamlit's ``st.markdown``, plotly's hover/legend subset) act on.
MARKUP: tuple[str, ...] = (
    f"![pixel]({OUTSIDE}/md-image.png)",
    f'<img src="{OUTSIDE}/html-image.png">',
    f'<a href="{OUTSIDE}/link">click me</a>',
    f"[a link]({OUTSIDE}/md-link)",
    "**bold** _it_ `code` # heading",
    "<b>bold</b> <i>it</i> <br> &amp; & < >",
    ":red[colour] $x^2$",
)

#: Path texts the operating system refuses: NUL, control characters, names over 255 bytes, huge paths.
BAD_PATHS: tuple[str, ...] = (
    "data\0.csv",
    "line\nbreak.csv",
    "x" * 300 + ".csv",
    "/".join(["d" * 200] * 30) + ".csv",
    "é" * 200 + ".csv",
)
