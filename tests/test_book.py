"""The book builds with Jupyter Book 1 (warnings as errors). The committed artefacts — every chapter executed and listed,
its results, timings within budget, intervals, claims — are checked by `wbcstudy check` (wbcstudy/check.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from wbcstudy import run
from wbcstudy.paths import project_root


def test_book_builds_without_warnings(tmp_path):
    root = project_root()
    command = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(root), "--path-output", str(tmp_path),
               "-W", "-n", "--keep-going"]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=root)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    html = tmp_path / "_build" / "html"
    for chapter in run.CHAPTERS:
        page = (html / "book" / "chapters" / f"{chapter}.html").read_text()
        assert "<img" in page, f"{chapter}: the rendered chapter has no figures"

