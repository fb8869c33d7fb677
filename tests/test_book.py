"""The book builds with Jupyter Book 1 (warnings as errors) and shows no machinery; the workflow that publishes it runs
only Makefile targets. The committed artefacts — every chapter executed and listed, its results, timings within budget,
intervals, claims — are checked by `wbcstudy check` (wbcstudy/check.py)."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from wbcstudy import publish, run
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
        assert "Parameters of this run" in page, f"{chapter}: no parameters table"
        for machinery in ("build/runs/", "# Parameters", "data root:", "tag_injected-parameters", "tag_parameters"):
            assert machinery not in page, f"{chapter}: the page shows {machinery!r}"


def _makefile_targets() -> set[str]:
    targets = set()
    for line in (project_root() / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_./$()-][^:=\s]*(?:\s+[^:=\s]+)*)\s*:(?!=)", line)
        if match and not line.startswith((".", "\t")):
            targets.update(match.group(1).split())
    return targets


def _workflow_commands(workflow: dict) -> list[str]:
    """Each shell command of each ``run:`` step (one per line, ``&&`` and ``;`` split)."""
    commands = []
    for job in workflow["jobs"].values():
        for step in job.get("steps", []):
            for line in str(step.get("run", "")).splitlines():
                commands += [c.strip() for c in re.split(r"&&|;", line) if c.strip() and not c.strip().startswith("#")]
    return commands


def test_the_book_workflow_builds_checks_and_deploys_with_makefile_targets():
    path = project_root() / ".github" / "workflows" / "book.yml"
    workflow = yaml.safe_load(path.read_text())
    commands = _workflow_commands(workflow)
    targets = _makefile_targets()
    assert {"book-html", "browser-check", "publish"} <= targets
    assert commands, "the workflow runs nothing"
    for command in commands:
        words = shlex.split(command)
        assert words[0] == "make", (f"{command!r}: the workflow runs Makefile targets only (`make publish` must do "
                                    "the same)")
        wanted = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        assert wanted and set(wanted) <= targets, f"{command!r}: {sorted(set(wanted) - targets)} not in the Makefile"
    assert [w for c in commands for w in shlex.split(c)[1:]][:2] == ["book-html", "browser-check"]  # build, then check
    uses = [s.get("uses", "").split("@")[0] for job in workflow["jobs"].values() for s in job.get("steps", [])]
    assert {"actions/checkout", "actions/setup-python", "actions/upload-pages-artifact",
            "actions/deploy-pages"} <= set(uses)
    python = next(s["with"]["python-version"] for j in workflow["jobs"].values() for s in j.get("steps", [])
                  if s.get("uses", "").startswith("actions/setup-python"))
    assert str(python) == "3.11"
    assert workflow["jobs"]["deploy"]["permissions"] == {"pages": "write", "id-token": "write"}


def test_publish_uses_ghp_import_pinned_in_the_book_extra():
    makefile = (project_root() / "Makefile").read_text()
    assert re.search(r"^publish:.*\n\t\$\(BIN\)/ghp-import .*build/_build/html", makefile, re.MULTILINE)
    pyproject = (project_root() / "pyproject.toml").read_text()
    assert re.search(r'^book = \[.*"ghp-import', pyproject, re.MULTILINE)
    assert re.search(r"^ghp-import==\d", (project_root() / "requirements" / "constraints.txt").read_text(),
                     re.MULTILINE)


def _notebook(*cells) -> dict:
    return {"cells": [dict(c) for c in cells], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _code(source, tags=(), outputs=()) -> dict:
    return {"cell_type": "code", "id": source[:8], "source": source, "metadata": {"tags": list(tags)},
            "outputs": [dict(o) for o in outputs], "execution_count": 1}


def test_tidy_tags_the_machinery_and_scrubs_machine_paths():
    stdout = {"output_type": "stream", "name": "stdout",
              "text": ["wnet: loaded from /tmp/wt-summary-cpu/build/models/cpu/wnet.pt (trained in 27 s)\n",
                       "efficientnet: stored at /work/main/build/models/cpu/e.pt\n"]}
    image = {"output_type": "display_data",
             "data": {"image/png": "iVBOR/tmp/xx", "text/plain": ["<Figure /home/me/f>"]}}
    nb = _notebook(_code("notebook.setup()", ["hide-input"],
                         [{"output_type": "stream", "name": "stdout", "text": "data root: X"}]),
                   _code("profile: str = 'cpu'  # p", ["parameters"]),
                   _code("# Parameters\nprofile = 'cpu'\n", ["injected-parameters"]),
                   _code("models = load()", outputs=[stdout, image]))
    publish.tidy_notebook(nb, root="/work/main")
    tags = [c["metadata"]["tags"] for c in nb["cells"]]
    assert tags[:3] == [["hide-input", "remove-output"], ["parameters", "remove-cell"],
                        ["injected-parameters", "remove-cell"]]
    text = "".join(nb["cells"][3]["outputs"][0]["text"])
    assert text == ("wnet: loaded from build/models/cpu/wnet.pt (trained in 27 s)\n"
                    "efficientnet: stored at build/models/cpu/e.pt\n")
    # no image touched
    assert nb["cells"][3]["outputs"][1]["data"] == {"image/png": "iVBOR/tmp/xx", "text/plain": ["<Figure f>"]}
    assert [c["source"] for c in nb["cells"]] == ["notebook.setup()", "profile: str = 'cpu'  # p",
                                                  "# Parameters\nprofile = 'cpu'\n",
                                                  "models = load()"]  # sources unchanged
    assert publish.tidy_notebook(json.loads(json.dumps(nb)), root="/work/main") == nb  # a second pass changes nothing
    assert not publish.LOCAL_PATH.search("fetched into /content/wbcstudy-data; a network/work/ folder")
    assert publish.scrub_paths("/tmp/ipykernel_12982/3207021727.py:6: UserWarning") == "3207021727.py:6: UserWarning"


def test_the_model_store_says_where_a_model_is_from_the_project_root(tmp_path):
    from wbcstudy.benchmark.store import model_path, shown_path

    assert shown_path(model_path("wnet", "cpu")) == "build/models/cpu/wnet.pt"
    assert shown_path(tmp_path / "x.pt") == str(tmp_path / "x.pt")  # outside the project: as it is


def test_book_view_shows_parameters_as_a_table_and_drops_the_precision_echo():
    params = ('profile: str = "cpu"  # papermill profile name\nresults_dir: str = "book/results"  # where results go\n'
              'sizes: list = [10, 20]  # low-data sizes | per class\nepochs: int = 3  # training epochs\n')
    injected = '# Parameters\nprofile = "cpu"\nresults_dir = "build/runs/cpu/results"\nepochs = 5\n'
    configure = _code("notebook.configure(precision)", outputs=[
        {"output_type": "stream", "name": "stdout",
         "text": "precision: bf16 (requested auto)\nwrote x.json into build/runs/cpu/results\n"},
        {"output_type": "execute_result", "data": {"text/plain": "'bf16'"}, "metadata": {}, "execution_count": 4}])
    table = _code("df", outputs=[{"output_type": "execute_result", "metadata": {}, "execution_count": 5, "data": {
        "text/html": '<style>.a_b {}</style><table class="dataframe"><tr><th>train_loss</th><td>0.125</td>'
                     '<td>wbcstudy.losses</td></tr></table>'}}])
    nb = publish.book_view(_notebook(_code(params, ["parameters"]), _code(injected, ["injected-parameters"]), configure,
                                     table))
    md = nb["cells"][0]
    assert md["cell_type"] == "markdown" and ":class: dropdown" in md["source"]
    assert "| `results_dir` | `\"book/results\"` | where results go |" in md["source"]  # not papermill's scratch folder
    assert "| `epochs` | `5` | training epochs |" in md["source"]  # the value the run used
    assert "| `sizes` | `[10, 20]` | low-data sizes \\| per class |" in md["source"]
    assert "remove-cell" in nb["cells"][1]["metadata"]["tags"] and "remove-cell" in nb["cells"][2]["metadata"]["tags"]
    assert [o["output_type"] for o in nb["cells"][3]["outputs"]] == ["stream"]
    assert nb["cells"][3]["outputs"][0]["text"] == "precision: bf16 (requested auto)\nwrote x.json into book/results\n"
    html = nb["cells"][4]["outputs"][0]["data"]["text/html"]
    assert html == ('<style>.a_b {}</style><table class="dataframe"><tr><th>train_<wbr>loss</th><td>0.125</td>'
                    '<td>wbcstudy.<wbr>losses</td></tr></table>')


@pytest.mark.parametrize("chapter", run.CHAPTERS)
def test_the_committed_chapters_publish_no_machine_path(chapter):
    for copy in (project_root() / "book" / "chapters" / f"{chapter}.ipynb",
                 project_root() / "tests" / "regression" / f"{chapter}.ipynb"):
        nb = json.loads(copy.read_text())
        before = json.dumps(nb)
        assert json.dumps(publish.tidy_notebook(nb)) == before, f"{copy.name}: run wbcstudy.publish.tidy_notebook on it"
        for cell in nb["cells"]:
            for output in cell.get("outputs", []):
                assert not (output.get("name") == "stderr" and cell_is_visible(cell)), f"{copy.name}: a stderr output"


def cell_is_visible(cell: dict) -> bool:
    tags = set(cell.get("metadata", {}).get("tags") or [])
    return not tags & {"remove-cell", "remove-output", "hide-output"}

