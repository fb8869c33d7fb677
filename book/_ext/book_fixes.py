"""Fixes for what a reader's browser shows of a Jupyter Book 1 site: two console errors, the chapters' machinery, wide tables.

1. sphinx-thebe and sphinx-togglebutton are registered twice, so their inline scripts are emitted twice and the
   second ``const THEBE_JS_URL`` throws "Identifier 'THEBE_JS_URL' has already been declared": drop repeated scripts.
2. On a first visit (empty localStorage) the theme's head script sets the mode to "", which pydata-sphinx-theme then
   rejects with "Got invalid theme mode: . Resetting to auto.": default an empty mode to "auto" before it runs.
3. Each executed chapter is read through ``wbcstudy.publish.book_view`` (in memory; the committed ``.ipynb`` is not
   changed): papermill's injected cell removed, the parameters cell shown as a folded table, set-up outputs and machine
   paths dropped, break points in pandas tables' long identifiers.
4. ``static/book_fixes.css``: tables fit the page column (a smaller font for pandas tables, wrapping headers).

A change to this file or to ``wbcstudy/publish.py`` changes the ``book_fixes_version`` config value, so Sphinx reads
every page again instead of reusing pages it read with the old code.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sphinx.application import Sphinx

STATIC = Path(__file__).resolve().parent / "static"

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


def _book_view(app: Sphinx, docname: str, source: list[str]) -> None:
    """An executed chapter as the book shows it (``wbcstudy.publish.book_view``), before myst-nb parses it."""
    if not str(app.env.doc2path(docname)).endswith(".ipynb"):
        return
    from wbcstudy.paths import project_root
    from wbcstudy.publish import book_view

    nb = json.loads(source[0])
    source[0] = json.dumps(book_view(nb, root=project_root()))


def _code_version() -> str:
    """A hash of the code that shapes the pages (this file and wbcstudy/publish.py)."""
    import wbcstudy.publish

    digest = hashlib.sha256(Path(__file__).read_bytes() + Path(wbcstudy.publish.__file__).read_bytes())
    digest.update(b"".join(p.read_bytes() for p in sorted(STATIC.iterdir())))
    return digest.hexdigest()[:16]


def _add_static(app: Sphinx, config) -> None:
    config.html_static_path = [*config.html_static_path, str(STATIC)]


def setup(app: Sphinx) -> dict:
    app.add_js_file(None, body=MODE_FIX, priority=1)
    app.connect("html-page-context", _dedupe_page_scripts, priority=1)  # first: a later handler may end the event
    app.add_config_value("book_fixes_version", _code_version(), "env")  # new code: every page is read again
    app.connect("config-inited", _add_static)
    app.connect("source-read", _book_view)
    app.add_css_file("book_fixes.css")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
