"""AppTest: a run whose captions, labels and pair ids hold Markdown / HTML; no page renders any of it."""

from __future__ import annotations

from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from analysis.embedding.engine import embed_to_run
from analysis.runs.workspace import SAMPLE_CHECKPOINT
from tests.hostile.datasets import markup_dataset
from ui.state import ANNOTATOR_KEY, RUN_KEY

PAGES = Path(__file__).resolve().parents[2] / "pages"
_md = MarkdownIt("commonmark").enable(["table", "strikethrough"])
_MARKDOWN_ELEMENTS = ("markdown", "caption", "error", "warning", "info", "success", "title", "header", "subheader")


@pytest.fixture(scope="module")
def markup_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("markup")
    table = markup_dataset(folder / "data")
    return Path(embed_to_run(table, SAMPLE_CHECKPOINT, out=folder / "run", device="cpu"))


def _rendered_markup(at: AppTest) -> list[str]:
    """Every Markdown element whose rendering holds a link or an image (what user text must never become)."""
    found = []
    for kind in _MARKDOWN_ELEMENTS:
        for element in at.get(kind):
            html = _md.render(str(getattr(element, "value", "") or ""))
            if "<img" in html or "<a " in html:
                found.append(f"{kind}: {element.value!r}")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("page", ["1_Score_Distributions.py", "4_False_Negatives.py", "5_Label_Noise.py"])
def test_pages_show_markup_as_text(page: str, markup_run: Path) -> None:
    at = AppTest.from_file(str(PAGES / page), default_timeout=180)
    at.session_state[RUN_KEY] = str(markup_run)
    at.session_state[ANNOTATOR_KEY] = "<b>reviewer</b> ![x](http://198.51.100.7:9/name.png)"
    at.run()
    assert not at.exception, at.exception
    shown = " ".join(str(t.value) for t in at.get("text"))
    escaped = " ".join(str(e.value) for kind in _MARKDOWN_ELEMENTS for e in at.get(kind))
    # the hostile text is on the page: verbatim in text elements, or escaped in captions
    assert any(frag in shown for frag in ("<b>", "![pixel]", "<img", "<a href", ":red[")) or "\\<b\\>" in escaped
    assert _rendered_markup(at) == []
