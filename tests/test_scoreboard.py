"""The introduction's scoreboard: verdict counts per paper from claims files and results, and its one-line findings."""
from __future__ import annotations

import json

import yaml

from wbcstudy import scoreboard


def _write(root, chapter, claims, metrics, ci, plateau=None):
    (root / "book" / "claims").mkdir(parents=True, exist_ok=True)
    (root / "book" / "results").mkdir(parents=True, exist_ok=True)
    (root / "book" / "claims" / f"{chapter}.yml").write_text(yaml.safe_dump({"chapter": chapter, "claims": claims}))
    record = {"chapter": chapter, "profile": "cpu", "seconds": 1.0, "commit": "abc", "metrics": metrics, "ci": ci,
              "paper": {}, "plateau": plateau or {}}
    (root / "book" / "results" / f"{chapter}.json").write_text(json.dumps(record))


def test_counts_and_findings_follow_the_verdict_rule(tmp_path):
    claims = [
        {"id": "acc", "claim": "97% accuracy", "where": "Table 3", "paper_value": 0.97, "key": "acc",
         "direction": "higher", "margin": 0.02},
        {"id": "deep_fail", "claim": "W-Net beats ResNet50", "where": "Table 4", "paper_value": None,
         "key": "wnet_minus_resnet50", "direction": "beats", "margin": 0.02},
        {"id": "gan", "claim": "generated cells fool a classifier", "where": "Sec. 4", "paper_value": 0.523,
         "key": "c2st_accuracy", "direction": "close", "margin": 0.05},
        {"id": "pre", "claim": "pretrained VGG", "where": "README", "paper_value": 0.97, "key": "vgg",
         "direction": "higher", "margin": 0.02, "comparable": False, "reason": "no ImageNet weights here"},
    ]
    metrics = {"acc": 0.975, "wnet_minus_resnet50": -0.198, "c2st_accuracy": 1.0, "vgg": 0.6}
    ci = {"acc": [0.965, 0.985], "wnet_minus_resnet50": [-0.25, -0.15], "c2st_accuracy": [0.99, 1.0]}
    _write(tmp_path, "wnet", claims, metrics, ci)
    audit = scoreboard.audit(tmp_path)
    assert dict(zip(audit["id"], audit["verdict"])) == {"acc": "reproduced", "deep_fail": "contradicted",
                                                         "gan": "not reproduced", "pre": "not comparable"}
    counts = scoreboard.verdict_counts(audit).loc["wnet"]
    got = (counts["reproduced"], counts["contradicted"], counts["not reproduced"], counts["not comparable"],
           counts["total"])
    assert got == (1, 1, 1, 1, 4)
    line = scoreboard.finding(audit)
    assert (line.startswith("1 of 4 claims reproduced or exceeded") and "contradicted: `deep_fail`" in line
            and "`gan`" in line)
    md = scoreboard.scoreboard_markdown(tmp_path)
    assert "| [W-Net](chapters/wnet.ipynb) | 1 | 0 | 0 | 1 | 1 | 0 | 1 | 4 |" in md


def test_a_model_short_of_its_plateau_makes_its_claim_inconclusive_only_below_its_bar(tmp_path):
    claims = [{"id": "acc", "claim": "97%", "where": "T3", "paper_value": 0.97, "key": "acc", "direction": "higher",
               "margin": 0.02, "models": ["wnet"]}]
    _write(tmp_path, "wnet", claims, {"acc": 0.93}, {"acc": [0.92, 0.94]}, plateau={"wnet": False})
    assert scoreboard.audit(tmp_path)[["verdict", "cause"]].values.tolist() == [["inconclusive", "plateau"]]
    _write(tmp_path, "wnet", claims, {"acc": 0.93}, {"acc": [0.92, 0.94]}, plateau={"wnet": True})
    assert scoreboard.audit(tmp_path)["verdict"].tolist() == ["not reproduced"]  # 0.94 < 0.97 − 0.02
    _write(tmp_path, "wnet", claims, {"acc": 0.99}, {"acc": [0.98, 1.0]}, plateau={"wnet": False})
    assert scoreboard.audit(tmp_path)[["verdict", "bound"]].values.tolist() == [["reproduced", "lower bound"]]


def test_the_scoreboard_is_stale_until_rewritten(tmp_path):
    claims = [{"id": "acc", "claim": "97%", "where": "T3", "paper_value": 0.97, "key": "acc", "direction": "higher",
               "margin": 0.02}]
    _write(tmp_path, "wnet", claims, {"acc": 0.5}, {"acc": [0.4, 0.6]})
    from wbcstudy.judgement import stale_judgement, write_judgement

    assert "book/scoreboard.md" in stale_judgement(tmp_path)
    write_judgement(tmp_path)
    assert "book/scoreboard.md" not in stale_judgement(tmp_path)
    assert "not reproduced: `acc`" in (tmp_path / "book" / "scoreboard.md").read_text()


def test_claim_totals_count_every_outcome_and_the_papers_apart():
    import pandas as pd

    claims = pd.DataFrame({"chapter": ["wnet", "wnet", "data", "hemax", "baseline"],
                           "verdict": ["reproduced", "not comparable", "not comparable", "inconclusive",
                                       "inconclusive"],
                           "cause": ["", "", "", "plateau", "width"]})
    totals = scoreboard.claim_totals(claims)
    assert totals == {"claims_total": 5, "paper_claims_total": 3,
                      "claims_reproduced": 1, "paper_claims_reproduced": 1,
                      "claims_smaller_effect": 0, "paper_claims_smaller_effect": 0,
                      "claims_exceeded": 0, "paper_claims_exceeded": 0,
                      "claims_not_reproduced": 0, "paper_claims_not_reproduced": 0,
                      "claims_contradicted": 0, "paper_claims_contradicted": 0,
                      "claims_inconclusive": 2, "paper_claims_inconclusive": 1,
                      "claims_not_comparable": 2, "paper_claims_not_comparable": 1,
                      # the study's own chapters (Data, BloodMNIST) are left out of the causes, as of paper_claims_*
                      "inconclusive_plateau": 1, "inconclusive_width": 0, "inconclusive_missing": 0,
                      "inconclusive_invalid": 0}


def test_book_seconds_counts_bf16_runs_for_the_slower_cpu_and_names_missing_chapters():
    timings = {"a": {"cpu": {"seconds": 100.0, "native_bf16": True, "precision_forced": "auto"}},
               "b": {"cpu": {"seconds": 50.0, "native_bf16": False}, "smoke": 3.0},
               "c": {"smoke": 4.0}}
    timed, slow, missing = scoreboard.book_seconds(timings, ["a", "b", "c"])
    assert (timed, slow, missing) == (150.0, 100.0 * 2.5 + 50.0, ["c"])
