"""Claims files, the one verdict rule (every outcome of every direction, by hand), the claims table, the plateau test."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from wbcstudy.results import (
    OUTCOMES,
    Claim,
    ClaimsError,
    Verdict,
    claims_table,
    load_claims,
    load_results,
    paper_values,
    verdict,
    write_results,
)
from wbcstudy.train import reached_plateau

EXAMPLE = """\
chapter: demo
source: "Author et al. 2020, Journal"
cite: author2020
claims:
  - id: demo_balanced_accuracy
    claim: "The model reaches 97% balanced accuracy"
    where: "Table 3"
    paper_value: 0.97
    key: demo_balanced_accuracy
    direction: higher
    margin: 0.02
    models: [demo_model]
    substitution: "64 px instead of 128 px"
  - id: demo_c2st
    claim: "Generated cells are indistinguishable from real ones"
    where: "Section 4.2"
    paper_value: 0.523
    key: c2st_accuracy
    direction: close
    margin: 0.05
  - id: demo_beats
    claim: "The model beats ResNet50"
    where: "Table 4"
    paper_value: null
    key: demo_minus_resnet50_balanced_accuracy
    direction: beats
    margin: 0.01
  - id: demo_hardware
    claim: "It runs in 10 ms per cell on the authors' microscope PC"
    where: "Section 5"
    paper_value: 0.01
    key: null
    direction: lower
    margin: null
    comparable: false
    reason: "the authors' hardware is not described"
"""


def _write_claims(root: Path, text: str = EXAMPLE, chapter: str = "demo") -> Path:
    path = root / "book" / "claims" / f"{chapter}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _claim(direction: str, paper_value: float | None, margin: float, key: str = "x_accuracy", **kw) -> Claim:
    return Claim(id="c", claim="a claim", where="Table 1", paper_value=paper_value, key=key, direction=direction,
                 margin=margin, **kw)


# --------------------------------------------------------------------------- loading
def test_load_claims_reads_the_example(tmp_path):
    _write_claims(tmp_path)
    claims = load_claims("demo", root=tmp_path)
    assert [c.id for c in claims] == ["demo_balanced_accuracy", "demo_c2st", "demo_beats", "demo_hardware"]
    first = claims[0]
    assert (first.paper_value, first.key, first.direction, first.margin) == (0.97, "demo_balanced_accuracy", "higher", 0.02)
    assert first.models == ["demo_model"] and first.comparable and first.substitution == "64 px instead of 128 px"
    assert claims[2].paper_value is None and claims[2].models == []
    assert not claims[3].comparable and claims[3].reason == "the authors' hardware is not described"
    assert paper_values("demo", root=tmp_path) == {"demo_balanced_accuracy": 0.97, "c2st_accuracy": 0.523}


@pytest.mark.parametrize("old,new,message", [
    ("    margin: 0.02\n", "    margin: 0.02\n    colour: red\n", "claim 'demo_balanced_accuracy': unknown field 'colour'"),
    ("direction: close", "direction: similar", "claim 'demo_c2st': direction 'similar' is not one of"),
    ("    key: c2st_accuracy\n", "", "claim 'demo_c2st': missing field 'key'"),
    ("    margin: 0.01\n", "", "claim 'demo_beats': missing field 'margin'"),
    ("    margin: 0.05\n", "    margin: null\n", "claim 'demo_c2st': margin must be a number"),
    ("id: demo_c2st", "id: demo_balanced_accuracy", "claim 'demo_balanced_accuracy': duplicate id"),
    ('    reason: "the authors\' hardware is not described"\n', "", "claim 'demo_hardware': comparable is false but no reason"),
    ("paper_value: 0.523", "paper_value: null", "claim 'demo_c2st': direction 'close' needs a paper_value"),
    ("paper_value: 0.523", "paper_value: high", "claim 'demo_c2st': paper_value must be a number"),
    ("margin: 0.05", "margin: -0.05", "claim 'demo_c2st': margin must not be negative"),
    ("models: [demo_model]", "models: demo_model", "claim 'demo_balanced_accuracy': models must be a list"),
    ("cite: author2020", "cite: author2020\nyear: 2020", "unknown top-level field 'year'"),
    ("chapter: demo", "chapter: other", "chapter is 'other', expected 'demo'"),
])
def test_load_claims_errors_are_one_line_naming_file_and_claim(tmp_path, old, new, message):
    assert old in EXAMPLE
    path = _write_claims(tmp_path, EXAMPLE.replace(old, new, 1))
    with pytest.raises(ClaimsError) as info:
        load_claims("demo", root=tmp_path)
    text = str(info.value)
    assert "\n" not in text and text.startswith(str(path)) and message in text


def test_missing_claims_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no claims file for chapter 'nope'"):
        load_claims("nope", root=tmp_path)


# --------------------------------------------------------------------------- the verdict rule
# d = paper value, m = margin, [lo, hi] = interval; each case is worked out by hand in its comment.
HIGHER = [  # d = 0.90, m = 0.02: bars at 0.88 and 0.92
    ((0.95, (0.93, 0.97)), "exceeded"),        # lo 0.93 > 0.92
    ((0.90, (0.88, 0.93)), "reproduced"),      # lo 0.88 >= 0.88 (boundary), not > 0.92
    ((0.91, (0.89, 0.95)), "reproduced"),      # lo 0.89 in [0.88, 0.92]
    ((0.80, (0.78, 0.85)), "not reproduced"),  # hi 0.85 < 0.88
    ((0.87, (0.84, 0.90)), "inconclusive"),    # lo 0.84 < 0.88 <= hi 0.90
]
LOWER = [  # d = 0.10, m = 0.02: bars at 0.08 and 0.12
    ((0.05, (0.03, 0.07)), "exceeded"),        # hi 0.07 < 0.08
    ((0.10, (0.06, 0.12)), "reproduced"),      # hi 0.12 <= 0.12 (boundary), not < 0.08
    ((0.20, (0.15, 0.25)), "not reproduced"),  # lo 0.15 > 0.12
    ((0.12, (0.09, 0.16)), "inconclusive"),    # lo 0.09 <= 0.12 < hi 0.16
]
CLOSE = [  # d = 0.50, m = 0.05: window [0.45, 0.55]
    ((0.50, (0.46, 0.54)), "reproduced"),      # inside
    ((0.50, (0.45, 0.55)), "reproduced"),      # the window itself
    ((0.70, (0.60, 0.80)), "not reproduced"),  # lo 0.60 > 0.55
    ((0.30, (0.20, 0.40)), "not reproduced"),  # hi 0.40 < 0.45
    ((0.52, (0.40, 0.60)), "inconclusive"),    # overlaps and reaches out on both sides
    ((0.54, (0.50, 0.58)), "inconclusive"),    # overlaps, reaches out above
]
BEATS = [  # key A − B, d = null, m = 0.01
    ((0.05, (0.02, 0.08)), "reproduced"),      # lo 0.02 > 0
    ((-0.05, (-0.08, -0.02)), "contradicted"),  # hi -0.02 < 0
    ((0.0, (-0.008, 0.009)), "not reproduced"),  # inside [-0.01, 0.01]: no difference
    ((0.01, (-0.02, 0.04)), "inconclusive"),   # includes 0, reaches beyond ±0.01
]


@pytest.mark.parametrize("case,outcome", HIGHER)
def test_verdict_higher(case, outcome):
    assert verdict(_claim("higher", 0.90, 0.02), *case).outcome == outcome


@pytest.mark.parametrize("case,outcome", LOWER)
def test_verdict_lower(case, outcome):
    assert verdict(_claim("lower", 0.10, 0.02, key="x_ece"), *case).outcome == outcome


@pytest.mark.parametrize("case,outcome", CLOSE)
def test_verdict_close(case, outcome):
    assert verdict(_claim("close", 0.50, 0.05), *case).outcome == outcome


@pytest.mark.parametrize("case,outcome", BEATS)
def test_verdict_beats(case, outcome):
    assert verdict(_claim("beats", None, 0.01, key="a_minus_b_accuracy"), *case).outcome == outcome


def test_verdict_beats_with_a_paper_difference():
    claim = _claim("beats", 0.05, 0.01, key="a_minus_b_accuracy")  # paper: A beats B by 0.05; bar at 0.06
    assert verdict(claim, 0.10, (0.07, 0.13)).outcome == "exceeded"     # lo 0.07 > 0.06
    assert verdict(claim, 0.05, (0.03, 0.07)).outcome == "reproduced"   # lo 0.03 > 0, not > 0.06
    assert verdict(claim, -0.05, (-0.07, -0.03)).outcome == "contradicted"


def test_verdict_gates_before_the_rule():
    claim = _claim("higher", 0.90, 0.02, models=["cnn"])
    good = (0.95, (0.93, 0.97))
    assert verdict(claim, *good) == Verdict("exceeded", verdict(claim, *good).why)
    assert verdict(_claim("higher", 0.9, 0.02, comparable=False, reason="other stain"), *good) == \
        Verdict("not comparable", "other stain")
    assert verdict(claim, None, (0.9, 0.95)) == Verdict("inconclusive", "not measured")
    assert verdict(claim, float("nan"), (0.9, 0.95)) == Verdict("inconclusive", "not measured")
    assert verdict(claim, 0.95, None) == Verdict("inconclusive", "no interval")
    assert verdict(claim, 0.95, [None, None]) == Verdict("inconclusive", "no interval")
    assert verdict(claim, *good, converged=False) == Verdict("inconclusive", "cnn did not reach its plateau")
    assert verdict(claim, *good, converged={"cnn": False}) == Verdict("inconclusive", "cnn did not reach its plateau")
    assert verdict(claim, *good, converged={}) == Verdict("inconclusive", "cnn did not reach its plateau")
    assert verdict(claim, *good, converged={"cnn": True}).outcome == "exceeded"
    # a claim that lists no models does not depend on the plateau record
    assert verdict(_claim("higher", 0.90, 0.02), *good, converged={}).outcome == "exceeded"
    # an interval that does not contain its value cannot carry a verdict
    assert verdict(claim, 0.99, (0.93, 0.97), {"cnn": True}).outcome == "inconclusive"
    assert set(OUTCOMES) == {"reproduced", "exceeded", "not reproduced", "contradicted", "inconclusive", "not comparable"}


def test_verdict_why_carries_the_numbers():
    outcome, why = verdict(_claim("higher", 0.90, 0.02), 0.80, (0.78, 0.85))
    assert outcome == "not reproduced" and "[0.780, 0.850]" in why and "0.880" in why
    assert "\n" not in why


def test_three_mislabelled_cases_from_the_issue():
    # W-Net paper: AlexNet reaches 0.84; we measured 0.290 with a t-interval over folds [-0.46, 1.04]
    alexnet = _claim("higher", 0.84, 0.03, key="alexnet_balanced_accuracy")
    outcome, why = verdict(alexnet, 0.290, (-0.46, 1.04))
    assert outcome == "inconclusive" and "range" in why
    # CytoDiffusion: a two-sample test at chance (0.523) means indistinguishable; 1.000 means fully distinguishable
    c2st = _claim("close", 0.523, 0.05, key="c2st_accuracy")
    assert verdict(c2st, 1.0, (1.0, 1.0)).outcome == "not reproduced"
    # "deep networks fail": W-Net beats ResNet50, yet W-Net − ResNet50 = -0.198 [-0.25, -0.15]
    wnet_beats = _claim("beats", None, 0.02, key="wnet_minus_resnet50_balanced_accuracy")
    assert verdict(wnet_beats, -0.198, (-0.25, -0.15)).outcome == "contradicted"


# --------------------------------------------------------------------------- table and results files
def test_claims_table_and_write_results_take_the_paper_from_the_claims(tmp_path, monkeypatch):
    monkeypatch.setenv("WBCSTUDY_ROOT", str(tmp_path))
    _write_claims(tmp_path)
    metrics = {"demo_balanced_accuracy": 0.955, "c2st_accuracy": 1.0, "demo_minus_resnet50_balanced_accuracy": -0.198}
    ci = {"demo_balanced_accuracy": (0.951, 0.959), "c2st_accuracy": (1.0, 1.0),
          "demo_minus_resnet50_balanced_accuracy": (-0.25, -0.15)}
    path = write_results("demo", "smoke", 2.0, metrics, ci, plateau={"demo_model": True}, results_dir=str(tmp_path / "res"))
    res = json.loads(path.read_text())
    assert res["paper"] == {"demo_balanced_accuracy": 0.97, "c2st_accuracy": 0.523}
    assert res["plateau"] == {"demo_model": True}
    table = claims_table("demo", res)
    assert list(table.columns) == ["claim", "where", "paper", "reproduction", "95% CI", "verdict", "why", "substitution"]
    assert list(table.index) == ["demo_balanced_accuracy", "demo_c2st", "demo_beats", "demo_hardware"]
    row = table.loc["demo_balanced_accuracy"]
    assert (row["paper"], row["reproduction"], row["95% CI"], row["verdict"]) == ("0.970", "0.955", "[0.951, 0.959]", "reproduced")
    assert row["substitution"] == "64 px instead of 128 px"
    assert table.loc["demo_c2st", "verdict"] == "not reproduced"
    assert (table.loc["demo_beats", "paper"], table.loc["demo_beats", "verdict"]) == ("—", "contradicted")
    assert (table.loc["demo_hardware", "verdict"], table.loc["demo_hardware", "reproduction"]) == ("not comparable", "—")
    # without the plateau record the claim that needs it is inconclusive; read from results_dir when results is None
    write_results("demo", "smoke", 2.0, metrics, ci, results_dir=str(tmp_path / "res"))
    table = claims_table("demo", results_dir=str(tmp_path / "res"))
    assert table.loc["demo_balanced_accuracy", "verdict"] == "inconclusive"
    assert table.loc["demo_balanced_accuracy", "why"] == "demo_model did not reach its plateau"
    # an explicit paper dict still wins; a chapter without a claims file gets an empty one
    write_results("demo", "smoke", 1.0, metrics, paper={"x": 1.0}, results_dir=str(tmp_path / "res"))
    assert load_results("demo", str(tmp_path / "res"))["paper"] == {"x": 1.0}
    write_results("other", "smoke", 1.0, {"a": 1}, results_dir=str(tmp_path / "res"))
    assert load_results("other", str(tmp_path / "res"))["paper"] == {}


def test_paper_values_rejects_two_numbers_for_one_key(tmp_path):
    text = EXAMPLE.replace("key: c2st_accuracy", "key: demo_balanced_accuracy")
    _write_claims(tmp_path, text)
    with pytest.raises(ClaimsError, match="two paper values"):
        paper_values("demo", root=tmp_path)


# --------------------------------------------------------------------------- plateau
@pytest.mark.parametrize("values,expected", [
    ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], False),   # still rising: +0.1 an epoch
    ([0.5, 0.8, 0.9, 0.9, 0.9, 0.9], True),             # flat for the last three epochs
    ([0.5, 0.9, 0.905, 0.895, 0.9, 0.902], True),       # noisy flat: best 0.902 vs 0.905 before, within 0.01
    ([0.5, 0.6, 0.7], False),                           # too short: fewer than window + 1 values
    ([0.7, 0.6, 0.7, 0.705], True),                     # just long enough (window + 1): 0.705 − 0.7 < 0.01
    ([0.5, 0.6, 0.7, 0.705], False),                    # as long, but the window gained 0.205 over 0.5
    ([0.9, 0.9, 0.5, 0.5, 0.5], False),                 # fell away from its best
    ([0.5, 0.88, 0.9, 0.9, 0.905, 0.92], False),        # the last epochs still gain 0.02
])
def test_reached_plateau_hand_sequences(values, expected):
    assert reached_plateau(values) is expected


def test_reached_plateau_for_losses_and_windows():
    assert reached_plateau([1.0, 0.5, 0.3, 0.3, 0.3, 0.3], mode="min") is True
    assert reached_plateau([1.0, 0.8, 0.6, 0.4, 0.2, 0.1], mode="min") is False
    assert reached_plateau([0.9, 0.5, 0.9], window=2) is True    # before: 0.9; last two: 0.9
    assert reached_plateau([0.9, 0.5, 0.9], window=3) is False   # too short for a window of 3
    assert reached_plateau([0.9, float("nan"), 0.9, 0.9, 0.9]) is True  # a NaN epoch is ignored
    with pytest.raises(ValueError, match="mode"):
        reached_plateau([1, 2, 3, 4], mode="best")



def test_cpu_flags_read_the_flags_line():
    from wbcstudy.results import cpu_flags

    text = "processor\t: 0\nmodel name\t: X\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n"
    assert cpu_flags(("avx2", "avx512_bf16", "amx_bf16"), cpuinfo=text) == {"avx2": True, "avx512_bf16": True,
                                                                             "amx_bf16": False}
    assert cpu_flags(("avx2",), cpuinfo="") == {"avx2": False}
