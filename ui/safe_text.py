"""User text (contents, labels, ids, annotator names, notes, messages that quote them) made inert for display.

Streamlit renders ``st.markdown`` / ``st.caption`` / ``st.error`` / widget labels as Markdown, so a label
``![x](http://host/p.png)`` would make every reviewer's browser fetch that address, and ``[x](url)`` would
become a live link. Plotly renders a subset of HTML (``<a href>``, ``<b>``, ``<br>``, ``<span style>``) in
hover text, legends, titles and axis labels. :func:`escape_text` is the one function every page and helper
uses before user text reaches either; where a widget shows text as-is (``st.text``, ``st.code``,
``st.dataframe`` cells), no escaping is needed.
"""

from __future__ import annotations

import re

# Characters that make Markdown (CommonMark + GFM + Streamlit's LaTeX) markup anywhere in a line: emphasis,
# code, links and images (``[``), raw HTML, strikethrough, LaTeX, entities. A backslash makes each literal.
# (With ``[`` escaped, ``![x](url)`` and ``[x](url)`` are plain text; ``:red[x]`` loses its bracket too.)
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>~$&])")
# What starts a block only at the start of a line (heading, quote, list, rule): escaped there.
_BLOCK_START = re.compile(r"^(\s*)([#>+=-]|\d+(?=[.)]))")
_PLOT_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# Streamlit's Markdown (remark-gfm) turns bare addresses into links *after* unescaping: ``http://``, ``www.``
# and ``name@host``. A zero-width space after the scheme / ``www`` / ``@`` keeps them plain text.
_AUTOLINK = re.compile(r"(?i)(https?|ftp|mailto|www)(?=[:.])|(@)")
_ZWSP = "\u200b"


def escape_text(value: object, *, plot: bool = False) -> str:
    """Return ``value`` as text that Markdown (default) or plotly (``plot=True``) shows literally.

    Parameters
    ----------
    value : object
        Any value; ``str(value)`` is escaped (None gives ``""``).
    plot : bool
        False: for Streamlit's Markdown (every Markdown / HTML control character backslash-escaped, line
        breaks kept as spaces, so a cell cannot start a heading or a list; a zero-width space after
        ``http`` / ``www`` / ``@`` so an address is not made a link). True: for plotly hover text,
        legend entries, titles and tick labels (``&``, ``<``, ``>`` as HTML entities).

    Returns
    -------
    str
    """
    text = "" if value is None else str(value)
    if plot:
        return "".join(_PLOT_ENTITIES.get(c, c) for c in text)
    text = text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
    text = _AUTOLINK.sub(lambda m: m.group(0) + _ZWSP, text)
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", text)
    block = _BLOCK_START.match(text)
    if block is not None:
        start = block.end(1) if not block.group(2)[0].isdigit() else block.end(2)
        text = text[:start] + "\\" + text[start:]
    return text
