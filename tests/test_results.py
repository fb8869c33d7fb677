"""Claims files, the one verdict rule (every outcome of every direction, by hand), the claims table, the plateau
test."""
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
    assert (first.paper_value, first.key, first.direction, first.margin) == (0.97, "demo_balanced_accuracy", "higher",
                                                                             0.02)
    assert first.models == ["demo_model"] and first.comparable and first.substitution == "64 px instead of 128 px"
    assert claims[2].paper_value is None and claims[2].models == []
    assert not claims[3].comparable and claims[3].reason == "the authors' hardware is not described"
    assert paper_values("demo", root=tmp_path) == {"demo_balanced_accuracy": 0.97, "c2st_accuracy": 0.523}


@pytest.mark.parametrize("old,new,message", [
    ("    margin: 0.02\n", "    margin: 0.02\n    colour: red\n",
     "claim 'demo_balanced_accuracy': unknown field 'colour'"),
    ("direction: close", "direction: similar", "claim 'demo_c2st': direction 'similar' is not one of"),
    ("    key: c2st_accuracy\n", "", "claim 'demo_c2st': missing field 'key'"),
    ("    margin: 0.01\n", "", "claim 'demo_beats': missing field 'margin'"),
    ("    margin: 0.05\n", "    margin: null\n", "claim 'demo_c2st': margin must be a number"),
    ("id: demo_c2st", "id: demo_balanced_accuracy", "claim 'demo_balanced_accuracy': duplicate id"),
    ('    reason: "the authors\' hardware is not described"\n', "",
     "claim 'demo_hardware': comparable is false but no reason"),
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
    assert verdict(claim, None, (0.9, 0.95)) == Verdict("inconclusive", "not measured", cause="missing")
    assert verdict(claim, float("nan"), (0.9, 0.95)) == Verdict("inconclusive", "not measured", cause="missing")
    assert verdict(claim, 0.95, None) == Verdict("inconclusive", "no interval", cause="missing")
    assert verdict(claim, 0.95, [None, None]) == Verdict("inconclusive", "no interval", cause="missing")
    assert verdict(claim, *good, converged={"cnn": True}).outcome == "exceeded"
    # a claim that lists no models does not depend on the plateau record
    assert verdict(_claim("higher", 0.90, 0.02), *good, converged={}).outcome == "exceeded"
    # an interval that does not contain its value cannot carry a verdict
    assert verdict(claim, 0.99, (0.93, 0.97), {"cnn": True})[::3] == ("inconclusive", "invalid")
    assert set(OUTCOMES) == {"reproduced", "smaller effect", "exceeded", "not reproduced", "contradicted",
                             "inconclusive", "not comparable"}


# --------------------------------------------------------------------------- v2: plateau by direction
def test_unconverged_model_past_a_higher_bar_is_a_lower_bound():
    """trust_cnn_accuracy 0.979 [0.970, 0.986] against 0.95 ± 0.02, CNN short of its plateau: training only adds."""
    claim = _claim("higher", 0.95, 0.02, models=["cnn"])
    for converged in (False, {"cnn": False}, {}):
        got = verdict(claim, 0.979, (0.970, 0.986), converged)
        assert (got.outcome, got.bound, got.cause) == ("reproduced", "lower bound", "")
        assert "cnn short of its plateau" in got.why and "[0.970, 0.986]" in got.why


def test_unconverged_model_below_its_bar_stays_inconclusive():
    claim = _claim("higher", 0.90, 0.02, models=["cnn"])
    for case in [(0.80, (0.78, 0.85)), (0.87, (0.84, 0.90))]:  # not reproduced / straddling when converged
        got = verdict(claim, *case, converged={"cnn": False})
        assert (got.outcome, got.cause, got.bound) == ("inconclusive", "plateau", "")
    assert verdict(claim, 0.80, (0.78, 0.85), {"cnn": True}).outcome == "not reproduced"  # the rule can say no


def test_unconverged_winner_keeps_its_verdict_and_unconverged_loser_does_not():
    # trust_frozen_imagenet_beats_cnn: frozen − CNN = −0.148 [−0.171, −0.125]; the CNN (the B side) is the
    # unconverged *winner*: more training only widens the gap, so the claim stays contradicted
    claim = _claim("beats", None, 0.02, key="frozen_minus_cnn_accuracy", models=["cnn", "frozen"], against=["cnn"])
    got = verdict(claim, -0.148, (-0.171, -0.125), {"cnn": False, "frozen": True})
    assert (got.outcome, got.bound) == ("contradicted", "upper bound")
    # the unconverged side is the loser (A = frozen, losing): more training could close the gap → inconclusive
    got = verdict(claim, -0.148, (-0.171, -0.125), {"cnn": True, "frozen": False})
    assert (got.outcome, got.cause) == ("inconclusive", "plateau") and "could make it" in got.why
    # A wins and is the one short of its plateau: the win stands, as a lower bound
    got = verdict(claim, 0.05, (0.02, 0.08), {"cnn": True, "frozen": False})
    assert (got.outcome, got.bound) == ("reproduced", "lower bound")
    # A wins, the loser B is short of its plateau: training B could erase the win
    assert verdict(claim, 0.05, (0.02, 0.08), {"cnn": False, "frozen": True}).cause == "plateau"
    # both sides short of their plateau: the number may move either way
    got = verdict(claim, -0.148, (-0.171, -0.125), {})
    assert (got.outcome, got.cause) == ("inconclusive", "plateau") and "either way" in got.why


def test_lower_is_better_number_of_an_unconverged_model_is_an_upper_bound():
    claim = _claim("lower", 0.10, 0.02, key="x_error", models=["m"])
    got = verdict(claim, 0.09, (0.07, 0.11), {"m": False})  # hi 0.11 ≤ 0.12: reproduced, training only lowers it
    assert (got.outcome, got.bound) == ("reproduced", "upper bound")
    assert verdict(claim, 0.20, (0.15, 0.25), {"m": False}).cause == "plateau"  # above the bar: could come down


def test_a_number_that_may_move_either_way_stays_inconclusive_when_unconverged():
    claim = _claim("lower", 0.05, 0.02, key="x_ece", models=["m"], monotone=False)
    assert verdict(claim, 0.03, (0.02, 0.04), {"m": True}).outcome == "reproduced"
    got = verdict(claim, 0.03, (0.02, 0.04), {"m": False})
    assert (got.outcome, got.cause) == ("inconclusive", "plateau") and "either way" in got.why


def test_close_claim_unconverged_inside_its_window_is_open_above_it_is_not_reproduced():
    claim = _claim("close", 0.44, 0.05, models=["vgg16"])  # W-Net's paper: VGG16 reaches only 0.44
    assert verdict(claim, 0.45, (0.42, 0.47), {"vgg16": False}).cause == "plateau"  # could rise out of the window
    got = verdict(claim, 0.90, (0.88, 0.92), {"vgg16": False})  # already above it: training only rises further
    assert (got.outcome, got.bound) == ("not reproduced", "lower bound")


# --------------------------------------------------------------------------- v2: the paper's effect size
EFFECTS = [  # key A − B, paper's effect d = 0.10, margin 0.02
    ((0.10, (0.07, 0.13)), "reproduced"),       # above 0, holds 0.10
    ((0.05, (0.03, 0.07)), "smaller effect"),   # above 0, excludes 0.10 from below
    ((0.20, (0.15, 0.25)), "exceeded"),         # lo 0.15 > 0.12
    ((0.01, (-0.02, 0.04)), "not reproduced"),  # includes 0, excludes 0.10
    ((0.05, (-0.01, 0.11)), "inconclusive"),    # includes 0 and 0.10
    ((-0.05, (-0.08, -0.02)), "contradicted"),  # below 0
]


@pytest.mark.parametrize("case,outcome", EFFECTS)
def test_beats_judged_against_the_papers_effect(case, outcome):
    assert verdict(_claim("beats", 0.10, 0.02, key="a_minus_b_accuracy"), *case).outcome == outcome


def test_effect_size_cases_from_the_issue():
    # W-Net over ResNet50: +0.042 [0.023, 0.063] against the paper's gap of about 0.46: the sign, not the effect
    wnet = _claim("beats", 0.46, 0.02, key="wnet_minus_resnet50_balanced_accuracy", models=["wnet", "resnet50"],
                  against=["resnet50"])
    assert verdict(wnet, 0.042, (0.023, 0.063), {"wnet": True, "resnet50": True}).outcome == "smaller effect"
    assert verdict(wnet, 0.042, (0.023, 0.063), {"wnet": True, "resnet50": False}).cause == "plateau"
    # ResNeXt-CC fusion 5-1 over 5-2: −0.001 [−0.013, 0.013] holds the paper's +0.0059: inconclusive, not "not
    # reproduced"
    fusion = _claim("beats", 0.0059, 0.02, key="fusion_minus_fusion52_balanced_accuracy")
    assert verdict(fusion, -0.001, (-0.013, 0.013)).outcome == "inconclusive"
    # ECA over pooling: −0.009 [−0.028, 0.010], both at plateau: the paper's +0.0199 is excluded → not reproduced
    eca = _claim("beats", 0.0199, 0.02, key="eca_minus_pool_balanced_accuracy", models=["full", "pool"],
                 against=["pool"])
    got = verdict(eca, -0.009, (-0.028, 0.010), {"full": True, "pool": True})
    assert got.outcome == "not reproduced" and "0.020" in got.why


NONINFERIOR = [  # "A as well as B": key A − B, non-inferiority margin 0.02
    ((0.00, (-0.015, 0.02)), "reproduced"),      # lo −0.015 > −0.02
    ((0.03, (0.01, 0.05)), "reproduced"),        # superior is also non-inferior
    ((-0.05, (-0.08, -0.03)), "not reproduced"),  # hi −0.03 < −0.02: inferior
    ((-0.01, (-0.04, 0.01)), "inconclusive"),    # straddles −0.02
]


@pytest.mark.parametrize("case,outcome", NONINFERIOR)
def test_noninferiority(case, outcome):
    assert verdict(_claim("noninferior", None, 0.02, key="a_minus_b_balanced_accuracy"), *case).outcome == outcome


def test_claims_file_validates_against_and_monotone(tmp_path):
    beats_margin = "    margin: 0.01\n"
    _write_claims(tmp_path, EXAMPLE.replace(beats_margin, beats_margin + "    models: [demo, resnet50]\n"
                                            "    against: [vgg16]\n", 1))
    with pytest.raises(ClaimsError, match="against must list some of the claim's models"):
        load_claims("demo", tmp_path)
    _write_claims(tmp_path, EXAMPLE.replace(beats_margin, beats_margin + "    monotone: maybe\n", 1))
    with pytest.raises(ClaimsError, match="monotone must be true or false"):
        load_claims("demo", tmp_path)
    _write_claims(tmp_path, EXAMPLE.replace(beats_margin, beats_margin + "    models: [demo, resnet50]\n"
                                            "    against: [resnet50]\n", 1))
    beats = {c.id: c for c in load_claims("demo", tmp_path)}["demo_beats"]
    assert (beats.against, beats.monotone) == (["resnet50"], True)


def test_verdict_why_carries_the_numbers():
    outcome, why = verdict(_claim("higher", 0.90, 0.02), 0.80, (0.78, 0.85))[:2]
    assert outcome == "not reproduced" and "[0.780, 0.850]" in why and "0.880" in why
    assert "\n" not in why


def test_three_mislabelled_cases_from_the_issue():
    # W-Net paper: AlexNet reaches 0.84; we measured 0.290 with a t-interval over folds [-0.46, 1.04]
    alexnet = _claim("higher", 0.84, 0.03, key="alexnet_balanced_accuracy")
    outcome, why = verdict(alexnet, 0.290, (-0.46, 1.04))[:2]
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
    path = write_results("demo", "smoke", 2.0, metrics, ci, plateau={"demo_model": True},
                         results_dir=str(tmp_path / "res"))
    res = json.loads(path.read_text())
    assert res["paper"] == {"demo_balanced_accuracy": 0.97, "c2st_accuracy": 0.523}
    assert res["plateau"] == {"demo_model": True}
    table = claims_table("demo", res)
    assert list(table.columns) == ["claim", "where", "paper", "reproduction", "95% CI", "verdict", "why",
                                   "substitution", "bound", "cause"]
    assert list(table.index) == ["demo_balanced_accuracy", "demo_c2st", "demo_beats", "demo_hardware"]
    row = table.loc["demo_balanced_accuracy"]
    assert ((row["paper"], row["reproduction"], row["95% CI"], row["verdict"])
            == ("0.970", "0.955", "[0.951, 0.959]", "reproduced"))
    assert row["substitution"] == "64 px instead of 128 px"
    assert table.loc["demo_c2st", "verdict"] == "not reproduced"
    assert (table.loc["demo_beats", "paper"], table.loc["demo_beats", "verdict"]) == ("—", "contradicted")
    assert ((table.loc["demo_hardware", "verdict"], table.loc["demo_hardware", "reproduction"])
            == ("not comparable", "—"))
    # without the plateau record a passing number is a lower bound (training only raises it), a failing one is
    # inconclusive; read from results_dir when results is None
    write_results("demo", "smoke", 2.0, metrics, ci, results_dir=str(tmp_path / "res"))
    table = claims_table("demo", results_dir=str(tmp_path / "res"))
    assert tuple(table.loc["demo_balanced_accuracy", ["verdict", "bound"]]) == ("reproduced", "lower bound")
    write_results("demo", "smoke", 2.0, {**metrics, "demo_balanced_accuracy": 0.90},
                  {**ci, "demo_balanced_accuracy": (0.88, 0.92)}, results_dir=str(tmp_path / "res"))
    table = claims_table("demo", results_dir=str(tmp_path / "res"))
    assert tuple(table.loc["demo_balanced_accuracy", ["verdict", "cause"]]) == ("inconclusive", "plateau")
    assert table.loc["demo_balanced_accuracy", "why"].startswith("demo_model short of its plateau")
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


def test_a_claim_awaiting_its_run_says_so_and_check_wants_awaits_dropped_once_measured(tmp_path):
    from wbcstudy.check import check_claims

    claim = _claim("higher", 0.6, 0.05, awaits="HemaX's re-run")
    got = verdict(claim, None, None)
    assert (got.outcome, got.why, got.cause) == ("inconclusive", "not measured yet: awaits HemaX's re-run", "missing")
    text = EXAMPLE.replace("    models: [demo_model]\n", "    models: [demo_model]\n    awaits: a re-run\n", 1)
    _write_claims(tmp_path, text)
    results = tmp_path / "book" / "results" / "demo.json"
    results.parent.mkdir(parents=True)
    measured = {"c2st_accuracy": 0.5, "demo_minus_resnet50_balanced_accuracy": 0.0}
    results.write_text(json.dumps({"metrics": measured, "paper": {}, "plateau": {"demo_model": True}}))
    assert check_claims(tmp_path, ["demo"]) == []  # the awaited key may be missing
    results.write_text(json.dumps({"metrics": {**measured, "demo_balanced_accuracy": 0.9}, "paper": {},
                                   "plateau": {"demo_model": True}}))
    assert check_claims(tmp_path, ["demo"]) == [
        "book/claims/demo.yml: claim 'demo_balanced_accuracy': key 'demo_balanced_accuracy' is measured now: drop its "
        "`awaits`"]


def test_a_number_pooled_over_folds_needs_a_hierarchical_interval(tmp_path, monkeypatch):
    from wbcstudy.check import check_claims

    # W-Net's CV balanced accuracy 0.956 [0.951, 0.961] from five folds (SD 0.022): a cells-only interval
    claim = _claim("higher", 0.97, 0.02, key="wnet_cv_balanced_accuracy", runs=5)
    got = verdict(claim, 0.956, (0.951, 0.961), interval_kind="cells")
    assert (got.outcome, got.cause) == ("inconclusive", "invalid") and "5 runs" in got.why
    assert verdict(claim, 0.956, (0.951, 0.961)).cause == "invalid"  # not recorded: not trusted either
    assert verdict(claim, 0.956, (0.935, 0.971), interval_kind="hierarchical").outcome == "inconclusive"  # width
    assert verdict(claim, 0.975, (0.955, 0.985), interval_kind="hierarchical").outcome == "reproduced"
    assert verdict(_claim("higher", 0.97, 0.02), 0.975, (0.965, 0.985)).outcome == "reproduced"  # one run: any kind
    # write_results records the kinds; check fails on a pooled number whose recorded interval is over cells alone
    monkeypatch.setenv("WBCSTUDY_ROOT", str(tmp_path))
    _write_claims(tmp_path, EXAMPLE.replace("    models: [demo_model]\n", "    models: [demo_model]\n    runs: 5\n", 1))
    metrics = {"demo_balanced_accuracy": 0.955, "c2st_accuracy": 1.0, "demo_minus_resnet50_balanced_accuracy": 0.0}
    ci = {"demo_balanced_accuracy": (0.951, 0.959)}
    with pytest.raises(ValueError, match="interval kind 'folds'"):
        write_results("demo", "cpu", 1.0, metrics, ci, interval_kinds={"demo_balanced_accuracy": "folds"},
                      results_dir=str(tmp_path / "book" / "results"))
    write_results("demo", "cpu", 1.0, metrics, ci, plateau={"demo_model": True},
                  interval_kinds={"demo_balanced_accuracy": "cells"}, results_dir=str(tmp_path / "book" / "results"))
    assert check_claims(tmp_path, ["demo"]) == [
        "book/claims/demo.yml: claim 'demo_balanced_accuracy': 'demo_balanced_accuracy' pools 5 runs but its interval "
        "in book/results/demo.json is made over cells: bootstrap the runs, then the cells (wbcstudy.intervals)"]
    write_results("demo", "cpu", 1.0, metrics, ci, plateau={"demo_model": True},
                  interval_kinds={"demo_balanced_accuracy": "hierarchical"},
                  results_dir=str(tmp_path / "book" / "results"))
    assert check_claims(tmp_path, ["demo"]) == []
    assert claims_table("demo", results_dir=str(tmp_path / "book" / "results")).loc[
        "demo_balanced_accuracy", "verdict"] == "reproduced"
