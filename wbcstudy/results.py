"""The results contract: each chapter writes ``<results_dir>/<chapter>.json``; tables are built from these files."""
from __future__ import annotations

import json
import math
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import pandas as pd

from wbcstudy.paths import project_root, results_dir as _results_dir


def git_commit() -> str:
    """The commit the project is at (with ``+dirty`` when the work tree has changes), or ``unknown``."""
    try:
        root = project_root()
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _clean(value: object) -> object:
    """JSON-safe numbers: floats rounded to 6 digits, NaN as null, NumPy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # type: ignore[union-attr]
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    return value


def write_results(chapter: str, profile: str, seconds: float, metrics: dict, ci: dict | None = None,
                  paper: dict | None = None, results_dir: str = "book/results", extra: dict | None = None) -> Path:
    """Write a chapter's results JSON (the contract in DESIGN.md) and return its path."""
    missing = sorted(set(ci or {}) - set(metrics))
    if missing:
        raise ValueError(f"confidence intervals given for metrics that were not measured: {missing}")
    record = {"chapter": chapter, "profile": profile, "seconds": round(float(seconds), 1), "commit": git_commit(),
              "metrics": _clean(metrics), "ci": _clean(ci or {}), "paper": _clean(paper or {})}
    if extra:
        record.update(_clean(extra))  # type: ignore[arg-type]
    path = _results_dir(results_dir) / f"{chapter}.json"
    path.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    return path


def load_results(chapter: str, results_dir: str = "book/results") -> dict:
    """Read a chapter's results JSON, with an error that says how to produce it."""
    path = _results_dir(results_dir) / f"{chapter}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `wbcstudy run {chapter}` first")
    return json.loads(path.read_text())


def verdict(value: float, low: float | None, high: float | None, paper: float | None) -> str:
    """Reproduced when the paper's number lies inside our interval (or below it); not reproduced when above it."""
    if paper is None or value is None:
        return "not testable here"
    if low is None or high is None:
        return "reproduced" if value >= paper else "not reproduced"
    if high < paper:
        return "not reproduced (lower)"
    if low > paper:
        return "reproduced (higher than the paper)"
    return "reproduced (paper inside our CI)"


def comparison_table(results: dict, rows: dict[str, str], paper_keys: dict[str, str] | None = None) -> pd.DataFrame:
    """Paper vs reproduction: one row per metric (``rows`` maps results key → readable name), with CI and verdict."""
    paper_keys = paper_keys or {}
    out = []
    for key, name in rows.items():
        value = results["metrics"].get(key)
        low, high = (results["ci"].get(key) or [None, None])
        paper = results["paper"].get(paper_keys.get(key, key))
        out.append({"metric": name, "paper": paper, "reproduction": value,
                    "95% CI": f"[{low:.3f}, {high:.3f}]" if low is not None else "",
                    "verdict": verdict(value, low, high, paper)})
    return pd.DataFrame(out).set_index("metric")


def provenance() -> dict[str, str]:
    """Versions of Python and the study's main packages, and the machine they ran on."""
    out = {"python": platform.python_version(), "machine": f"{platform.machine()} {platform.processor() or ''}".strip()}
    for name in ("wbcstudy", "torch", "torchvision", "accelerate", "numpy", "scikit-learn", "papermill"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    import os

    from wbcstudy.train import cpu_has_native_bf16, forced_precision

    out["cpu_count"] = str(os.cpu_count())
    out["cpu_model"] = cpu_model()
    out["cpu_native_bf16"] = "yes (AVX512-BF16 or AMX)" if cpu_has_native_bf16() else "no"
    out["precision_forced"] = forced_precision() or "no (auto)"
    return out


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
