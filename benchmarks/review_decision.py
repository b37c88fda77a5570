"""Server time per review decision on the digits sample: the queue fragment's rerun against a whole-page rerun.

Usage: ``python benchmarks/review_decision.py [--decisions 20] [--page fn|ln]``

Both sides run in one process on the same AppTest session of the False negatives (or Label noise) page: a
click on a decision button (which records one decision in the review database and moves the queue on) is
followed either by a rerun of the whole page (what every decision cost before the queue became an
``st.fragment``, and what AppTest does by default) or by a rerun of the queue fragment alone (what the
browser does now: the click comes from inside the fragment). The sides alternate decision by decision, so
the machine's changing load falls on both alike. Printed: median and 90th percentile in milliseconds, and
the ratio whole page / fragment (higher is better). The decisions land in a temporary workspace.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PAGES = {
    "fn": (REPO / "pages" / "4_False_Negatives.py", "fn_btn_negative"),
    "ln": (REPO / "pages" / "5_Label_Noise.py", "ln_pair_ok"),
}


def _fragment_runner(fragment_ids: list[str]):
    """A ``LocalScriptRunner.run`` that asks for a fragment-scoped rerun of ``fragment_ids``."""
    from streamlit.runtime.scriptrunner_utils.script_requests import RerunData, ScriptRequestType
    from streamlit.testing.v1.element_tree import parse_tree_from_messages
    from streamlit.testing.v1.local_script_runner import LocalScriptRunner, require_widgets_deltas

    def run(self: LocalScriptRunner, widget_state=None, query_params=None, timeout=3, page_hash="",
            context_info=None):  # fmt: skip
        from urllib import parse

        rerun_data = RerunData(
            widget_states=widget_state,
            query_string=parse.urlencode(query_params or {}, doseq=True),
            page_script_hash=page_hash,
            context_info=context_info,
            fragment_id_queue=list(fragment_ids),
            is_fragment_scoped_rerun=True,
        )
        # AppTest builds a fresh runner per run, born with a pending full-app rerun that would swallow a
        # fragment-scoped request: drop it, as the browser's session (a long-lived runner) never has one
        self._requests._state = ScriptRequestType.CONTINUE  # noqa: SLF001
        self.request_rerun(rerun_data)
        try:
            if not self._script_thread:
                self.start()
            require_widgets_deltas(self, timeout)
        finally:
            self.join()
        return parse_tree_from_messages(self.forward_msgs())

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=20, help="decisions per side")
    parser.add_argument("--page", choices=sorted(PAGES), default="fn")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="negscope_bench_")
    os.environ["NEGSCOPE_HOME"] = home

    from streamlit.runtime.scriptrunner.script_cache import ScriptCache
    from streamlit.testing.v1 import AppTest

    from analysis.embedding.engine import embed_to_run
    from analysis.review.store import ReviewStore
    from analysis.runs.workspace import SAMPLE_CHECKPOINT, SAMPLE_DATA, review_db_path
    from ui.state import ANNOTATOR_KEY, RUN_KEY

    # one script cache for the session, as the server keeps (AppTest builds a new one, recompiling the page, per run)
    shared_cache = ScriptCache()
    mock.patch("streamlit.testing.v1.app_test.ScriptCache", lambda: shared_cache).start()
    run_path = embed_to_run(SAMPLE_DATA, SAMPLE_CHECKPOINT, device="cpu")
    page, button = PAGES[args.page]
    at = AppTest.from_file(str(page), default_timeout=600)
    at.session_state[RUN_KEY] = str(run_path)
    at.session_state[ANNOTATOR_KEY] = "bench"
    started = time.perf_counter()
    at.run()
    if at.exception:
        raise SystemExit(f"the page failed: {at.exception}")
    print(f"first load of the page (detectors, cached afterwards): {time.perf_counter() - started:.1f} s")
    at.run()  # warm every cache
    fragments = list(at._fragment_storage._fragments)  # noqa: SLF001 - the page's fragment(s), registered by the run
    if not fragments:
        raise SystemExit("the page registered no fragment")
    store = ReviewStore(review_db_path())
    whole: list[float] = []
    part: list[float] = []
    fragment_run = _fragment_runner(fragments)
    for i in range(2 * args.decisions):
        before = store.count()
        started = time.perf_counter()
        if i % 2 == 0:
            at.button(key=button).click().run()
            whole.append(time.perf_counter() - started)
        else:
            with mock.patch("streamlit.testing.v1.local_script_runner.LocalScriptRunner.run", fragment_run):
                at.button(key=button).click().run()
            part.append(time.perf_counter() - started)
        if at.exception:
            raise SystemExit(f"the page failed: {at.exception}")
        if store.count() != before + 1:
            raise SystemExit(f"decision {i} was not recorded ({store.count() - before} rows written)")

    def show(name: str, times: list[float]) -> float:
        ms = sorted(1000 * t for t in times)
        med = statistics.median(ms)
        p90 = ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]
        print(f"{name:<34} median {med:8.1f} ms   p90 {p90:8.1f} ms   ({len(ms)} decisions)")
        return med

    print(f"page {page.name}, button {button}, sample run {Path(run_path).name}")
    base = show("whole-page rerun per decision", whole)
    frag = show("queue fragment rerun per decision", part)
    print(f"ratio whole page / fragment: {base / frag:.2f}")


if __name__ == "__main__":
    main()
