"""``wbcstudy check`` on small artefact trees built here: each kind of problem is reported, a good tree is not."""
from __future__ import annotations

import json
from pathlib import Path

from wbcstudy import check

CHAPTERS = ("alpha", "beta")


def _results(root: Path, chapter: str, metrics: dict, ci: dict, **extra) -> Path:
    path = root / "book" / "results" / f"{chapter}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"chapter": chapter, "profile": "cpu", "seconds": 1.0, "commit": "x", "metrics": metrics, "ci": ci,
              "paper": {}, "plateau": {}}
    record.update(extra)
    path.write_text(json.dumps(record))
    return path


_SOURCE = """---
jupytext:
  text_representation:
    format_name: myst
---

# A chapter

```{code-cell}
:tags: [parameters]

epochs = 2
```

```{code-cell}
print(epochs)
```
"""


def _executed(code: str = "print(epochs)") -> dict:
    """The chapter above as papermill leaves it: an injected-parameters cell after the parameters, outputs."""
    cells = [{"cell_type": "markdown", "metadata": {}, "source": "# A chapter"},
             {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "epochs = 2", "outputs": []},
             {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "source": "epochs = 1",
              "outputs": []},
             {"cell_type": "code", "metadata": {}, "source": code.splitlines(keepends=True), "outputs": []}]
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _good_tree(root: Path) -> Path:
    """A complete, consistent artefact tree for chapters alpha and beta."""
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n"
                                   "  - file: book/chapters/alpha\n  - file: book/chapters/beta\n")
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    for chapter in CHAPTERS:
        (root / "notebooks" / f"{chapter}.md").write_text(_SOURCE)
        for folder in ("book/chapters", "tests/regression"):
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / f"{chapter}.ipynb").write_text(json.dumps(_executed()))
        _results(root, chapter, {f"{chapter}_accuracy": 0.9, "seconds_per_image": 3.0},
                 {f"{chapter}_accuracy": [0.85, 0.95]}, paper={f"{chapter}_accuracy": 0.97}, plateau={"cnn": True})
    (root / "book" / "results" / "timings.json").write_text(json.dumps(
        {c: {"smoke": 50.0, "cpu": 1000.0} for c in CHAPTERS}))
    (root / "book" / "claims").mkdir(parents=True)
    (root / "book" / "claims" / "alpha.yml").write_text(
        "chapter: alpha\nsource: A 2020\ncite: a2020\nclaims:\n"
        "  - id: alpha_acc\n    claim: reaches 97%\n    where: Table 1\n    paper_value: 0.97\n"
        "    key: alpha_accuracy\n    direction: higher\n    margin: 0.02\n    models: [cnn]\n")
    from wbcstudy.judgement import write_judgement

    write_judgement(root)  # the claims tables and the introduction's scoreboard, as `wbcstudy book` writes them
    return root


def test_a_good_tree_has_no_problems(tmp_path):
    root = _good_tree(tmp_path)
    assert check.problems(root, CHAPTERS) == []


def test_results_file_interval_checks(tmp_path):
    path = _results(tmp_path, "demo",
                    {"alexnet_balanced_accuracy": 0.290, "c2st_accuracy": 1.0, "auc": 0.8,
                     "wnet_minus_resnet50_accuracy": -0.198, "frechet": 24.5, "ece": 0.05, "undefined_auroc": None},
                    {"alexnet_balanced_accuracy": [-0.46, 1.04],   # leaves [0, 1]
                     "c2st_accuracy": [1.0, 1.0],                   # fine
                     "auc": [0.85, 0.95],                           # does not contain 0.8
                     "wnet_minus_resnet50_accuracy": [-0.25, -0.15],  # fine: differences live in [-1, 1]
                     "frechet": [20.0, 30.0],                       # no range known: only containment checked
                     "ece": [0.06, 0.04],                           # low above high (and so not containing 0.05)
                     "undefined_auroc": [None, None],               # no value
                     "never_measured_f1": [0.1, 0.2]})              # no metric of that name
    found = check.check_results_file(path)
    assert any("'alexnet_balanced_accuracy' [-0.460, 1.040] leaves the metric's range [0, 1]" in p for p in found)
    assert any("'auc' [0.850, 0.950] does not contain its value 0.800" in p for p in found)
    assert any("'ece'" in p and "low end above its high end" in p for p in found)
    assert any("'undefined_auroc' has no value" in p for p in found)
    assert any("'never_measured_f1' has no metric" in p for p in found)
    assert not any(key in p for p in found for key in ("c2st_accuracy", "wnet_minus_resnet50", "frechet"))
    assert all(p.startswith("demo.json: ") and "\n" not in p for p in found)
    # files without intervals (timings, side tables) are not results files
    other = tmp_path / "book" / "results" / "timings.json"
    other.write_text(json.dumps({"alpha": {"cpu": 1.0}}))
    assert check.check_results_file(other) == []


def test_missing_artefacts_and_toc_entries_are_reported(tmp_path):
    root = _good_tree(tmp_path)
    (root / "book" / "chapters" / "beta.ipynb").unlink()
    (root / "tests" / "regression" / "alpha.ipynb").unlink()
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/chapters/alpha\n")
    _results(root, "alpha", {"alpha_accuracy": 0.9}, {}, profile="smoke")
    found = check.check_chapter_files(root, CHAPTERS)
    assert found == ["alpha: tests/regression/alpha.ipynb is missing (run `wbcstudy regression`)",
                     "alpha: book/results/alpha.json comes from profile 'smoke', not 'cpu'",
                     "beta: book/chapters/beta.ipynb is missing (run `wbcstudy run beta --publish`)",
                     "beta: _toc.yml has no entry book/chapters/beta"]


def test_timings_over_budget_are_reported(tmp_path):
    root = _good_tree(tmp_path)
    timings = {"alpha": {"smoke": 95.0, "cpu": {"seconds": 700.0, "cpu": "AMD EPYC", "native_bf16": True,
                                                "precision_forced": "fp32"}},
               "beta": {"cpu": 5500.0}}  # entries are bare seconds (older) or records with the CPU
    (root / "book" / "results" / "timings.json").write_text(json.dumps(timings))
    found = check.check_timings(root, CHAPTERS)
    assert found == ["alpha: the smoke run took 95.0 s, over its budget of 90 s",
                     "beta: no recorded smoke run time in book/results/timings.json",
                     "beta: the cpu run took 5500.0 s, over its budget of 5400 s"]
    # a bf16-autocast run timed on a bf16 CPU counts 2.5 times: the budgets are for CPUs without native bf16
    timings["alpha"] = {"smoke": 10.0, "cpu": {"seconds": 2200.0, "cpu": "AMD EPYC", "native_bf16": True,
                                               "precision_forced": "auto"}}
    timings["beta"] = {"smoke": 10.0, "cpu": {"seconds": 2200.0, "cpu": "Intel Xeon", "native_bf16": False}}
    (root / "book" / "results" / "timings.json").write_text(json.dumps(timings))
    assert check.check_timings(root, CHAPTERS) == [
        "alpha: the cpu run took 2200.0 s on a bf16 CPU, ≈ 5500 s without native bf16, over its budget of 5400 s"]
    # CytoDiffusion has 100 minutes at cpu; the whole book eight hours
    timings = {"cytodiffusion": {"smoke": 10.0, "cpu": 5900.0}}
    (root / "book" / "results" / "timings.json").write_text(json.dumps(timings))
    assert check.check_timings(root, ("cytodiffusion",)) == []
    timings = {f"c{i}": {"smoke": 10.0, "cpu": 5000.0} for i in range(6)}
    (root / "book" / "results" / "timings.json").write_text(json.dumps(timings))
    assert check.check_timings(root, tuple(timings)) == [
        "the book's cpu runs take ≈ 30000.0 s in all without native bf16, over the budget of 28800 s"]


def test_claims_are_checked_against_the_results(tmp_path):
    root = _good_tree(tmp_path)
    claims = root / "book" / "claims" / "alpha.yml"
    claims.write_text(claims.read_text().replace("key: alpha_accuracy", "key: alpha_balanced_accuracy")
                      .replace("models: [cnn]", "models: [cnn, vit]"))
    (root / "book" / "claims" / "beta.yml").write_text("chapter: beta\nclaims:\n  - id: b\n    direction: up\n")
    (root / "book" / "claims" / "gamma.yml").write_text("chapter: gamma\nclaims: []\n")
    found = check.check_claims(root, CHAPTERS)
    assert found[0] == ("book/claims/alpha.yml: claim 'alpha_acc': key 'alpha_balanced_accuracy' is not in "
                        "book/results/alpha.json metrics")
    assert found[1] == "book/claims/beta.yml: claim 'b': missing field 'claim'"
    assert found[2] == "book/claims/gamma.yml: there is no chapter 'gamma'"
    assert found[3] == "book/claims/gamma.yml: claims must be a non-empty list"
    assert len(found) == 4
    # with the key fixed: the unrecorded plateau of vit and a paper number that differs are reported
    claims.write_text(claims.read_text().replace("key: alpha_balanced_accuracy", "key: alpha_accuracy")
                      .replace("paper_value: 0.97", "paper_value: 0.96"))
    found = check.check_claims(root, CHAPTERS)
    assert ("book/claims/alpha.yml: claim 'alpha_acc': model 'vit' has no plateau record in book/results/alpha.json"
            in found)
    assert ("book/claims/alpha.yml: claim 'alpha_acc': paper value 0.96 differs from 0.97 in book/results/alpha.json"
            in found)


def test_cytodiffusion_keys(tmp_path):
    assert check.check_cytodiffusion_keys(tmp_path) == []  # absent: reported by the chapter-files check
    metrics = {k: 0.5 for k in check.CYTODIFFUSION_METRICS}
    metrics["anomaly_auc"] = None
    del metrics["c2st_accuracy"]
    _results(tmp_path, "cytodiffusion", metrics, {k: [0.4, 0.6] for k in check.CYTODIFFUSION_CI},
             paper={k: 0.9 for k in check.CYTODIFFUSION_PAPER})
    assert check.check_cytodiffusion_keys(tmp_path) == ["cytodiffusion.json: metrics lacks c2st_accuracy",
                                                        "cytodiffusion.json: metrics are null: anomaly_auc"]


def test_main_prints_one_line_per_problem_and_exits_1(tmp_path, capsys, monkeypatch):
    root = _good_tree(tmp_path)
    monkeypatch.setattr("wbcstudy.run.CHAPTERS", CHAPTERS)
    assert check.main(["--root", str(root)]) == 0
    assert "pass" in capsys.readouterr().out
    _results(root, "beta", {"beta_accuracy": 0.9}, {"beta_accuracy": [0.95, 1.2]})
    assert check.main(["--root", str(root)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == ["beta.json: ci 'beta_accuracy' [0.950, 1.200] leaves the metric's range [0, 1]",
                   "beta.json: ci 'beta_accuracy' [0.950, 1.200] does not contain its value 0.900"]


def _one_claim_chapter(root, value, interval):
    """A W-Net claims file with one 97%-accuracy claim, and its published result ``value`` with ``interval``."""
    import yaml

    (root / "book" / "claims").mkdir(parents=True, exist_ok=True)
    (root / "book" / "results").mkdir(parents=True, exist_ok=True)
    claims = [{"id": "acc", "claim": "97%", "where": "T3", "paper_value": 0.97, "key": "acc", "direction": "higher",
               "margin": 0.02}]
    (root / "book" / "claims" / "wnet.yml").write_text(yaml.safe_dump({"chapter": "wnet", "claims": claims}))
    record = {"chapter": "wnet", "metrics": {"acc": value}, "ci": {"acc": interval}, "paper": {}, "plateau": {}}
    (root / "book" / "results" / "wnet.json").write_text(json.dumps(record))


def test_stale_judgement_is_reported_and_rerendered_without_retraining(tmp_path):
    from wbcstudy.judgement import write_judgement

    _one_claim_chapter(tmp_path, 0.5, [0.4, 0.6])
    found = check.check_judgement(tmp_path)
    # nothing rendered yet: the W-Net table and the scoreboard are missing, the results lack the paper's number
    assert sorted(line.split(" ")[0] for line in found) == ["book/claims_tables/wnet.md", "book/results/wnet.json",
                                                            "book/scoreboard.md"]
    summary = tmp_path / "book" / "results" / "summary.json"
    summary.write_text(json.dumps({"chapter": "summary", "metrics": {"claims_total": 1, "claims_reproduced": 1}}))
    write_judgement(tmp_path)
    assert check.check_judgement(tmp_path) == []
    metrics = json.loads(summary.read_text())["metrics"]
    assert (metrics["claims_total"], metrics["claims_not_reproduced"], metrics["claims_reproduced"]) == (1, 1, 0)
    assert (metrics["paper_claims_total"], metrics["paper_claims_not_reproduced"]) == (1, 1)
    table = (tmp_path / "book" / "claims_tables" / "wnet.md").read_text()
    assert "| `acc`: 97% (T3) | 0.970 | 0.500 [0.400, 0.600] | **not reproduced** |" in table
    # the W-Net chapter re-published: its claim is now reproduced; every rendered file is stale until re-rendered
    _one_claim_chapter(tmp_path, 0.975, [0.965, 0.985])
    found = check.check_judgement(tmp_path)
    assert sorted(line.split(" ")[0] for line in found) == [
        "book/claims_tables/summary.md", "book/claims_tables/wnet.md", "book/results/summary.json",
        "book/results/wnet.json", "book/scoreboard.md"]
    write_judgement(tmp_path)
    assert check.check_judgement(tmp_path) == []
    assert json.loads(summary.read_text())["metrics"]["claims_reproduced"] == 1


def test_illegible_figures_are_reported(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "wbcstudy").mkdir()
    (tmp_path / "notebooks" / "alpha.md").write_text(
        'fig, ax = plt.subplots(figsize=(14, 3))\nax.legend(fontsize=7); ax.tick_params(labelsize=8)\n'
        'fig, ax = plt.subplots(figsize=(11, 3))\n')
    (tmp_path / "wbcstudy" / "m.py").write_text("ax.set_title('x', fontsize=6.5)\n")
    assert check.check_figures(tmp_path, pending={"wbcstudy/m.py": "waits for a re-run"}) == [
        "notebooks/alpha.md:1: a figure 14 inches wide is shrunk in the book's column: at most 11",
        "notebooks/alpha.md:2: font size 7 is below the book's smallest, 8"]
    assert check.check_figures(tmp_path, pending={}) == [
        "notebooks/alpha.md:1: a figure 14 inches wide is shrunk in the book's column: at most 11",
        "notebooks/alpha.md:2: font size 7 is below the book's smallest, 8",
        "wbcstudy/m.py:1: font size 6.5 is below the book's smallest, 8"]


def test_copies_run_from_an_older_source_are_reported(tmp_path):
    root = _good_tree(tmp_path)
    assert check.check_copies_fresh(root, CHAPTERS) == []
    (root / "tests" / "regression" / "beta.ipynb").write_text(json.dumps(_executed("print(epochs + 1)")))
    (root / "notebooks" / "alpha.md").write_text(_SOURCE.replace("# A chapter", "# A chapter, retitled"))
    assert check.check_copies_fresh(root, CHAPTERS) == [
        "alpha: book/chapters/alpha.ipynb has older text than notebooks/alpha.md (`wbcstudy judge` brings it over; "
        "no re-run needed)",
        "alpha: tests/regression/alpha.ipynb has older text than notebooks/alpha.md (`wbcstudy judge` brings it "
        "over; no re-run needed)",
        "beta: tests/regression/beta.ipynb was executed from an older notebooks/beta.md "
        "(re-run `wbcstudy run beta --profile smoke --publish`)"]


def test_a_typed_prose_number_that_the_results_do_not_hold_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr("wbcstudy.run.CHAPTERS", ("wnet",))
    _one_claim_chapter(tmp_path, 0.876, [0.86, 0.89])
    (tmp_path / "wbcstudy").mkdir()
    (tmp_path / "wbcstudy" / "m.py").write_text("betas = (0.9, 0.999)\n")
    (tmp_path / "notebooks").mkdir()
    md = tmp_path / "notebooks" / "wnet.md"
    md.write_text("# W-Net\n\nAccuracy 0.876 [0.86, 0.89] against the paper's 97.00% (chance 0.20), Adam's 0.999.\n")
    assert check.check_prose_numbers(tmp_path, ["wnet"]) == []
    # HemaX's prose beside its table: not a results number
    md.write_text("# W-Net\n\nAccuracy 0.883, mean of 3 seeds.\n")
    assert check.check_prose_numbers(tmp_path, ["wnet"]) == [
        "notebooks/wnet.md: the prose number 0.883 is in neither book/results/wnet.json nor its claims file: take it "
        "from the results (glue) or drop it"]


def test_the_chapter_list_is_one_list(tmp_path):
    root = _good_tree(tmp_path)
    assert check.check_chapter_list(root, CHAPTERS) == []
    (root / "notebooks" / "gamma.md").write_text(_SOURCE)  # a chapter source no list names
    (root / "_toc.yml").write_text((root / "_toc.yml").read_text() + "  - file: book/chapters/delta\n")
    found = check.check_chapter_list(root, CHAPTERS)
    assert any("book/chapters/delta" in p and "CHAPTERS" in p for p in found)
    assert any("notebooks/gamma.md" in p for p in found) and len(found) == 2
    assert check.check_chapter_list(Path(__file__).parents[1]) == []  # the project's own lists agree
    from wbcstudy.run import CHAPTERS as PROJECT_CHAPTERS
    from wbcstudy.scoreboard import PAPERS

    assert set(PAPERS) <= set(PROJECT_CHAPTERS)


def test_prose_from_python_strings_and_unglued_keys_are_reported(tmp_path):
    root = _good_tree(tmp_path)
    assert check.check_prose_glue(root, CHAPTERS) == []
    source = root / "notebooks" / "alpha.md"
    source.write_text(_SOURCE + '\n```{code-cell}\nMarkdown(f"{epochs} epochs")\n```\n\n'
                      "It ran {glue:text}`epochs_run` epochs for {glue:text}`accuracy:.3f`.\n")
    found = check.check_prose_glue(root, CHAPTERS)
    assert any("alpha.md" in p and 'Markdown(f"' in p for p in found)
    assert sum("accuracy, epochs_run" in p for p in found) == 2  # the book's copy and the regression copy
    glued = {"output_type": "display_data", "data": {"application/papermill.record/text/plain": "3"},
             "metadata": {}}
    for folder in ("book/chapters", "tests/regression"):
        notebook = _executed()
        notebook["cells"][-1]["outputs"] = [dict(glued, metadata={"scrapbook": {"name": key}})
                                            for key in ("accuracy", "epochs_run")]
        (root / folder / "alpha.ipynb").write_text(json.dumps(notebook))
    assert not any("does not glue" in p for p in check.check_prose_glue(root, CHAPTERS))
