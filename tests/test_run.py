"""The runner: every profile file fits its notebook's parameters cell; the set-up files agree."""
from __future__ import annotations

import json
import tomllib

import pytest
import yaml

from wbcstudy import run
from wbcstudy.paths import project_root


@pytest.mark.parametrize("chapter", run.CHAPTERS)
@pytest.mark.parametrize("profile", run.PROFILES)
def test_profile_sets_only_names_the_notebook_defines(chapter, profile):
    params = run.check_profile(chapter, profile)
    assert set(params) <= set(run.parameters_cell(chapter))


@pytest.mark.parametrize("chapter", run.CHAPTERS)
def test_parameters_cell_is_typed_commented_and_has_profile(chapter):
    nb = json.loads(run.notebook_path(chapter).read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    lines = [l for l in "".join(cell["source"]).splitlines() if l.strip()]
    assert all(":" in l.split("=")[0] and "#" in l for l in lines), "each knob is 'name: type = value  # comment'"
    defaults = run.parameters_cell(chapter)
    assert defaults["profile"] == "cpu" and defaults["results_dir"] == "book/results"


@pytest.mark.parametrize("chapter", run.CHAPTERS)
def test_source_notebooks_are_committed_without_outputs(chapter):
    nb = json.loads(run.notebook_path(chapter).read_text())
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb["cells"] if c["cell_type"] == "code")


def test_unknown_name_in_a_profile_file_is_an_error(tmp_path, monkeypatch):
    params = tmp_path / "notebooks" / "params" / "data"
    params.mkdir(parents=True)
    (tmp_path / "notebooks" / "data.ipynb").write_text(run.notebook_path("data").read_text())
    (params / "smoke.yml").write_text("cells_per_clas: 3\n")
    monkeypatch.setenv("WBCSTUDY_ROOT", str(tmp_path))
    with pytest.raises(run.ChapterError, match="cells_per_clas"):
        run.check_profile("data", "smoke")
    (params / "smoke.yml").write_text("cells_per_class: three\n")
    with pytest.raises(run.ChapterError, match="type str"):
        run.check_profile("data", "smoke")


def test_unknown_chapter_and_profile_are_errors():
    with pytest.raises(run.ChapterError, match="unknown chapter"):
        run.notebook_path("hemax2")
    with pytest.raises(run.ChapterError, match="unknown profile"):
        run.profile_path("data", "gpu")


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    root = project_root()
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | {d for extra in project["optional-dependencies"].values() for d in extra}
    env = yaml.safe_load((root / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert wanted == set(pip) - {"-e ."}


def test_results_contract_round_trip(tmp_path):
    from wbcstudy.results import comparison_table, load_results, write_results

    write_results("demo", "smoke", 1.23, {"acc": 0.9, "auc": float("nan")}, {"acc": (0.85, 0.95)}, {"acc": 0.97},
                  results_dir=str(tmp_path))
    res = load_results("demo", str(tmp_path))
    assert set(res) >= {"chapter", "profile", "seconds", "commit", "metrics", "ci", "paper"}
    assert res["metrics"] == {"acc": 0.9, "auc": None} and res["ci"]["acc"] == [0.85, 0.95]
    table = comparison_table(res, {"acc": "accuracy"})
    assert table.loc["accuracy", "verdict"] == "not reproduced (lower)"
    with pytest.raises(ValueError, match="not measured"):
        write_results("demo", "smoke", 1.0, {"acc": 0.9}, {"f1": (0, 1)}, results_dir=str(tmp_path))
