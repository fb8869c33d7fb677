"""The results contract, the claims files and the ONE verdict rule.

- Each chapter writes ``<results_dir>/<chapter>.json`` (``write_results``; the contract is in
  DESIGN.md): what it measured, the intervals, the paper's numbers, and which models reached
  their plateau.
- Each paper's claims live once, as data, in ``book/claims/<chapter>.yml`` (``load_claims``).
- ``verdict`` turns one claim, its measured value and interval, and the models' convergence
  into one of ``OUTCOMES``; ``claims_table`` does so for every claim of a chapter.
"""
from __future__ import annotations

import json
import math
import platform
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import yaml

from wbcstudy.intervals import metric_range
from wbcstudy.paths import project_root
from wbcstudy.paths import results_dir as _results_dir

#: The verdicts, from the one rule in ``verdict``.
OUTCOMES: tuple[str, ...] = ("reproduced", "exceeded", "not reproduced", "contradicted", "inconclusive", "not comparable")
#: What a claim's ``direction`` may be.
DIRECTIONS: tuple[str, ...] = ("higher", "lower", "close", "beats")


def git_commit() -> str:
    """The commit the project is at (with ``+dirty`` when the work tree has changes), or ``unknown``."""
    try:
        root = project_root()
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

        sha = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --------------------------------------------------------------------------- claims files
class ClaimsError(ValueError):
    """A claims file that does not follow the spec; the message is one line naming the file and the claim."""


@dataclass
class Claim:
    """One claim of a paper, as written in ``book/claims/<chapter>.yml``."""

    id: str  #: unique in its file
    claim: str  #: the paper's claim in words
    where: str  #: where in the paper (table, figure, section)
    paper_value: float | None  #: the paper's number; None for a claim without one (e.g. "A beats B")
    key: str | None  #: the results metric that tests it (None only when not comparable)
    direction: str  #: higher | lower | close | beats
    margin: float | None  #: equivalence margin in the metric's units (None only when not comparable)
    models: list[str] = field(default_factory=list)  #: names in the results' "plateau" dict the verdict needs
    comparable: bool = True  #: False when the set-up differs too much to test the claim
    reason: str = ""  #: why not comparable
    substitution: str = ""  #: what differs from the paper's set-up, shown beside the number


_TOP_FIELDS = {"chapter", "source", "cite", "claims"}
_REQUIRED = ("id", "claim", "where", "key", "direction", "margin")
_FIELDS = {f for f in Claim.__dataclass_fields__}


def claims_path(chapter: str, root: str | Path | None = None) -> Path:
    """``book/claims/<chapter>.yml`` under ``root`` (default: the project root)."""
    if root is None:
        from wbcstudy.paths import claims_dir

        return claims_dir() / f"{chapter}.yml"  # the checkout's, else the copy an installed wheel ships
    return Path(root) / "book" / "claims" / f"{chapter}.yml"


def _number(value: object, what: str, fail) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        fail(f"{what} must be a number or null, got {value!r}")
    return float(value)


def _parse_claim(entry: object, index: int, fail_file) -> Claim:
    if not isinstance(entry, dict):
        fail_file(f"claim #{index + 1} is not a mapping")
    cid = entry.get("id")
    if not isinstance(cid, str) or not cid.strip():
        fail_file(f"claim #{index + 1} has no id")

    def fail(msg: str):
        fail_file(f"claim {cid!r}: {msg}")

    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        fail(f"unknown field {unknown[0]!r} (fields: {', '.join(sorted(_FIELDS))})")
    for name in _REQUIRED:
        if name not in entry:
            fail(f"missing field {name!r}")
    comparable = entry.get("comparable", True)
    if not isinstance(comparable, bool):
        fail(f"comparable must be true or false, got {comparable!r}")
    direction = entry["direction"]
    if direction not in DIRECTIONS:
        fail(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
    for name in ("claim", "where", "reason", "substitution"):
        value = entry.get(name, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            fail(f"{name} must be text, got {value!r}")
    reason = (entry.get("reason") or "").strip()
    if not comparable and not reason:
        fail("comparable is false but no reason is given")
    key, margin = entry["key"], _number(entry["margin"], "margin", fail)
    if comparable:
        if not isinstance(key, str) or not key.strip():
            fail("key must name a results metric")
        if margin is None:
            fail("margin must be a number")
    elif key is not None and not isinstance(key, str):
        fail(f"key must be text or null, got {key!r}")
    if margin is not None and margin < 0:
        fail(f"margin must not be negative, got {margin}")
    paper_value = _number(entry.get("paper_value"), "paper_value", fail)
    if comparable and direction != "beats" and paper_value is None:
        fail(f"direction {direction!r} needs a paper_value")
    models = entry.get("models") or []
    if isinstance(models, str) or not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        fail(f"models must be a list of names, got {models!r}")
    return Claim(id=cid, claim=entry["claim"] or "", where=entry["where"] or "", paper_value=paper_value, key=key,
                 direction=direction, margin=margin, models=list(models), comparable=comparable, reason=reason,
                 substitution=(entry.get("substitution") or "").strip())


def load_claims(chapter: str, root: str | Path | None = None) -> list[Claim]:
    """The claims of ``book/claims/<chapter>.yml``, validated strictly (a ``ClaimsError`` names the file and claim)."""
    path = claims_path(chapter, root)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no claims file for chapter {chapter!r}")

    def fail_file(msg: str):
        raise ClaimsError(f"{path}: {msg}")

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        fail_file("not valid YAML: " + " ".join(str(exc).split()))
    if not isinstance(data, dict):
        fail_file("must be a mapping with chapter, source, cite and claims")
    unknown = sorted(set(data) - _TOP_FIELDS)
    if unknown:
        fail_file(f"unknown top-level field {unknown[0]!r} (fields: {', '.join(sorted(_TOP_FIELDS))})")
    if data.get("chapter") != chapter:
        fail_file(f"chapter is {data.get('chapter')!r}, expected {chapter!r}")
    entries = data.get("claims")
    if not isinstance(entries, list) or not entries:
        fail_file("claims must be a non-empty list")
    claims, seen = [], set()
    for i, entry in enumerate(entries):
        claim = _parse_claim(entry, i, fail_file)
        if claim.id in seen:
            fail_file(f"claim {claim.id!r}: duplicate id")
        seen.add(claim.id)
        claims.append(claim)
    return claims


def paper_values(chapter: str, root: str | Path | None = None) -> dict[str, float]:
    """The paper's number for each results key that a claim of ``chapter`` tests (claims without one are skipped)."""
    out: dict[str, float] = {}
    for claim in load_claims(chapter, root):
        if claim.key is None or claim.paper_value is None:
            continue
        if claim.key in out and out[claim.key] != claim.paper_value:
            raise ClaimsError(f"{claims_path(chapter, root)}: claim {claim.id!r}: key {claim.key!r} has two paper values "
                              f"({out[claim.key]} and {claim.paper_value})")
        out[claim.key] = claim.paper_value
    return out


# --------------------------------------------------------------------------- the verdict rule
class Verdict(NamedTuple):
    """One of ``OUTCOMES`` and one short sentence, with the numbers, saying why."""

    outcome: str
    why: str


def _f(x: float) -> str:
    return f"{x:.3f}"


def _missing(x: object) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _not_converged(claim: Claim, converged: bool | Mapping[str, bool]) -> str | None:
    """The first model the claim needs that did not reach its plateau, or None."""
    if isinstance(converged, Mapping):
        for model in claim.models:
            if not converged.get(model, False):
                return model
        return None
    if not converged:
        return ", ".join(claim.models) if claim.models else "the model"
    return None


def verdict(claim: Claim, value: float | None, interval: tuple[float, float] | list[float] | None,
            converged: bool | Mapping[str, bool] = True) -> Verdict:
    """The one verdict rule: a claim, its measured value, its 95 % interval and convergence → ``Verdict``.

    ``converged`` is a bool for the claim's models together, or the results' ``plateau`` dict
    ``{model: reached}`` (a model the claim lists that is missing from it counts as not converged).
    With d the paper's value, m the margin and [lo, hi] the interval:

    - higher: lo > d+m exceeded; lo ≥ d−m reproduced; hi < d−m not reproduced; else inconclusive;
    - lower: hi < d−m exceeded; hi ≤ d+m reproduced; lo > d+m not reproduced; else inconclusive;
    - close: [lo, hi] ⊆ [d−m, d+m] reproduced; hi < d−m or lo > d+m not reproduced; else inconclusive;
    - beats (the key is a difference A − B): lo > d+m exceeded (when d is given); lo > 0 reproduced;
      hi < 0 contradicted; [lo, hi] ⊆ [−m, m] not reproduced (no difference); else inconclusive.

    Before that: not comparable claims, unmeasured values, missing intervals, models short of
    their plateau and invalid intervals (outside the metric's range, or not containing the
    value) are "not comparable" or "inconclusive".
    """
    if not claim.comparable:
        return Verdict("not comparable", claim.reason)
    if _missing(value):
        return Verdict("inconclusive", "not measured")
    if interval is None or len(interval) != 2 or any(_missing(x) for x in interval):
        return Verdict("inconclusive", "no interval")
    model = _not_converged(claim, converged)
    if model is not None:
        return Verdict("inconclusive", f"{model} did not reach its plateau")
    value = float(value)  # type: ignore[arg-type]
    lo, hi = float(interval[0]), float(interval[1])
    span = f"[{_f(lo)}, {_f(hi)}]"
    eps = 1e-9
    if lo > hi:
        return Verdict("inconclusive", f"invalid interval {span}: its low end is above its high end")
    valid = metric_range(claim.key or "")
    if valid is not None and (lo < valid[0] - eps or hi > valid[1] + eps):
        return Verdict("inconclusive", f"invalid interval {span}: it leaves the metric's range [{valid[0]:g}, {valid[1]:g}]")
    if not lo - eps <= value <= hi + eps:
        return Verdict("inconclusive", f"invalid interval {span}: it does not contain the value {_f(value)}")
    d, m = claim.paper_value, float(claim.margin or 0.0)

    if claim.direction == "beats":
        if d is not None and lo > d + m:
            return Verdict("exceeded", f"the difference's interval {span} lies above the paper's {_f(d)} + {_f(m)}")
        if lo > 0:
            return Verdict("reproduced", f"the difference's interval {span} lies above 0")
        if hi < 0:
            return Verdict("contradicted", f"the difference's interval {span} lies below 0: the other side wins")
        if lo >= -m and hi <= m:
            return Verdict("not reproduced", f"the difference's interval {span} lies within ±{_f(m)}: no difference")
        return Verdict("inconclusive", f"the difference's interval {span} includes 0 and reaches beyond ±{_f(m)}")

    assert d is not None  # load_claims guarantees it for comparable higher/lower/close claims
    low_bar, high_bar = d - m, d + m
    bars = f"the paper's {_f(d)} ± {_f(m)}"
    if claim.direction == "higher":
        if lo > high_bar:
            return Verdict("exceeded", f"the interval {span} lies above {bars}")
        if lo >= low_bar:
            return Verdict("reproduced", f"the interval {span} starts at or above {_f(d)} − {_f(m)} = {_f(low_bar)}")
        if hi < low_bar:
            return Verdict("not reproduced", f"the interval {span} lies below {_f(d)} − {_f(m)} = {_f(low_bar)}")
        return Verdict("inconclusive", f"the interval {span} straddles {_f(d)} − {_f(m)} = {_f(low_bar)}")
    if claim.direction == "lower":
        if hi < low_bar:
            return Verdict("exceeded", f"the interval {span} lies below {bars}")
        if hi <= high_bar:
            return Verdict("reproduced", f"the interval {span} ends at or below {_f(d)} + {_f(m)} = {_f(high_bar)}")
        if lo > high_bar:
            return Verdict("not reproduced", f"the interval {span} lies above {_f(d)} + {_f(m)} = {_f(high_bar)}")
        return Verdict("inconclusive", f"the interval {span} straddles {_f(d)} + {_f(m)} = {_f(high_bar)}")
    # close
    window = f"[{_f(low_bar)}, {_f(high_bar)}]"
    if lo >= low_bar and hi <= high_bar:
        return Verdict("reproduced", f"the interval {span} lies within {bars} = {window}")
    if hi < low_bar or lo > high_bar:
        return Verdict("not reproduced", f"the interval {span} lies outside {bars} = {window}")
    return Verdict("inconclusive", f"the interval {span} is not inside {bars} = {window}")


def claims_table(chapter: str, results: dict | None = None, results_dir: str = "book/results",
                 root: str | Path | None = None) -> pd.DataFrame:
    """Paper vs reproduction for every claim of ``chapter``: one row per claim id, with its verdict and why.

    ``results`` is the chapter's results dict (``load_results``); when None it is read from
    ``results_dir``. Columns: claim, where, paper, reproduction, 95% CI, verdict, why, substitution.
    """
    if results is None:
        results = load_results(chapter, results_dir)
    metrics, cis, plateau = results.get("metrics", {}), results.get("ci", {}), results.get("plateau", {}) or {}
    rows = []
    for claim in load_claims(chapter, root):
        value = metrics.get(claim.key) if claim.key else None
        interval = cis.get(claim.key) if claim.key else None
        outcome, why = verdict(claim, value, interval, plateau)
        rows.append({
            "id": claim.id, "claim": claim.claim, "where": claim.where,
            "paper": "—" if claim.paper_value is None else _f(claim.paper_value),
            "reproduction": "—" if _missing(value) else _f(float(value)),
            "95% CI": "—" if interval is None or any(_missing(x) for x in interval) else f"[{_f(interval[0])}, {_f(interval[1])}]",
            "verdict": outcome, "why": why, "substitution": claim.substitution,
        })
    return pd.DataFrame(rows).set_index("id")


# --------------------------------------------------------------------------- results files
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
                  paper: dict | None = None, results_dir: str = "book/results", extra: dict | None = None,
                  plateau: dict[str, bool] | None = None) -> Path:
    """Write a chapter's results JSON (the contract in DESIGN.md) and return its path.

    ``paper=None`` takes the paper's numbers from ``book/claims/<chapter>.yml`` (none without
    that file); ``plateau`` records, per model, whether it reached its plateau
    (``wbcstudy.train.reached_plateau``), which the verdicts of claims listing that model need.
    """
    missing = sorted(set(ci or {}) - set(metrics))
    if missing:
        raise ValueError(f"confidence intervals given for metrics that were not measured: {missing}")
    if paper is None:
        paper = paper_values(chapter) if claims_path(chapter).is_file() else {}
    record = {"chapter": chapter, "profile": profile, "seconds": round(float(seconds), 1), "commit": git_commit(),
              "metrics": _clean(metrics), "ci": _clean(ci or {}), "paper": _clean(paper),
              "plateau": {str(k): bool(v) for k, v in (plateau or {}).items()},
              "machine": provenance()}  # the CPU (and whether it ran bf16 natively) and the package versions
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


#: CPU flags that decide the precision and kernels a run used: AVX2, AVX-512, native bf16 (AVX512-BF16, AMX).
PRECISION_FLAGS: tuple[str, ...] = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags(names: tuple[str, ...] = PRECISION_FLAGS, cpuinfo: str | None = None) -> dict[str, bool]:
    """Whether the CPU has each flag in ``names`` (from /proc/cpuinfo, or the given text; all False where unknown)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return {name: name in flags for name in names}


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
