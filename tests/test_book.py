"""The book: every chapter executed and listed, built with Jupyter Book 1 (warnings as errors), within its time budgets."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from wbcstudy import run
from wbcstudy.paths import project_root


def test_every_chapter_is_executed_into_the_book_and_the_toc():
    root = project_root()
    toc = (root / "_toc.yml").read_text()
    for chapter in run.CHAPTERS:
        assert (root / "book" / "chapters" / f"{chapter}.ipynb").is_file(), f"run `wbcstudy run {chapter}`"
        assert (root / "tests" / "regression" / f"{chapter}.ipynb").is_file(), "run `wbcstudy regression`"
        assert f"book/chapters/{chapter}" in toc
        assert (root / "book" / "results" / f"{chapter}.json").is_file()


def test_book_builds_without_warnings(tmp_path):
    root = project_root()
    proc = subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(root), "--path-output", str(tmp_path), "-W", "-n", "--keep-going"],
                          capture_output=True, text=True, cwd=root)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    html = tmp_path / "_build" / "html"
    for chapter in run.CHAPTERS:
        page = (html / "book" / "chapters" / f"{chapter}.html").read_text()
        assert "<img" in page, f"{chapter}: the rendered chapter has no figures"


def test_recorded_chapter_times_are_within_the_profile_budgets():
    """The wall-clock times `wbcstudy run` recorded for the book: smoke < 90 s, cpu < 15 min per chapter (CytoDiffusion 30)."""
    import json

    timings = json.loads((project_root() / "book" / "results" / "timings.json").read_text())
    budgets = {"smoke": 90.0, "cpu": 900.0}
    for chapter in run.CHAPTERS:
        for profile, budget in budgets.items():
            if chapter == "cytodiffusion" and profile == "cpu":
                budget = 1800.0  # the issue grants the diffusion classifier 30 minutes
            assert profile in timings[chapter], f"{chapter} has no recorded {profile} run"
            assert timings[chapter][profile] < budget, f"{chapter} took {timings[chapter][profile]} s at {profile}"


def test_cytodiffusion_results_carry_the_keys_its_issue_asks_for():
    """The published CytoDiffusion results hold every headline number, each beside the paper's where it gives one."""
    import json

    res = json.loads((project_root() / "book" / "results" / "cytodiffusion.json").read_text())
    assert res["profile"] == "cpu"
    wanted = {"indomain_accuracy", "indomain_balanced_accuracy", "baseline_indomain_balanced_accuracy", "anomaly_auc",
              "baseline_anomaly_auc", "domain_shift_balanced_accuracy", "baseline_domain_shift_balanced_accuracy",
              "pruning_unet_call_reduction", "seconds_per_image", "c2st_accuracy", "class_agreement"}
    wanted |= {f"{who}lowdata_{n}_balanced_accuracy" for who in ("", "baseline_") for n in (10, 20, 50, 150)}
    assert wanted <= set(res["metrics"]), sorted(wanted - set(res["metrics"]))
    assert all(res["metrics"][k] is not None for k in wanted)
    assert {"indomain_balanced_accuracy", "anomaly_auc", "domain_shift_balanced_accuracy", "lowdata_150_balanced_accuracy",
            "c2st_accuracy", "class_agreement"} <= set(res["paper"])
    assert {"indomain_balanced_accuracy", "anomaly_auc", "domain_shift_balanced_accuracy", "lowdata_150_balanced_accuracy"} <= set(res["ci"])
