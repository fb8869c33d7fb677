"""The results contract, the claims files and the ONE verdict rule.

- Each chapter writes ``<results_dir>/<chapter>.json`` (``write_results``; the contract is in
  ARCHITECTURE.md): what it measured, the intervals, the paper's numbers, and which models reached
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

from wbcstudy.hardware import (  # noqa: F401 (re-exported)
    PRECISION_FLAGS,
    cpu_flags,
    cpu_has_native_bf16,
    cpu_model,
    fp32_fallbacks,
)
from wbcstudy.intervals import metric_range
from wbcstudy.paths import project_root
from wbcstudy.paths import results_dir as _results_dir

#: The verdicts, from the one rule in ``verdict``.
OUTCOMES: tuple[str, ...] = ("reproduced", "smaller effect", "exceeded", "not reproduced", "contradicted",
                             "inconclusive", "not comparable")
#: What a claim's ``direction`` may be.
DIRECTIONS: tuple[str, ...] = ("higher", "lower", "close", "beats", "noninferior")


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
    against: list[str] = field(default_factory=list)  #: of ``models``, those on the B side of a difference A − B
    monotone: bool = True  #: False when more training may move the number either way (see ``training_moves``)
    awaits: str = ""  #: for a key no published run measures yet: the run that will (the verdict says so meanwhile)
    runs: int = 1  #: how many runs (folds, seeds) the number pools: above 1 its interval must hold their spread
    comparable: bool = True  #: False when the set-up differs too much to test the claim
    reason: str = ""  #: why not comparable
    substitution: str = ""  #: what differs from the paper's set-up, shown beside the number


_TOP_FIELDS = {"chapter", "source", "cite", "claims"}
#: How an interval was made (a results file's ``interval_kinds``): only "hierarchical" (folds/seeds, then cells
#: within them) holds the run-to-run spread of a number pooled over several runs.
INTERVAL_KINDS: tuple[str, ...] = ("hierarchical", "cells", "wilson", "exact")
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
    for name in ("claim", "where", "reason", "substitution", "awaits"):
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
    if comparable and direction not in {"beats", "noninferior"} and paper_value is None:
        fail(f"direction {direction!r} needs a paper_value")
    models = entry.get("models") or []
    if isinstance(models, str) or not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        fail(f"models must be a list of names, got {models!r}")
    against = entry.get("against") or []
    if isinstance(against, str) or not isinstance(against, list) or not set(against) <= set(models):
        fail(f"against must list some of the claim's models {models!r}, got {against!r}")
    if against and direction not in {"beats", "noninferior", "close"}:
        fail(f"against names the B side of a difference; direction {direction!r} compares no difference")
    monotone = entry.get("monotone", True)
    if not isinstance(monotone, bool):
        fail(f"monotone must be true or false, got {monotone!r}")
    runs = entry.get("runs", 1)
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        fail(f"runs must be a whole number of at least 1, got {runs!r}")
    return Claim(id=cid, claim=entry["claim"] or "", where=entry["where"] or "", paper_value=paper_value, key=key,
                 direction=direction, margin=margin, models=list(models), against=list(against), monotone=monotone,
                 comparable=comparable, reason=reason, substitution=(entry.get("substitution") or "").strip(),
                 awaits=(entry.get("awaits") or "").strip(), runs=runs)


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
            raise ClaimsError(f"{claims_path(chapter, root)}: claim {claim.id!r}: key {claim.key!r} has two paper "
                              f"values ({out[claim.key]} and {claim.paper_value})")
        out[claim.key] = claim.paper_value
    return out


# --------------------------------------------------------------------------- the verdict rule
class Verdict(NamedTuple):
    """One of ``OUTCOMES``, one short sentence with the numbers saying why, and two labels.

    ``bound`` is "lower bound" (or "upper bound" for a lower-is-better number) when a model behind
    the number is short of its plateau and more training could only strengthen the verdict;
    ``cause`` says why an inconclusive verdict is one: "plateau", "width", "missing" or "invalid".
    """

    outcome: str
    why: str
    bound: str = ""
    cause: str = ""


def _f(x: float) -> str:
    return f"{x:.3f}"


def _missing(x: object) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _unconverged(claim: Claim, converged: bool | Mapping[str, bool]) -> list[str]:
    """The models the claim needs that did not reach their plateau (all of them when ``converged`` is False)."""
    if isinstance(converged, Mapping):
        return [model for model in claim.models if not converged.get(model, False)]
    if not converged:
        return list(claim.models) or ["the model"]
    return []


#: What each outcome says of the paper's claim: it holds, it fails, or the data cannot tell.
_FAMILY = {"reproduced": "holds", "smaller effect": "holds", "exceeded": "holds", "not reproduced": "fails",
           "contradicted": "fails", "inconclusive": "open"}


def _judge(claim: Claim, lo: float, hi: float) -> tuple[str, str]:
    """The outcome of a converged measurement with interval [lo, hi], and why (the rule of ``verdict``)."""
    span = f"[{_f(lo)}, {_f(hi)}]"
    d, m = claim.paper_value, float(claim.margin or 0.0)
    if claim.direction == "beats":
        if hi < 0:
            return "contradicted", f"the difference's interval {span} lies below 0: the other side wins"
        if lo > 0:
            if d is None:
                return "reproduced", f"the difference's interval {span} lies above 0"
            if lo > d + m:
                return "exceeded", f"the difference's interval {span} lies above the paper's {_f(d)} + {_f(m)}"
            if hi < d:
                return "smaller effect", (f"the difference's interval {span} lies above 0 but below the paper's "
                                          f"effect {_f(d)}: the sign reproduces, the size does not")
            return "reproduced", f"the difference's interval {span} lies above 0 and holds the paper's {_f(d)}"
        if d is not None and hi < d:
            return "not reproduced", (f"the difference's interval {span} includes 0 and excludes the paper's effect "
                                      f"{_f(d)}")
        if d is None and lo >= -m and hi <= m:
            return "not reproduced", f"the difference's interval {span} lies within ±{_f(m)}: no difference"
        what = f"the paper's effect {_f(d)}" if d is not None else f"values beyond ±{_f(m)}"
        return "inconclusive", f"the difference's interval {span} includes 0 and {what}"
    if claim.direction == "noninferior":
        if lo > -m:
            return "reproduced", f"the difference's interval {span} lies above the non-inferiority margin −{_f(m)}"
        if hi < -m:
            return "not reproduced", f"the difference's interval {span} lies below the non-inferiority margin −{_f(m)}"
        return "inconclusive", f"the difference's interval {span} straddles the non-inferiority margin −{_f(m)}"
    assert d is not None  # load_claims guarantees it for comparable higher/lower/close claims
    low_bar, high_bar = d - m, d + m
    bars = f"the paper's {_f(d)} ± {_f(m)}"
    if claim.direction == "higher":
        if lo > high_bar:
            return "exceeded", f"the interval {span} lies above {bars}"
        if lo >= low_bar:
            return "reproduced", f"the interval {span} starts at or above {_f(d)} − {_f(m)} = {_f(low_bar)}"
        if hi < low_bar:
            return "not reproduced", f"the interval {span} lies below {_f(d)} − {_f(m)} = {_f(low_bar)}"
        return "inconclusive", f"the interval {span} straddles {_f(d)} − {_f(m)} = {_f(low_bar)}"
    if claim.direction == "lower":
        if hi < low_bar:
            return "exceeded", f"the interval {span} lies below {bars}"
        if hi <= high_bar:
            return "reproduced", f"the interval {span} ends at or below {_f(d)} + {_f(m)} = {_f(high_bar)}"
        if lo > high_bar:
            return "not reproduced", f"the interval {span} lies above {_f(d)} + {_f(m)} = {_f(high_bar)}"
        return "inconclusive", f"the interval {span} straddles {_f(d)} + {_f(m)} = {_f(high_bar)}"
    window = f"[{_f(low_bar)}, {_f(high_bar)}]"
    if lo >= low_bar and hi <= high_bar:
        return "reproduced", f"the interval {span} lies within {bars} = {window}"
    if hi < low_bar or lo > high_bar:
        return "not reproduced", f"the interval {span} lies outside {bars} = {window}"
    return "inconclusive", f"the interval {span} is not inside {bars} = {window}"


def training_moves(claim: Claim, model: str) -> int:
    """How more training of ``model`` moves the claim's number: +1 up, −1 down, 0 either way.

    A model's validation-selected metric is taken as non-decreasing in training. So a number of
    the model itself (higher, close) or a difference with it on the winning side rises (+1);
    with it on the ``against`` side (the B of A − B) the number falls (−1); a lower-is-better
    number moves the other way. A claim marked ``monotone: false`` (a calibration error, a
    two-sample test) may move either way (0).
    """
    if not claim.monotone:
        return 0
    sign = -1 if claim.direction == "lower" else 1
    return -sign if model in claim.against else sign


def _reachable(claim: Claim, lo: float, hi: float, direction: int) -> list[str]:
    """The outcomes of [lo, hi] shifted ever further in ``direction`` (+1 up, −1 down), nearest first: each
    threshold the interval's ends can cross is crossed once."""
    d, m = claim.paper_value or 0.0, float(claim.margin or 0.0)
    shifts = {0.0, 1e6}
    for t in {0.0, -m, m, d - m, d, d + m}:
        for end in (lo, hi):
            gap = (t - end) * direction
            if gap >= 0:
                shifts.update({gap, gap + 1e-9})
    return [_judge(claim, lo + direction * s, hi + direction * s)[0] for s in sorted(shifts)]


def verdict(claim: Claim, value: float | None, interval: tuple[float, float] | list[float] | None,
            converged: bool | Mapping[str, bool] = True, interval_kind: str | None = None) -> Verdict:
    """The one verdict rule (v2): a claim, its measured value, its 95 % interval and convergence → ``Verdict``.

    ``converged`` is a bool for the claim's models together, or the results' ``plateau`` dict
    ``{model: reached}`` (a model the claim lists that is missing from it counts as not converged).
    With d the paper's value (for a comparison: the paper's effect A − B), m the margin and [lo, hi]
    the interval:

    - higher: lo > d+m exceeded; lo ≥ d−m reproduced; hi < d−m not reproduced; else inconclusive;
    - lower: hi < d−m exceeded; hi ≤ d+m reproduced; lo > d+m not reproduced; else inconclusive;
    - close: [lo, hi] ⊆ [d−m, d+m] reproduced; hi < d−m or lo > d+m not reproduced; else inconclusive;
    - beats (the key is a difference A − B): hi < 0 contradicted. Above 0: lo > d+m exceeded,
      hi < d "smaller effect" (the sign reproduces, the paper's effect is excluded), else
      reproduced. Including 0: hi < d not reproduced (the paper's effect is excluded); without a
      paper effect, [lo, hi] ⊆ [−m, m] not reproduced (no difference); else inconclusive;
    - noninferior ("A as well as B", the key A − B, m the non-inferiority margin): lo > −m
      reproduced; hi < −m not reproduced; else inconclusive.

    Plateau by direction: a model short of its plateau makes the verdict inconclusive only when
    more training could change what it says of the claim (holds / fails / open). Training is taken
    to move the number one way (``training_moves``); if every outcome along that way says the
    same, the verdict stands, marked as a bound. Models on both sides short of their plateau, or
    a claim whose number may move either way, leave it inconclusive.

    Before that: not comparable claims, unmeasured values, missing intervals and invalid intervals
    (outside the metric's range, or not containing the value; for a number pooled over ``claim.runs``
    > 1 folds or seeds, any interval but a hierarchical one, whose ``interval_kind`` the results
    record) are "not comparable" or "inconclusive".
    """
    if not claim.comparable:
        return Verdict("not comparable", claim.reason)
    if _missing(value):
        return Verdict("inconclusive", f"not measured yet: awaits {claim.awaits}" if claim.awaits else "not measured",
                       cause="missing")
    if interval is None or len(interval) != 2 or any(_missing(x) for x in interval):
        return Verdict("inconclusive", "no interval", cause="missing")
    value = float(value)  # type: ignore[arg-type]
    lo, hi = float(interval[0]), float(interval[1])
    span = f"[{_f(lo)}, {_f(hi)}]"
    eps = 1e-9
    if lo > hi:
        return Verdict("inconclusive", f"invalid interval {span}: its low end is above its high end", cause="invalid")
    valid = metric_range(claim.key or "")
    if valid is not None and (lo < valid[0] - eps or hi > valid[1] + eps):
        return Verdict("inconclusive",
                       f"invalid interval {span}: it leaves the metric's range [{valid[0]:g}, {valid[1]:g}]",
                       cause="invalid")
    if not lo - eps <= value <= hi + eps:
        return Verdict("inconclusive", f"invalid interval {span}: it does not contain the value {_f(value)}",
                       cause="invalid")
    if claim.runs > 1 and interval_kind != "hierarchical":
        made = f"made over {interval_kind}" if interval_kind else "not recorded as hierarchical"
        return Verdict("inconclusive", f"the interval {span} is {made}: it leaves out the spread over the {claim.runs} "
                       "runs (folds or seeds) the number pools", cause="invalid")
    outcome, why = _judge(claim, lo, hi)
    short = _unconverged(claim, converged)
    if not short:
        return Verdict(outcome, why, cause="width" if outcome == "inconclusive" else "")
    names = ", ".join(short) + (" short of their plateaus" if len(short) > 1 else " short of its plateau")
    moves = {training_moves(claim, model) for model in short}
    if outcome == "inconclusive" or 0 in moves or len(moves) > 1:
        way = "either way" if (0 in moves or len(moves) > 1) else ("up" if moves == {1} else "down")
        return Verdict("inconclusive", f"{names} (more training moves the number {way}); {why}", cause="plateau")
    (direction,) = moves
    others = [o for o in _reachable(claim, lo, hi, direction) if _FAMILY[o] != _FAMILY[outcome]]
    if others:
        # the nearest decided outcome it could reach
        could = next((o for o in others if o != "inconclusive"), others[0])
        return Verdict("inconclusive", f"{names}: more training could make it {could}; {why}", cause="plateau")
    kind = "upper bound" if claim.direction == "lower" else "lower bound"
    if claim.direction in {"beats", "noninferior", "close"}:
        kind = "lower bound" if direction > 0 else "upper bound"
    return Verdict(outcome, f"{why} ({names}: more training only moves the number "
                            f"{'up' if direction > 0 else 'down'}, which keeps the verdict)", bound=kind)


def claims_table(chapter: str, results: dict | None = None, results_dir: str = "book/results",
                 root: str | Path | None = None) -> pd.DataFrame:
    """Paper vs reproduction for every claim of ``chapter``: one row per claim id, with its verdict and why.

    ``results`` is the chapter's results dict (``load_results``); when None it is read from
    ``results_dir``. Columns: claim, where, paper, reproduction, 95% CI, verdict, why, substitution, bound
    ("lower bound" where a model short of its plateau could only strengthen the verdict) and cause (why an
    inconclusive one is: plateau, width, missing or invalid).
    """
    if results is None:
        results = load_results(chapter, results_dir)
    metrics, cis, plateau = results.get("metrics", {}), results.get("ci", {}), results.get("plateau", {}) or {}
    kinds = results.get("interval_kinds") or {}
    rows = []
    for claim in load_claims(chapter, root):
        value = metrics.get(claim.key) if claim.key else None
        interval = cis.get(claim.key) if claim.key else None
        outcome, why, bound, cause = verdict(claim, value, interval, plateau, kinds.get(claim.key or ""))
        rows.append({
            "id": claim.id, "claim": claim.claim, "where": claim.where,
            "paper": "—" if claim.paper_value is None else _f(claim.paper_value),
            "reproduction": "—" if _missing(value) else _f(float(value)),
            "95% CI": ("—" if interval is None or any(_missing(x) for x in interval)
                       else f"[{_f(interval[0])}, {_f(interval[1])}]"),
            "verdict": outcome, "why": why, "substitution": claim.substitution, "bound": bound, "cause": cause,
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


def _interval_kinds(kinds: dict[str, str], ci: dict) -> dict[str, str]:
    """``kinds`` checked: each names an interval that was given, and one of ``INTERVAL_KINDS``."""
    for key, kind in kinds.items():
        if key not in ci:
            raise ValueError(f"interval kind given for {key!r}, which has no interval")
        if kind not in INTERVAL_KINDS:
            raise ValueError(f"interval kind {kind!r} of {key!r} is not one of {', '.join(INTERVAL_KINDS)}")
    return dict(kinds)


def write_results(chapter: str, profile: str, seconds: float, metrics: dict, ci: dict | None = None,
                  paper: dict | None = None, results_dir: str = "book/results", extra: dict | None = None,
                  plateau: dict[str, bool] | None = None, interval_kinds: dict[str, str] | None = None,
                  data_sets: dict | None = None) -> Path:
    """Write a chapter's results JSON (the contract in ARCHITECTURE.md) and return its path.

    ``paper=None`` takes the paper's numbers from ``book/claims/<chapter>.yml`` (none without
    that file); ``plateau`` records, per model, whether it reached its plateau
    (``wbcstudy.train.reached_plateau``), which the verdicts of claims listing that model need;
    ``interval_kinds`` records how each interval was made (``INTERVAL_KINDS``): a claim that pools several
    runs needs "hierarchical". ``data_sets`` records, per trained model, the manifest selections it trained,
    validated and was scored on (``wbcstudy.data.leaks``); a model scored on an image of its own training or
    validation data (by content hash) is refused here, before anything is written.
    """
    missing = sorted(set(ci or {}) - set(metrics))
    if missing:
        raise ValueError(f"confidence intervals given for metrics that were not measured: {missing}")
    if data_sets:
        from wbcstudy.data.leaks import LeakError, leak_sentence, shared_images

        leaks = shared_images(data_sets)
        if leaks:
            raise LeakError(f"{chapter}: " + "; ".join(leak_sentence(leak) for leak in leaks))
    if paper is None:
        paper = paper_values(chapter) if claims_path(chapter).is_file() else {}
    record = {"chapter": chapter, "profile": profile, "seconds": round(float(seconds), 1), "commit": git_commit(),
              "metrics": _clean(metrics), "ci": _clean(ci or {}), "paper": _clean(paper),
              "plateau": {str(k): bool(v) for k, v in (plateau or {}).items()},
              "interval_kinds": _interval_kinds(interval_kinds or {}, ci or {}),
              **({"data_sets": data_sets} if data_sets else {}),
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

    from wbcstudy.train import forced_precision

    out["cpu_count"] = str(os.cpu_count())
    out["cpu_model"] = cpu_model()
    out["cpu_native_bf16"] = "yes (AVX512-BF16 or AMX)" if cpu_has_native_bf16() else "no"
    out["precision_forced"] = forced_precision() or "no (auto)"
    fallbacks = fp32_fallbacks()
    out["fp32_inside_bf16"] = ", ".join(fallbacks) + " (no bf16 kernel on this CPU)" if fallbacks else "none"
    return out
