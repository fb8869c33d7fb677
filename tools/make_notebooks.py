"""Write the chapter source notebooks (notebooks/*.ipynb, no outputs) from their cell lists.

Each chapter's cells live in ``tools/chapters/<chapter>.py`` as ``CELLS``. The notebooks are the
sources readers open; this script only keeps their JSON tidy. Run it after editing a chapter's
cells: ``python tools/make_notebooks.py [chapter ...]`` (all chapters when none is named).
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_notebook

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wbcstudy.run import CHAPTERS, DRAFTS  # noqa: E402


def write(name: str, cells: list) -> None:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{name}-{i:02d}"
    path = ROOT / "notebooks" / f"{name}.ipynb"
    nbformat.write(nb, path)
    print(path)


if __name__ == "__main__":
    for chapter in sys.argv[1:] or CHAPTERS + DRAFTS:
        write(chapter, importlib.import_module(f"tools.chapters.{chapter}").CELLS)
