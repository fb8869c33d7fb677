"""Two fixes for console errors a reader's browser logs on every page of a Jupyter Book 1 site.

1. sphinx-thebe and sphinx-togglebutton are registered twice, so their inline scripts are emitted twice and the
   second ``const THEBE_JS_URL`` throws "Identifier 'THEBE_JS_URL' has already been declared": drop repeated scripts.
2. On a first visit (empty localStorage) the theme's head script sets the mode to "", which pydata-sphinx-theme then
   rejects with "Got invalid theme mode: . Resetting to auto.": default an empty mode to "auto" before it runs.
"""
from __future__ import annotations

from sphinx.application import Sphinx

MODE_FIX = 'if (!document.documentElement.dataset.mode) { document.documentElement.dataset.mode = "auto"; }'


def _dedupe(scripts: list) -> None:
    """Keep the first of each identical script (same file or inline body, same attributes), in place."""
    seen: set[tuple] = set()
    kept = []
    for script in scripts:
        filename = str(getattr(script, "filename", None) or "")  # an inline script is registered once as None, once as ""
        key = ("" if filename == "None" else filename, tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    scripts[:] = kept


def _dedupe_page_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Before any other handler sees the page: drop repeated scripts from the page and from the builder's lists."""
    for scripts in (context.get("script_files"), getattr(app.builder, "_js_files", None),
                    getattr(app.builder, "_orig_js_files", None)):
        if isinstance(scripts, list):
            _dedupe(scripts)


def setup(app: Sphinx) -> dict:
    app.add_js_file(None, body=MODE_FIX, priority=1)
    app.connect("html-page-context", _dedupe_page_scripts, priority=1)  # first: a later handler may end the event
    return {"parallel_read_safe": True, "parallel_write_safe": True}
