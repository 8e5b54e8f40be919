"""Prune Studio's web app (Streamlit): compare and explain every study of a store in a browser.

``prunestudio web [STORE]`` runs :data:`MAIN_SCRIPT` with Streamlit; the store is opened
read-only. Pages (``st.navigation``): Studies, Study, Compare, Candidate — each a script in
``ui/`` that is also an importable module. Deep links are query parameters: ``?study=ID``,
``?candidate=ID``, ``?compare=1,2,3`` (on any page, the root URL included), ``?live=0``
(no live refresh) or ``?live=SECONDS``.

Layering: ``data`` (the only module that talks to the store: token-keyed caches, the
incremental study frame) → ``charts`` (Plotly figures from DataFrames, no Streamlit) →
``views`` (study sections; a study kind registers its own, see :mod:`prunestudio.app.views`)
→ ``ui`` (the pages). Nothing here imports torch or the engine (a test checks
``sys.modules``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["APP_DIR", "MAIN_SCRIPT", "PAGE_SCRIPTS"]

APP_DIR = Path(__file__).resolve().parent
MAIN_SCRIPT = APP_DIR / "main.py"
# page scripts, relative to MAIN_SCRIPT (what st.Page, st.page_link and AppTest.switch_page take)
PAGE_SCRIPTS = {
    "studies": "ui/studies.py",
    "study": "ui/study.py",
    "compare": "ui/compare.py",
    "candidate": "ui/candidate.py",
}
