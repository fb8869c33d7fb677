"""Every chapter's `paper` profile runs: papermill executes each chapter with its paper values, made tiny by its smoke
values and ``tests/paper_profile_tiny.yml`` (cells, epochs, image sizes), so that the code paths only the paper scale
takes (a ResNet-50 backbone, ten folds, repeats, a GPU's batch sizes) are executed on every CI run.

The summary is the one chapter left out: at `paper` it trains each method with that chapter's own paper parameters,
which no override of the summary reaches; the chapters' own paper paths are what this test runs. `make unit` skips
this file (it runs in `make test`)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from wbcstudy.paths import params_dir
from wbcstudy.run import CHAPTERS, run_chapter

TINY = yaml.safe_load((Path(__file__).parent / "paper_profile_tiny.yml").read_text())
PAPER_CHAPTERS = [c for c in CHAPTERS if c != "summary"]


def test_every_chapter_but_the_summary_has_a_tiny_paper_override():
    assert sorted(TINY) == sorted(PAPER_CHAPTERS)


def tiny_paper_overrides(chapter: str, tmp_path: Path) -> dict:
    """The chapter's smoke values, then its tiny sizes; the app's checkpoint (the trust chapter) goes to
    ``tmp_path``."""
    smoke = yaml.safe_load((params_dir() / chapter / "smoke.yml").read_text()) or {}
    paper = yaml.safe_load((params_dir() / chapter / "paper.yml").read_text()) or {}
    overrides = {**smoke, **TINY[chapter]}
    if "app_checkpoint" in paper:
        overrides["app_checkpoint"] = str(tmp_path / "app_model.pt")  # never a tiny model where the app looks
    return overrides


@pytest.mark.parametrize("chapter", PAPER_CHAPTERS)
def test_paper_profile_runs_at_a_tiny_size(chapter, tmp_path):
    out = run_chapter(chapter, "paper", output=tmp_path / f"{chapter}.ipynb",
                      overrides=tiny_paper_overrides(chapter, tmp_path))
    assert out.is_file()
