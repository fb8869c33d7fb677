"""What a published chapter shows a reader: papermill's machinery folded away, no machine path, no echoed set-up values.

Two steps, both on a notebook as a JSON dict (``nbformat`` nodes are dicts too) and neither touching a cell's source
or a number:

- :func:`tidy_notebook`, applied by ``wbcstudy run --publish`` to the executed copy it publishes: tags the cells the
  book hides (``remove-cell`` on papermill's injected parameters and on the parameters cell, ``remove-output`` on the
  set-up cell that says where the data is read from) and rewrites absolute paths of the machine the chapter ran on
  into project-relative ones (or drops them);
- :func:`book_view`, applied to every chapter when the book is built (``book/_ext/book_fixes.py``, in memory: the
  committed copy is not changed): :func:`tidy_notebook`, then the parameters cell shown as a folded table of its
  values and comments instead of raw code, the bare ``'bf16'`` echo of ``notebook.configure(...)`` dropped, a printed
  ``build/runs/<profile>/results`` shown as ``book/results`` (where publishing put the results file), and
  ``<wbr>`` break points in the long identifiers of pandas tables, so that long identifiers wrap inside the page.

``LOCAL_PATH`` is what the browser check of the built book (``tests/test_browser.py``) refuses to find in a page.
"""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

#: Text that gives away the machine a chapter ran on: an absolute path under a home, temporary or work folder, or an
#: IPython kernel's cell file (``/tmp/ipykernel_123/456.py``). (Colab's ``/content`` is no one's machine: the book
#: names it on purpose.)
LOCAL_PATH = re.compile(r"(?<![\w.~-])/(?:tmp|work|root|home|Users|private/var|var/folders)/[^\s'\"<>()\[\]{},;]*"
                        r"|ipykernel_\d+")
#: Top-level folders of the project: a machine path that reaches one of them is shown from there on.
PROJECT_FOLDERS: tuple[str, ...] = ("build", "book", "data", "notebooks", "tests", "wbcstudy", "requirements")
_UNDER_PROJECT = re.compile(r"(?<![\w.~-])/(?:tmp|work|root|home|Users|private/var|var/folders)/"
                            r"[^\s'\"<>()\[\]{},;]*?/(?=(?:" + "|".join(PROJECT_FOLDERS) + r")/)")
#: Tags the book hides cells with (myst-nb honours them).
REMOVE_CELL, REMOVE_OUTPUT, HIDE_INPUT = "remove-cell", "remove-output", "hide-input"
#: Parameters whose value in papermill's injected cell is the run's scratch place, not what the published chapter
#: uses: ``wbcstudy run`` writes results to ``build/runs/<profile>/results`` and ``--publish`` copies them to the
#: parameters cell's ``book/results``.
WORK_ONLY_PARAMETERS: frozenset[str] = frozenset({"results_dir"})
#: Where an unpublished run writes its results (``run.work_results_dir``); ``--publish`` copies them to
#: ``book/results``.
_WORK_RESULTS = re.compile(r"\bbuild/runs/[\w-]+/results\b")
_SETUP_CALL = re.compile(r"^\s*notebook\.setup\(\)\s*$", re.MULTILINE)
_CONFIGURE_LAST = re.compile(r"(?:^|\n)notebook\.configure\([^\n]*\)\s*$")
#: MIME types whose text a reader sees (images and widget state are left alone: base64 may contain "/tmp/" by chance).
TEXT_MIME: tuple[str, ...] = ("text/plain", "text/html", "text/markdown", "text/latex")


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def _tags(cell: dict) -> list[str]:
    return list(cell.get("metadata", {}).get("tags") or [])


def _add_tag(cell: dict, tag: str) -> None:
    tags = _tags(cell)
    if tag not in tags:
        cell.setdefault("metadata", {})["tags"] = tags + [tag]


def scrub_paths(text: str, root: str | Path | None = None) -> str:
    """``text`` without the machine's absolute paths: ``<root>/`` and any ``/tmp/…/`` or ``/home/…/`` prefix that
    reaches a project folder (``/tmp/wt/build/models/x.pt`` → ``build/models/x.pt``) are dropped; any other local path
    is cut to its file name (``/tmp/ipykernel_1/2.py`` → ``2.py``)."""
    if root is not None:
        text = text.replace(str(Path(root)).rstrip("/") + "/", "")
    text = _UNDER_PROJECT.sub("", text)
    return LOCAL_PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1] if "/" in m.group(0) else "ipykernel",
                          text)


def _scrubbed(value, root: str | Path | None):
    """A text field (a string, or a notebook's list of lines) with machine paths scrubbed, in the same form."""
    text = _text(value)
    clean = scrub_paths(text, root)
    if clean == text:
        return value
    return clean.splitlines(keepends=True) if isinstance(value, list) else clean


def _scrub_output(output: dict, root: str | Path | None) -> None:
    if "text" in output:
        output["text"] = _scrubbed(output["text"], root)
    data = output.get("data") or {}
    for mime in TEXT_MIME:
        if mime in data:
            data[mime] = _scrubbed(data[mime], root)
    if "traceback" in output:
        output["traceback"] = [scrub_paths(line, root) for line in output["traceback"]]


def tidy_notebook(nb: dict, root: str | Path | None = None) -> dict:
    """Tag the machinery the book hides and scrub machine paths from every output, in place; returns ``nb``."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        tags = _tags(cell)
        if "injected-parameters" in tags or "parameters" in tags:
            _add_tag(cell, REMOVE_CELL)  # the book shows the parameters as a table (book_view)
        elif _SETUP_CALL.search(_text(cell.get("source"))):
            _add_tag(cell, REMOVE_OUTPUT)  # "data root: WBCSTUDY_DATA": where this machine keeps the data
        for output in cell.get("outputs", []):
            _scrub_output(output, root)
    return nb


def _assignments(source: str) -> list[tuple[str, str, str]]:
    """(name, value as written, the line's comment) of each top-level assignment of a parameters cell."""
    comments: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):
        pass
    rows = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            names = [node.target.id]
        elif isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        else:
            continue
        value = ast.get_source_segment(source, node.value) or ""
        comment = " ".join(comments[i] for i in range(node.lineno, (node.end_lineno or node.lineno) + 1)
                           if i in comments)
        rows += [(name, value, comment) for name in names]
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def parameters_markdown(parameters_source: str, injected_source: str = "") -> str:
    """A folded table of a chapter's parameters: name, the value the run used (papermill's injected value where it
    set one, but for :data:`WORK_ONLY_PARAMETERS`) and the parameters cell's comment."""
    injected = {name: value for name, value, _ in _assignments(injected_source) if name not in WORK_ONLY_PARAMETERS}
    rows = _assignments(parameters_source)
    profile = injected.get("profile") or next((v for n, v, _ in rows if n == "profile"), "")
    lines = [f":::{{admonition}} Parameters of this run (profile `{profile.strip(chr(34) + chr(39))}`)",
             ":class: dropdown", "",
             "The chapter's parameters cell, as a table: `wbcstudy run <chapter> --profile <name>` sets them from "
             "`notebooks/params/<chapter>/<name>.yml`.", "",
             "| parameter | value | what it sets |", "|---|---|---|"]
    for name, value, comment in rows:
        lines.append(f"| `{name}` | `{_cell(injected.get(name, value))}` | {_cell(comment)} |")
    return "\n".join(lines + [":::", ""])


_TAG_OR_TEXT = re.compile(r"(<style.*?</style>|<[^>]*>)", re.DOTALL | re.IGNORECASE)
#: An underscore, or a dot or slash between letters (never inside a number).
_BREAK_AFTER = re.compile(r"_|(?<=[A-Za-z])[./](?=[A-Za-z])")


def break_identifiers(html: str) -> str:
    """``<wbr>`` after each underscore, and each dot or slash between letters, of an HTML table's text (not inside tags
    or style blocks), so that a long identifier such as ``train_seconds_this_segment`` or ``wbcstudy.losses`` may wrap
    there."""
    parts = _TAG_OR_TEXT.split(html)
    return "".join(p if i % 2 else _BREAK_AFTER.sub(lambda m: m.group(0) + "<wbr>", p) for i, p in enumerate(parts))


#: Code that prints a judgement (a claims table, the audit, its counts): the book shows the rendered judgement of
#: ``wbcstudy.judgement`` in its place, so that a new verdict rule or margin needs no re-run.
_JUDGEMENT_CODE = re.compile(r"claims_table\(|scoreboard\.(audit|verdict_counts|claim_totals)\(|display\(audit_table")


def _chapter_of(nb: dict) -> str | None:
    """The chapter a notebook was run from (papermill's input path ``notebooks/<chapter>.md``), or None."""
    source = str(nb.get("metadata", {}).get("papermill", {}).get("input_path") or "")
    match = re.fullmatch(r"(?:.*/)?notebooks/(\w+)\.md", source)
    return match.group(1) if match else None


def show_rendered_judgement(nb: dict, root: str | Path | None = None) -> dict:
    """Replace what the run printed of its verdicts with ``book/claims_tables/<chapter>.md``: the displayed outputs of
    the cells that print a claims table or the audit are dropped, and the rendered table follows the last of them.
    A notebook without such cells, or whose chapter has no rendered table, is left as it is. In place; returns
    ``nb``."""
    from wbcstudy.judgement import TABLES_DIR
    from wbcstudy.paths import project_root

    chapter = _chapter_of(nb)
    path = Path(root or project_root()) / TABLES_DIR / f"{chapter}.md"
    cells = nb.get("cells", [])
    judged = [i for i, c in enumerate(cells)
              if c.get("cell_type") == "code" and _JUDGEMENT_CODE.search(_text(c.get("source")))]
    if chapter is None or not judged or not path.is_file():
        return nb
    for i in judged:
        cells[i]["outputs"] = [o for o in cells[i].get("outputs", []) if o.get("output_type") == "stream"]
    table = {"cell_type": "markdown", "metadata": {}, "source": path.read_text().split("\n", 2)[2]}
    if "id" in cells[judged[-1]]:
        table["id"] = f"{cells[judged[-1]]['id']}-verdicts"
    cells.insert(judged[-1] + 1, table)
    return nb


def book_view(nb: dict, root: str | Path | None = None) -> dict:
    """The notebook as the book renders it (see the module's docstring), in place; returns ``nb``."""
    tidy_notebook(nb, root)
    show_rendered_judgement(nb, root)
    cells = nb.get("cells", [])
    injected = next((_text(c.get("source")) for c in cells if "injected-parameters" in _tags(c)), "")
    out = []
    for cell in cells:
        tags = _tags(cell)
        if cell.get("cell_type") == "code" and "parameters" in tags and "injected-parameters" not in tags:
            try:
                table = parameters_markdown(_text(cell.get("source")), injected)
            except SyntaxError:
                table = None  # leave the raw cell: ``wbcstudy run`` will have refused it anyway
            if table is not None:
                md = {"cell_type": "markdown", "metadata": {}, "source": table}
                if "id" in cell:
                    md["id"] = f"{cell['id']}-table"
                out.append(md)
            else:
                cell["metadata"]["tags"] = [t for t in tags if t != REMOVE_CELL] + [HIDE_INPUT]
        if cell.get("cell_type") == "code" and _CONFIGURE_LAST.search(_text(cell.get("source")).rstrip()):
            cell["outputs"] = [o for o in cell.get("outputs", []) if o.get("output_type") != "execute_result"]
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = _WORK_RESULTS.sub("book/results", _text(output["text"]))
            data = output.get("data") or {}
            if "text/html" in data and "<table" in _text(data["text/html"]):
                data["text/html"] = break_identifiers(_text(data["text/html"]))
        out.append(cell)
    nb["cells"] = out
    return nb
