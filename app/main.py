"""The web app's entry script: ``streamlit run app/main.py -- --store PATH`` (what
``prunestudio web`` runs). Builds the navigation, follows deep links, opens the store."""

from __future__ import annotations

import streamlit as st
from prunestudio.app import PAGE_SCRIPTS, nav
from prunestudio.app.data import reader
from prunestudio.store import StoreError

st.set_page_config(page_title="Prune Studio", page_icon=":material/content_cut:",
                   layout="wide")

PAGES = {
    # the default page is served at the root URL and reserves its own url_path without
    # serving it: a hidden alias makes /studies open it too (not a "Page not found" dialog)
    "studies": st.Page(PAGE_SCRIPTS["studies"], title="Studies", url_path="home",
                       icon=":material/table_rows:", default=True),
    "studies-alias": st.Page(PAGE_SCRIPTS["studies"], title="Studies", url_path="studies",
                             icon=":material/table_rows:", visibility="hidden"),
    "study": st.Page(PAGE_SCRIPTS["study"], title="Study", url_path="study",
                     icon=":material/insights:"),
    "compare": st.Page(PAGE_SCRIPTS["compare"], title="Compare", url_path="compare",
                       icon=":material/compare_arrows:"),
    "candidate": st.Page(PAGE_SCRIPTS["candidate"], title="Candidate", url_path="candidate",
                         icon=":material/science:"),
}
page = st.navigation(list(PAGES.values()))

# a deep link to the root URL (or the Studies page) opens the page its parameters name
if page in (PAGES["studies"], PAGES["studies-alias"]):
    for name in ("candidate", "compare", "study"):
        if nav.qp_text(name) is not None:
            st.switch_page(PAGE_SCRIPTS[name], query_params=dict(st.query_params))

path = nav.store_path()
st.sidebar.caption(f"Store `{path}` (read-only)")
try:
    reader(path)
except StoreError as exc:
    st.error(f"Cannot open the store: {exc}")
    st.stop()
page.run()
