"""The pages of the web app. Each module is both a page script (``st.Page`` runs it as
``__main__``) and an importable module with a ``render()``."""
