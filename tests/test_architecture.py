"""The package's shape, as ARCHITECTURE.md states it: one training loop, the environment touched only by the
entries, and no package code that reads a chapter's notebook."""
from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "wbcstudy"
ENTRIES = {"cli.py", "run.py", "notebook.py"}


def _sources():
    return {p.relative_to(PACKAGE).as_posix(): p.read_text() for p in PACKAGE.rglob("*.py")}


def test_backward_is_called_by_the_engine_only():
    calls = {name for name, text in _sources().items() if ".backward(" in text}
    assert calls <= {"train.py", "explain/influence.py"}, calls  # influence functions take their own gradients


def test_only_the_entries_write_the_environment():
    write = re.compile(r"os\.environ(\[[^\]]+\]\s*=(?!=)|\.(pop|update|setdefault|clear)\()|os\.(putenv|unsetenv)\(")
    writers = {name for name, text in _sources().items() if write.search(text)}
    assert writers <= ENTRIES, writers - ENTRIES


def test_no_package_code_outside_the_runner_reads_a_notebook():
    readers = {name for name, text in _sources().items()
               if re.search(r"\b(parameters_cell|chapter_recipe|pick_parameters)\b", text)}
    assert readers <= {"run.py", "check.py"}, readers
