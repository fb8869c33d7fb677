"""The runner: every profile file fits its notebook's parameters cell; the set-up files agree."""
from __future__ import annotations

import tomllib

import pytest
import yaml

from wbcstudy import run
from wbcstudy.paths import project_root


@pytest.mark.parametrize("chapter", run.CHAPTERS)
@pytest.mark.parametrize("profile", run.REQUIRED_PROFILES)
def test_profile_sets_only_names_the_notebook_defines(chapter, profile):
    params = run.check_profile(chapter, profile)
    assert set(params) <= set(run.parameters_cell(chapter))


@pytest.mark.parametrize("chapter", run.CHAPTERS)
def test_parameters_cell_is_typed_commented_and_has_profile(chapter):
    nb = run.read_notebook(chapter)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    lines = [line for line in cell.source.splitlines() if line.strip()]
    assert all(":" in line.split("=")[0] and "#" in line
               for line in lines), "each knob is 'name: type = value  # comment'"
    defaults = run.parameters_cell(chapter)
    assert defaults["profile"] == "cpu" and defaults["results_dir"] == "book/results"


@pytest.mark.parametrize("chapter", run.CHAPTERS)
def test_papermill_reads_every_parameter(chapter):
    """papermill parses the parameters cell with its own pattern: a line it cannot parse (an '=' in the comment does
    it) is dropped with a warning, and papermill then calls a profile's value for it an unknown parameter."""
    from papermill.translators import PythonTranslator

    nb = run.read_notebook(chapter)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    seen = {p.name: p.default for p in PythonTranslator.inspect(cell)}
    assert set(seen) == set(run.parameters_cell(chapter)), "papermill cannot read some lines of the parameters cell"


@pytest.mark.parametrize("chapter", run.CHAPTERS)
def test_chapter_source_is_a_myst_notebook_with_stable_cell_ids(chapter):
    text = run.notebook_path(chapter).read_text()
    assert text.startswith("---\njupytext:") and "format_name: myst" in text
    nb = run.read_notebook(chapter)
    assert [c.id for c in nb.cells] == [f"{chapter}-{i:02d}" for i in range(len(nb.cells))]
    assert text.count("```{code-cell}") == sum(c.cell_type == "code" for c in nb.cells)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


def test_unknown_name_in_a_profile_file_is_an_error(tmp_path, monkeypatch):
    params = tmp_path / "notebooks" / "params" / "data"
    params.mkdir(parents=True)
    (tmp_path / "notebooks" / "data.md").write_text(run.notebook_path("data").read_text())
    (params / "smoke.yml").write_text("cells_per_clas: 3\n")
    monkeypatch.setenv("WBCSTUDY_ROOT", str(tmp_path))
    with pytest.raises(run.ChapterError, match="cells_per_clas"):
        run.check_profile("data", "smoke")
    (params / "smoke.yml").write_text("cells_per_class: three\n")
    with pytest.raises(run.ChapterError, match="type str"):
        run.check_profile("data", "smoke")


def test_parameter_overrides_are_read_as_yaml_and_checked_like_profile_values():
    overrides = run.parse_overrides([("scratch_models", "[vgg16, resnet50]"), ("cnn_lr", "1e-3"), ("seed", "4"),
                                     ("precision", "fp32"), ("augment_resampling", "a: b: c"), ("seed", "5")])
    # 1e-3 a float, as papermill reads it; invalid YAML stays text
    assert overrides == {"scratch_models": ["vgg16", "resnet50"], "cnn_lr": 0.001, "seed": 5, "precision": "fp32",
                         "augment_resampling": "a: b: c"}
    with pytest.raises(run.ChapterError, match=r"-p: cnn_lr='fast' has type str"):
        run.check_profile("trust", "smoke", {**overrides, "cnn_lr": "fast"})
    params = run.check_profile("trust", "smoke", overrides)
    assert params["scratch_models"] == ["vgg16", "resnet50"] and params["seed"] == 5
    with pytest.raises(run.ChapterError, match=r"-p sets \['no_such_param'\]"):
        run.check_profile("trust", "smoke", {"no_such_param": 1})
    with pytest.raises(run.ChapterError, match="not published"):  # refused before papermill starts
        run.run_chapter("trust", "smoke", publish=True, overrides={"seed": 1})


def test_malformed_profile_yaml_is_a_chapter_error(tmp_path, monkeypatch):
    params = tmp_path / "notebooks" / "params" / "data"
    params.mkdir(parents=True)
    (tmp_path / "notebooks" / "data.md").write_text(run.notebook_path("data").read_text())
    (params / "smoke.yml").write_text("seed: 1\n\tcells_per_class: 3\n")
    monkeypatch.setenv("WBCSTUDY_ROOT", str(tmp_path))
    with pytest.raises(run.ChapterError, match=r"smoke.yml is not valid YAML \(.* at line 2, column 1\)"):
        run.check_profile("data", "smoke")


def test_unknown_chapter_and_profile_are_errors():
    with pytest.raises(run.ChapterError, match="unknown chapter"):
        run.notebook_path("hemax2")
    with pytest.raises(run.ChapterError, match="unknown profile"):
        run.profile_path("data", "nosuch")


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    root = project_root()
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | {d for extra in project["optional-dependencies"].values() for d in extra}
    env = yaml.safe_load((root / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert wanted == set(pip) - {"-e ."}


def test_results_contract_round_trip(tmp_path, monkeypatch):
    from wbcstudy.results import claims_table, load_results, write_results

    monkeypatch.setenv("WBCSTUDY_ROOT", str(tmp_path))
    claims = tmp_path / "book" / "claims" / "demo.yml"
    claims.parent.mkdir(parents=True)
    claims.write_text("chapter: demo\nsource: A 2020\ncite: a2020\nclaims:\n"
                      "  - id: demo_acc\n    claim: reaches 97%\n    where: Table 1\n    paper_value: 0.97\n"
                      "    key: acc\n    direction: higher\n    margin: 0.02\n    models: [cnn]\n")
    write_results("demo", "smoke", 1.23, {"acc": 0.9, "auc": float("nan")}, {"acc": (0.85, 0.93)},
                  results_dir=str(tmp_path), plateau={"cnn": True})
    res = load_results("demo", str(tmp_path))
    assert set(res) >= {"chapter", "profile", "seconds", "commit", "metrics", "ci", "paper", "plateau"}
    assert res["metrics"] == {"acc": 0.9, "auc": None} and res["ci"]["acc"] == [0.85, 0.93]
    assert res["paper"] == {"acc": 0.97} and res["plateau"] == {"cnn": True}
    # provenance travels with the numbers
    assert {"cpu_model", "cpu_native_bf16", "torch", "python"} <= set(res["machine"])
    table = claims_table("demo", res)
    assert table.loc["demo_acc", "verdict"] == "not reproduced"  # 0.93 < 0.97 - 0.02
    with pytest.raises(ValueError, match="not measured"):
        write_results("demo", "smoke", 1.0, {"acc": 0.9}, {"f1": (0, 1)}, results_dir=str(tmp_path))


def test_sync_prose_brings_mended_text_over_and_keeps_code_outputs(tmp_path, monkeypatch):
    import nbformat

    from wbcstudy.run import ChapterError, sync_prose

    monkeypatch.setenv("WBCSTUDY_ROOT", str(tmp_path))
    (tmp_path / "notebooks").mkdir()
    header = ("---\njupytext:\n  text_representation:\n    format_name: myst\nkernelspec:\n  display_name: Python 3\n"
              "  name: python3\n---\n\n")
    text = header + ("# Data\n\nOld sentence.\n\n```{code-cell}\n:tags: [parameters]\n\nn = 1\n```\n\n"
                     "```{code-cell}\nprint(n)\n```\n")
    (tmp_path / "notebooks" / "data.md").write_text(text)
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Data\n\nOld sentence.", id="data-00"),
        nbformat.v4.new_code_cell("n = 1", id="data-01", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("n = 2", id="inj", metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("print(n)", id="data-02",
                                  outputs=[nbformat.v4.new_output("stream", name="stdout", text="2\n")]),
    ])
    copy = tmp_path / "data.ipynb"
    nbformat.write(nb, copy)
    assert sync_prose("data", copy) is False  # nothing to bring over
    (tmp_path / "notebooks" / "data.md").write_text(text.replace("Old sentence.",
                                                                 "New sentence.\n\nA second paragraph."))
    assert sync_prose("data", copy) is True
    cells = nbformat.read(copy, as_version=4).cells
    assert [c.cell_type for c in cells] == ["markdown", "code", "code", "code"]
    assert "New sentence." in cells[0].source and "Old" not in cells[0].source
    # the run's injected cell and output stay
    assert cells[2].source == "n = 2" and cells[3].outputs[0]["text"] == "2\n"
    (tmp_path / "notebooks" / "data.md").write_text(text.replace("print(n)", "print(n + 1)"))
    with pytest.raises(ChapterError, match="re-run the chapter"):
        sync_prose("data", copy)


@pytest.mark.parametrize("chapter", run.CHAPTERS)
def test_parameters_dataclass_is_the_notebooks_parameters_cell(chapter):
    """Each chapter's typed Parameters hold exactly its notebook's parameters: names, order, types and cpu values."""
    import dataclasses

    cls = run.parameters_class(chapter)
    defaults = cls()
    cell = run.parameters_cell(chapter)
    assert [f.name for f in dataclasses.fields(cls)] == list(cell)
    for name, value in cell.items():
        assert getattr(defaults, name) == value and type(getattr(defaults, name)) is type(value), name
    for profile in ("smoke", "cpu", "paper"):
        params = run.chapter_parameters(chapter, profile)
        assert isinstance(params, cls)
        assert {k: getattr(params, k) for k in run.load_profile(chapter, profile)} == run.load_profile(chapter, profile)
