"""Run chapter notebooks with papermill at a chosen profile, and build the book."""
from __future__ import annotations

import ast
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from wbcstudy.paths import params_dir, project_root

#: Chapters in the order `wbcstudy book` runs them (each is ``notebooks/<name>.md``); the summary reads the others, so
#: it runs last, though the book (``_toc.yml``) shows it first.
CHAPTERS: tuple[str, ...] = ("data", "baseline", "hemax", "cytodiffusion", "wnet", "trust", "resnext_cc", "summary")
#: Chapter sources that ``wbcstudy run`` executes but that are not in the book yet (no published cpu run).
DRAFTS: tuple[str, ...] = ()
PROFILES: tuple[str, ...] = ("smoke", "cpu", "paper", "gpu")
#: Profiles every chapter has; ``gpu`` (a recorded side experiment on a lent GPU) exists only where a chapter needs it.
REQUIRED_PROFILES: tuple[str, ...] = ("smoke", "cpu", "paper")


#: The smoke profile's machine pins: its executed copies are nbval references, so they must come out the same on every
#: supported CPU. fp32 (no bf16 autocast where a CPU has it natively), and the AVX2 kernels of oneDNN, MKL and ATen
#: (an AVX-512 CPU's kernels sum in another order: measured here, one epoch of ResNet-18 then differs in the 3rd digit).
SMOKE_ENV: dict[str, str] = {"WBCSTUDY_PRECISION": "fp32", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
                             "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


class ChapterError(ValueError):
    """An unknown chapter or profile, or a profile file that does not fit its notebook."""


def notebook_path(chapter: str) -> Path:
    """The parameterised source of a chapter: a MyST-NB text notebook."""
    if chapter not in CHAPTERS + DRAFTS:
        raise ChapterError(f"unknown chapter {chapter!r}; chapters are: {', '.join(CHAPTERS + DRAFTS)}")
    return project_root() / "notebooks" / f"{chapter}.md"


def read_notebook(chapter: str):
    """A chapter's source as a notebook object (jupytext reads the MyST text)."""
    import jupytext

    path = notebook_path(chapter)
    if not path.is_file():
        raise ChapterError(f"chapter source {path} is missing")
    nb = jupytext.read(path, fmt="md:myst")
    nb.metadata.pop("jupytext", None)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{chapter}-{i:02d}"  # stable ids: executed copies diff only where outputs changed
    return nb


def executed_copies(chapter: str) -> list[Path]:
    """The committed executed copies of a chapter that exist: the book's (cpu) and the regression copy (smoke)."""
    root = project_root()
    return [p for p in (root / "book" / "chapters" / f"{chapter}.ipynb",
                        root / "tests" / "regression" / f"{chapter}.ipynb")
            if p.is_file()]


def sync_prose(chapter: str, copy: Path) -> bool:
    """Give an executed copy its MyST source's current text cells, keeping its code cells and their outputs.

    Text is not executed, so a sentence mended in ``notebooks/<chapter>.md`` reaches the published chapter without a
    re-run. The code cells must be the source's, cell for cell (papermill's injected cell stays where it is); when they
    are not, the copy needs a re-run and ``ChapterError`` says so. Returns whether the copy changed.
    """
    import nbformat

    source = read_notebook(chapter).cells
    executed = nbformat.read(copy, as_version=4)
    code = [c for c in executed.cells
            if c.cell_type == "code" and "injected-parameters" not in (c.metadata.get("tags") or [])]
    want = [c.source for c in source if c.cell_type == "code"]
    if [c.source for c in code] != want:
        raise ChapterError(f"{copy.name}: its code cells are not notebooks/{chapter}.md's: re-run the chapter")
    injected_after: dict[int, list] = {}
    last = None
    for cell in executed.cells:
        if "injected-parameters" in (cell.metadata.get("tags") or []):
            injected_after.setdefault(id(last), []).append(cell)
        elif cell.cell_type == "code":
            last = cell
    cells, code_cells = [], iter(code)
    for cell in source:
        if cell.cell_type == "code":
            done = next(code_cells)
            cells += [done, *injected_after.get(id(done), [])]
        else:
            cells.append(nbformat.from_dict({"cell_type": cell.cell_type, "id": cell["id"],
                                             "metadata": dict(cell.metadata), "source": cell.source}))
    if [(c.cell_type, c.source) for c in cells] == [(c.cell_type, c.source) for c in executed.cells]:
        return False
    executed.cells = cells
    nbformat.write(executed, copy)
    return True


def sync_all_prose() -> list[Path]:
    """``sync_prose`` for every executed copy of every chapter whose code cells are the source's (a copy that waits
    for a re-run is left alone: ``wbcstudy check`` names it); the copies that changed."""
    changed = []
    for chapter in CHAPTERS:
        for copy in executed_copies(chapter):
            try:
                if sync_prose(chapter, copy):
                    changed.append(copy)
            except ChapterError:
                continue
    return changed


def profile_path(chapter: str, profile: str) -> Path:
    """The papermill parameter file of a chapter at a profile."""
    if profile not in PROFILES:
        raise ChapterError(f"unknown profile {profile!r}; profiles are: {', '.join(PROFILES)}")
    return params_dir() / chapter / f"{profile}.yml"


def output_path(chapter: str, profile: str) -> Path:
    """Where a published run's notebook goes: the book (cpu), the regression copies (smoke) or build/ (paper)."""
    root = project_root()
    return {
        "cpu": root / "book" / "chapters" / f"{chapter}.ipynb",
        "smoke": root / "tests" / "regression" / f"{chapter}.ipynb",
        "paper": root / "build" / "paper" / f"{chapter}.ipynb",
        "gpu": root / "build" / "gpu" / f"{chapter}.ipynb",
    }[profile]


def work_path(chapter: str, profile: str) -> Path:
    """Where a run's executed notebook is written first (and stays, unless the run is published)."""
    return project_root() / "build" / "runs" / profile / f"{chapter}.ipynb"


def work_results_dir(profile: str) -> str:
    """Where an unpublished run writes its results JSON (relative to the project root)."""
    return f"build/runs/{profile}/results"


def load_profile(chapter: str, profile: str) -> dict:
    """Parameters of a profile file (an empty file means the notebook's cpu defaults)."""
    notebook_path(chapter)  # an unknown chapter is named as such, not as a missing profile file
    path = profile_path(chapter, profile)
    if not path.is_file():
        raise ChapterError(f"no profile file {path} for chapter {chapter!r} at profile {profile!r}")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ChapterError(f"{path} is not valid YAML ({problem}{where}): fix it to a mapping of parameter names to "
                           "values, as in the other profile files") from None
    if not isinstance(params, dict):
        raise ChapterError(f"{path} must hold a mapping of parameter names to values")
    return params


def parameters_cell(chapter: str) -> dict[str, object]:
    """Names and default values assigned in the notebook's single ``parameters`` cell."""
    nb = read_notebook(chapter)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ChapterError(f"{notebook_path(chapter)} must have exactly one cell tagged 'parameters', found "
                           f"{len(cells)}")
    source = "".join(cells[0]["source"])
    values: dict[str, object] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            values[node.target.id] = ast.literal_eval(node.value) if node.value is not None else None
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    values[target.id] = ast.literal_eval(node.value)
    return values


#: Parameters that ``wbcstudy run`` sets itself (from ``--profile`` and the output place); no ``-p`` sets them.
RUNNER_PARAMETERS: tuple[str, ...] = ("profile", "results_dir")


def parameters_class(chapter: str) -> type:
    """The chapter's ``Parameters`` dataclass (``wbcstudy.experiments.<chapter>``): its fields and cpu defaults."""
    import importlib

    if chapter not in CHAPTERS + DRAFTS:
        raise ChapterError(f"unknown chapter {chapter!r}; chapters are: {', '.join(CHAPTERS + DRAFTS)}")
    return importlib.import_module(f"wbcstudy.experiments.{chapter}").Parameters


def chapter_parameters(chapter: str, profile: str = "cpu", overrides: dict | None = None):
    """The chapter's parameters at ``profile`` (and ``overrides``), checked: an instance of its ``Parameters``."""
    return parameters_class(chapter)(**check_profile(chapter, profile, overrides))


def check_parameters(chapter: str, params: dict, where: str) -> dict:
    """``params``, after checking that the chapter's ``Parameters`` (the names of its notebook's parameters cell)
    define each name with a compatible type.

    ``where`` names the source in the error (a profile file, or ``-p``); ``None`` defaults take anything.
    """
    import dataclasses

    defaults = {f.name: getattr(parameters_class(chapter)(), f.name)
                for f in dataclasses.fields(parameters_class(chapter))}
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ChapterError(f"{where} sets {unknown}, which the parameters cell of {notebook_path(chapter)} does not "
                           "define")
    for name, value in params.items():
        default = defaults[name]
        if default is None or value is None:
            continue
        same = isinstance(value, type(default)) or (isinstance(default, float) and isinstance(value, int))
        if not same or (isinstance(default, int) and isinstance(value, bool) != isinstance(default, bool)):
            raise ChapterError(f"{where}: {name}={value!r} has type {type(value).__name__}, "
                               f"the notebook's default {default!r} is {type(default).__name__}")
    return params


def parse_overrides(pairs: list[tuple[str, str]] | None) -> dict:
    """``-p NAME VALUE`` pairs as parameters: each value read as YAML (``3`` an int, ``0.1`` a float, ``true`` a
    bool, ``[a, b]`` a list, anything else a string; ``1e-3``, text to YAML 1.1, a float as papermill's ``-p`` reads
    it), the last of a repeated name winning."""
    import re

    params: dict = {}
    for name, text in pairs or ():
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value.strip()):
            value = float(value)
        params[name] = value
    return params


def check_profile(chapter: str, profile: str, overrides: dict | None = None) -> dict:
    """A profile's parameters, after checking that each one is defined by the notebook with a compatible type; with
    ``overrides`` (``wbcstudy run -p``), checked the same way, replacing the profile's values."""
    params = check_parameters(chapter, load_profile(chapter, profile), str(profile_path(chapter, profile)))
    if overrides:
        fixed = sorted(set(overrides) & set(RUNNER_PARAMETERS))
        if fixed:
            raise ChapterError(f"-p {fixed[0]}: `wbcstudy run` sets {fixed[0]} itself (choose the profile with "
                               "--profile; an unpublished run writes under build/runs/<profile>/)")
        params = {**params, **check_parameters(chapter, dict(overrides), "-p")}
    return params


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    """Set environment variables for the duration of a block, then restore what was there."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _tidy_papermill_metadata(path: Path, chapter: str, profile: str) -> None:
    """Record the source and the published place as repository paths (papermill stores a passed-in notebook whole),
    tag the cells the book hides and drop this machine's paths from the outputs (``wbcstudy.publish.tidy_notebook``)."""
    import nbformat

    from wbcstudy.publish import tidy_notebook

    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("papermill", {})
    meta["input_path"] = f"notebooks/{chapter}.md"
    meta["output_path"] = str(output_path(chapter, profile).relative_to(project_root()))
    tidy_notebook(nb, root=project_root())
    nbformat.write(nb, path)


class DirtyTreeError(ChapterError):
    """A publishing run was asked for while the work tree has uncommitted changes."""


def run_chapter(chapter: str, profile: str = "cpu", output: Path | None = None, publish: bool = False,
                allow_dirty: bool = False, overrides: dict | None = None) -> Path:
    """Execute one chapter with papermill at a profile; returns the executed notebook's path.

    The notebook runs into ``build/runs/<profile>/`` and writes its results there. Only a ``publish`` run that
    succeeds copies the notebook to its published place (the book at cpu, the regression copies at smoke), the
    results JSON to ``book/results/`` (cpu) and its wall-clock to the timings table; a failed run replaces nothing.
    Publishing at cpu refuses a work tree with uncommitted changes unless ``allow_dirty``: the results record a commit.
    ``overrides`` replace the profile's values (checked like them); a run with any is never published.
    """
    import shutil

    import papermill

    from wbcstudy.results import git_commit

    params = check_profile(chapter, profile, overrides)
    if publish and overrides:
        raise ChapterError("a run with -p overrides is not published: published runs come from the profile files alone")
    params["profile"] = profile
    if publish and profile == "cpu" and not allow_dirty and git_commit().endswith("+dirty"):
        raise DirtyTreeError(
            f"refusing to publish {chapter} at cpu from a work tree with uncommitted changes "
            f"(commit first, or pass --allow-dirty)"
        )
    results_dir = work_results_dir(profile)
    params["results_dir"] = results_dir
    work = Path(output) if output else work_path(chapter, profile)
    work.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with _environment(SMOKE_ENV if profile == "smoke" else {}):  # the kernel inherits this process's environment
        papermill.execute_notebook(
            read_notebook(chapter),
            str(work),
            parameters=params,
            cwd=str(project_root()),
            kernel_name="python3",
            progress_bar=False,
            log_output=False,
        )
    seconds = time.perf_counter() - start
    _tidy_papermill_metadata(work, chapter, profile)
    if not publish:
        return work
    out = output_path(chapter, profile)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work, out)
    produced = project_root() / results_dir / f"{chapter}.json"
    if profile == "cpu" and produced.is_file():
        shutil.copyfile(produced, project_root() / "book" / "results" / produced.name)
    record_timing(chapter, profile, seconds)
    return out


#: How much longer a run takes on a CPU without native bf16 than on one with it, when the run's precision was left to
#: the hardware (measured on this project's machines: a chapter ran 2.5x faster on a bf16 CPU). The budgets are for the
#: slower kind, so a run timed on a bf16 CPU counts this many times its seconds.
SLOW_CPU_FACTOR: float = 2.5


def timing_seconds(entry: float | dict) -> float:
    """Seconds of one timings.json entry (older entries are bare numbers)."""
    return float(entry["seconds"] if isinstance(entry, dict) else entry)


def slow_cpu_seconds(entry: float | dict) -> float:
    """An entry's seconds as they would be on a CPU without native bf16 (the kind the budgets are set for).

    A run timed on a CPU with native bf16 under ``auto`` precision used bf16 autocast, which the slower kind cannot:
    its seconds count :data:`SLOW_CPU_FACTOR` times. Runs forced to fp32, runs on the slower kind and old bare entries
    (no CPU recorded) count as they are.
    """
    seconds = timing_seconds(entry)
    if isinstance(entry, dict) and entry.get("native_bf16") and entry.get("precision_forced", "auto") != "fp32":
        return seconds * SLOW_CPU_FACTOR
    return seconds


def record_timing(chapter: str, profile: str, seconds: float) -> None:
    """Keep the latest wall-clock time of each chapter and profile, and the CPU it ran on, in
    ``book/results/timings.json``."""
    from wbcstudy.hardware import cpu_has_native_bf16, cpu_model
    from wbcstudy.train import precision_from_environment

    # what the run was forced to
    forced = SMOKE_ENV["WBCSTUDY_PRECISION"] if profile == "smoke" else precision_from_environment() or "auto"

    path = project_root() / "book" / "results" / "timings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    timings = json.loads(path.read_text()) if path.is_file() else {}
    timings.setdefault(chapter, {})[profile] = {
        "seconds": round(seconds, 1), "cpu": cpu_model(), "native_bf16": cpu_has_native_bf16(),
        "precision_forced": forced, "date": time.strftime("%Y-%m-%d"),
    }
    path.write_text(json.dumps(timings, indent=2, sort_keys=True) + "\n")
    (project_root() / "book" / "timings_table.md").write_text(timings_table(timings))


def _timing_cell(entry: float | dict | None) -> str:
    if entry is None:
        return "not run"
    if not isinstance(entry, dict):
        return f"{timing_seconds(entry):.1f} (CPU not recorded)"
    kind = "CPU with native bf16" if entry.get("native_bf16") else "CPU without native bf16"
    forced = entry.get("precision_forced", "auto")
    kind += f", {forced} forced" if forced != "auto" else ""
    slow = slow_cpu_seconds(entry)
    kind += f"; ≈ {slow:.0f} s without native bf16" if slow != timing_seconds(entry) else ""
    return f"{entry['seconds']:.1f} ({kind}, {entry.get('date', '?')})"


def timings_table(timings: dict[str, dict[str, float | dict]]) -> str:
    """A Markdown table of wall-clock seconds per chapter (rows, in book order) and profile (columns), with the CPU
    kind."""
    lines = ["| chapter | " + " | ".join(f"`{p}` (s)" for p in REQUIRED_PROFILES) + " |",
             "|---" * (len(REQUIRED_PROFILES) + 1) + "|"]
    for chapter in [c for c in CHAPTERS if c in timings] + sorted(set(timings) - set(CHAPTERS)):
        cells = [_timing_cell(timings[chapter].get(p)) for p in REQUIRED_PROFILES]
        lines.append(f"| {chapter} | " + " | ".join(cells) + " |")
    from wbcstudy.scoreboard import book_seconds

    cpu, slow, _ = book_seconds(timings, list(timings))
    lines += ["",
              f"Whole book at `cpu`: {cpu / 60:.0f} min as timed; ≈ {slow / 60:.0f} min on a CPU without native bf16 "
              f"(bf16-autocast runs timed on a bf16 CPU count {SLOW_CPU_FACTOR}×), the kind the budgets are set for."]
    return "\n".join(lines) + "\n"


def build_book(strict: bool = True) -> Path:
    """Build the HTML book with Jupyter Book 1 (warnings are errors when ``strict``)."""
    from wbcstudy.judgement import write_judgement

    root = project_root()
    sync_all_prose()  # mended text reaches the executed chapters without a re-run
    write_judgement(root)  # claims tables, scoreboard, the summary's counts: from the claims files and the results
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(root), "--path-output", str(root / "build")]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    subprocess.run(cmd, check=True, cwd=root)
    return root / "build" / "_build" / "html" / "index.html"


def run_book(profile: str = "cpu", chapters: tuple[str, ...] = CHAPTERS, allow_dirty: bool = False) -> Path:
    """Execute and publish every chapter at a profile, then build the book."""
    for chapter in chapters:
        print(f"[wbcstudy] running {chapter} ({profile})", flush=True)
        run_chapter(chapter, profile, publish=True, allow_dirty=allow_dirty)
    return build_book()
