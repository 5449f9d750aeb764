import dataclasses
import json
import re

import pandas as pd

from fixability_dag.core.features import ALL_FEATURES
from fixability_dag.core.regimes import REGIMES, feature_ablation
from fixability_dag.core.stats import newcombe_paired_diff, wilson_interval
from fixability_dag.pipeline import audit
from fixability_dag.pipeline.report import pooled_lifts, results_markdown, topography_section
from fixability_dag.pipeline.report_sections import (checkpoint_meta, eval_budgets, gate_point, group_shares, meta_order,
                                                     pooled_point, pooled_recovery, predicted_point, predicted_steerable_hard,
                                                     shown, shown_columns, stability_point, transfer_point, transfer_summary,
                                                     transfer_type, transfer_types)

from tests.support import FAKE_CFG, REPO, FakeEngine, behaviour, record_audit, run_audit


def test_results_markdown_from_the_database(sqlite_store):
    run_audit(sqlite_store, FakeEngine(behaviour), checkpoint_id="ck")
    run_audit(sqlite_store, FakeEngine(behaviour), checkpoint_id="other")
    transfers = audit.transfer(sqlite_store)
    assert sorted(zip(transfers["source_checkpoint"], transfers["target_checkpoint"])) == [("ck", "other"), ("other", "ck")]
    assert transfers["transfer_accuracy"].between(0, 1).all() and sqlite_store.count("regime_transfers") == 2
    assert sqlite_store.count("feature_ablations", "ck") == 120
    assert set(sqlite_store.read("regime_reports", "ck")["method"]) >= {"gmm", "kmeans", "majority_baseline"}
    text = results_markdown(sqlite_store)
    for heading in ("## Regime recovery", "## Rescue at equal samples", "## Rescue at equal generated tokens",
                    "## Pooled over checkpoints", "## Label phase cost", "## Topography", "## Transfer", "## Feature ablation",
                    "### Regime recovery pooled over checkpoints", "## Routed rescue on predicted steerable-hard problems",
                    "### Pooled per (family, recipe) and per seed", "### Transfer by what differs between source and target"):
        assert heading in text
    assert not re.search(r"\bnan\b", text, re.I)  # a value that cannot be computed says why
    # registered without fixability_checkpoint.json: the two checkpoints differ in nothing recorded
    assert re.search(r"^\|\s*undetermined \(no recorded difference\)\s*\|\s*2\s*\|", text, re.M)
    assert "The pooled numbers rest on 24 problems over 2 checkpoints" in text
    stored = sqlite_store.read("rescue_evaluations")
    evals = stored[(stored["checkpoint_id"] == "ck") & (stored["matching"] == "samples")].set_index(["policy", "regime"])
    rate = evals.loc[("hindsight_oracle", "all"), "rescue_rate"]
    assert re.search(rf"^\|\s*ck\s*\|\s*hindsight_oracle\s*\|\s*{100 * rate:.1f}%\s*\|", text, re.M)
    tokens = stored[(stored["matching"] == "tokens") & (stored["policy"] == "routed") & (stored["regime"] == "all")]
    for r in tokens.itertuples():  # each checkpoint's token-matched row: the retry samples it was given
        assert re.search(rf"^\|\s*{r.checkpoint_id}\s*\|\s*routed\s*\|\s*{r.policy_tokens}\s*\|\s*{r.retry_samples}\s*\|", text, re.M)
    # pooled: the cells of both checkpoints added, over all their problems
    [pooled] = [row for row in pooled_lifts(stored) if row["matching"] == "samples" and row["regime"] == "all"]
    routed = stored[(stored["matching"] == "samples") & (stored["policy"] == "routed") & (stored["regime"] == "all")]
    assert pooled["checkpoints"] == 2 and pooled["problems"] == routed["problems"].sum()
    assert pooled["routed only / retry only"] == f"{int(routed['pairs_policy_only'].sum())} / {int(routed['pairs_retry_only'].sum())}"
    assert "84.3" in text  # the preprint's figure stands beside ours
    against = text[text.index("## Against the preprint"):]
    assert "* Pooled over checkpoints, the GMM clusters recover" in against and "on 24 (checkpoint, problem) pairs" in against
    assert "* Transfer (the preprint" in against and "undetermined (no recorded difference): " in against
    assert "* On the problems the router itself predicts steerable-hard" in against


def test_feature_ablation_ranks_every_triple(sqlite_store):
    run_audit(sqlite_store, FakeEngine(behaviour), checkpoint_id="ck")
    table = feature_ablation(sqlite_store.read("problem_features", "ck"), sqlite_store.read("regime_labels", "ck"), ALL_FEATURES)
    n = len(ALL_FEATURES)
    assert len(table) == n * (n - 1) * (n - 2) // 6
    # ranked on one half, scored on the other: the order follows the selecting half, not the reported accuracy
    assert table["selection_accuracy"].is_monotonic_decreasing and table["accuracy"].between(0, 1).all()


# --- the sections that answer the preprint point by point (fixability_dag/pipeline/report_sections.py) ---

def _checkpoints(rows):
    """A ``checkpoints`` frame as the store reads it: (id, recipe, step, info) per row."""
    return pd.DataFrame([{"checkpoint_id": ck, "recipe": recipe, "training_step": step, "info": info}
                         for ck, recipe, step, info in rows])


def test_checkpoint_metadata_from_the_committed_files_missing_keys_shown_as_unknown():
    # the committed checkpoints' own metadata: the organism records family and seed, the arithmetic demo no family
    files = sorted((REPO / "demo").glob("*/*/fixability_checkpoint.json"))
    frame = _checkpoints([(f.parent.name, None, None, json.loads(f.read_text())) for f in files])
    meta = checkpoint_meta(frame).set_index("checkpoint_id")
    assert meta.loc["org-gpt2-seed7-rft-s1700"].to_dict() == {"family": "gpt2", "seed": 7, "recipe": "rft", "step": 1700}
    assert pd.isna(meta.loc["arith-sft-s0300", "family"]) and shown(meta.loc["arith-sft-s0300", "family"]) == "?"
    assert meta.loc["arith-sft-s0300", "recipe"] == "sft"  # from info when the column is empty
    # no info at all, info as a JSON string, the registered columns winning over info
    more = checkpoint_meta(_checkpoints([("bare", None, None, None), ("text", None, None, '{"family": "llama", "seed": 3.0}'),
                                         ("cols", "rft", 50, {"recipe": "sft", "step": 10})])).set_index("checkpoint_id")
    assert [shown(more.loc["bare", k]) for k in ("family", "seed", "recipe", "step")] == ["?"] * 4
    assert more.loc["text", "family"] == "llama" and shown(more.loc["text", "seed"]) == "3"
    assert (more.loc["cols", "recipe"], more.loc["cols", "step"]) == ("rft", 50)


def test_topography_ordered_by_family_seed_recipe_step():
    meta = checkpoint_meta(_checkpoints([
        ("g-s7-sft-300", "sft", 300, {"family": "gpt2", "seed": 7}), ("l-s8-sft-300", "sft", 300, {"family": "llama", "seed": 8}),
        ("l-s7-sft-1500", "sft", 1500, {"family": "llama", "seed": 7}), ("l-s7-rft-1700", "rft", 1700, {"family": "llama", "seed": 7}),
        ("l-s7-sft-300", "sft", 300, {"family": "llama", "seed": 7}), ("demo", "sft", 100, {"seed": 7})]))
    topo = pd.DataFrame([{"checkpoint": ck, "recipe": None, "step": None, "pass_rate": 0.5, "failed": 4,
                          **{f"share_{r}": 0.25 for r in REGIMES}} for ck in meta["checkpoint_id"]])
    ordered = meta_order(topo, meta)
    assert list(ordered["checkpoint"]) == ["g-s7-sft-300", "l-s7-rft-1700", "l-s7-sft-300", "l-s7-sft-1500", "l-s8-sft-300", "demo"]
    section = "\n".join(topography_section(topo, meta, pd.DataFrame(columns=["checkpoint_id", "problem_id", "true_regime"])))
    assert re.search(r"^\|\s*demo\s*\|\s*\?\s*\|\s*7\s*\|\s*sft\s*\|\s*100\s*\|", section, re.M)
    lo, hi = wilson_interval(1, 4)  # a counted share: its Wilson interval at the checkpoint's failed problems
    assert f"25.0% [{100 * lo:.1f}%, {100 * hi:.1f}%]" in section and "nan" not in section


def test_group_shares_pool_the_labelled_problems_of_each_group():
    meta = checkpoint_meta(_checkpoints([("a", "sft", 300, {"family": "llama", "seed": 7}), ("b", "sft", 700, {"family": "llama", "seed": 8}),
                                         ("c", "sft", 300, {"family": "gpt2", "seed": 7}), ("d", "rft", 50, {})]))
    planted = {"a": ["steerable_hard"] * 3 + ["structural"], "b": ["steerable_hard", "retry_recoverable", None],
               "c": ["structural"] * 2, "d": ["retry_recoverable"], "unaudited": ["structural"] * 5}
    labels = pd.DataFrame([{"checkpoint_id": ck, "problem_id": f"p{i}", "true_regime": r}
                           for ck, regimes in planted.items() for i, r in enumerate(regimes)])
    rows = {(r["grouped by"], r["group"]): r for r in group_shares(labels, meta, audited={"a", "b", "c", "d"})}
    assert set(rows) == {("family, recipe", "gpt2 / sft"), ("family, recipe", "llama / sft"), ("family, recipe", "? / rft"),
                         ("seed", "7"), ("seed", "8"), ("seed", "?")}
    llama = rows[("family, recipe", "llama / sft")]
    assert (llama["checkpoints"], llama["failed"], llama["labelled"]) == (2, 7, 6)  # b's unlabelled problem: failed, no share
    lo, hi = wilson_interval(4, 6)
    assert llama["steerable_hard"] == f"4 of 6 = 66.7% [{100 * lo:.1f}%, {100 * hi:.1f}%]"
    seven = rows[("seed", "7")]  # a and c: two families, one seed
    assert (seven["checkpoints"], seven["labelled"]) == (2, 6) and seven["structural"].startswith("3 of 6 = 50.0%")
    assert rows[("seed", "?")]["retry_recoverable"].startswith("1 of 1 = 100.0%")


def test_transfer_pairs_are_typed_by_their_first_difference(store):
    base = {"family": "llama", "seed": 7}
    registered = {"src": ("sft", 300, base), "later": ("sft", 700, base), "seed8": ("sft", 300, {**base, "seed": 8}),
                  "rft": ("rft", 300, base), "gpt2": ("sft", 300, {**base, "family": "gpt2"}),
                  "gpt2-rft-seed8": ("rft", 900, {"family": "gpt2", "seed": 8}), "demo": ("sft", 300, {"seed": 7})}
    for ck, (recipe, step, info) in registered.items():
        store.register_checkpoint(ck, "/nowhere", "fp", recipe, step, info)
    accuracy = {"later": 0.9, "seed8": 0.7, "rft": 0.6, "gpt2": 0.4, "gpt2-rft-seed8": 0.2, "demo": 0.5}
    pairs = pd.DataFrame([{"source_checkpoint": "src", "target_checkpoint": t, "target_problems": 10 + i,
                           "transfer_accuracy": acc, "own_accuracy": 1.0, "target_majority": 0.5, "plan_agreement": 0.8}
                          for i, (t, acc) in enumerate(accuracy.items())])
    store.for_suite("arith").replace_all("regime_transfers", pairs)
    typed = transfer_types(store.read("regime_transfers"), checkpoint_meta(store.read("checkpoints")))
    assert dict(zip(typed["target_checkpoint"], typed["type"])) == {
        "later": "same run, other step", "seed8": "other seed", "rft": "other recipe", "gpt2": "other family",
        "gpt2-rft-seed8": "other family",  # the first difference decides, whatever else differs
        "demo": "undetermined (family unknown)"}
    rows = {r["type"]: r for r in transfer_summary(typed)}
    assert rows["other family"]["pairs"] == 2 and rows["other family"]["target problems (summed)"] == 13 + 14
    assert rows["other family"]["transfer accuracy, mean (min-max)"] == "30.0% (20.0%-40.0%)"
    assert rows["same run, other step"]["transfer accuracy, mean (min-max)"] == "90.0%"
    # no checkpoint pair differs in nothing, so that type is absent; every named type is shown even when empty
    assert list(rows)[:4] == ["other family", "other recipe", "other seed", "same run, other step"]
    empty = transfer_summary(transfer_types(pairs.iloc[0:0], checkpoint_meta(store.read("checkpoints"))))
    assert all(r["pairs"] == 0 and r["plan agreement"] == "n/a (no pair of this type)" for r in empty)
    # a key missing on both sides does not separate them: two demo checkpoints without family are typed by recipe
    assert transfer_type({"seed": 7, "recipe": "sft", "step": 1}, {"seed": 7, "recipe": "rft", "step": 1}) == "other recipe"
    assert transfer_type({"family": "x", "step": 1}, {"family": "x", "step": 1}) == "undetermined (no recorded difference)"


def _hand_rescued(rollouts, pid, intervention, budget):
    """Rescued by one of the first ``budget`` eval samples, counted from the stored rows by hand."""
    rows = rollouts[(rollouts["problem_id"] == pid) & (rollouts["intervention"] == intervention)]
    return bool(rows.loc[rows["sample_index"] < budget, "is_correct"].any())


def test_routed_rescue_on_predicted_steerable_hard_from_the_stored_rollouts(store):
    run_audit(store, FakeEngine(behaviour))  # L3 steerable by the solution prefix, and its probe moves their answers
    plans, rollouts = store.read("routing_plans"), store.read("rollouts", phase="eval")
    labels, evals = store.read("regime_labels"), store.read("rescue_evaluations")
    level3 = {pid for pid in labels["problem_id"] if "-L3-" in pid}
    # without an audit_runs row: the budget the stored evaluation scored retry with (FAKE_CFG.eval_budget)
    [row] = predicted_steerable_hard(plans, rollouts, labels, eval_budgets(store.read("audit_runs"), evals))
    assert row["eval_budget"] == f"{FAKE_CFG.eval_budget} (stored retry_samples)" and row["predicted steerable-hard"] == 4
    # the audit's config says eval_budget = 1: the same rollouts are scored on their first sample only
    record_audit(store, "ck", dataclasses.replace(FAKE_CFG, eval_budget=1))
    budgets = eval_budgets(store.read("audit_runs"), evals)
    [row] = predicted_steerable_hard(plans, rollouts, labels, budgets)
    predicted = set(plans.loc[(plans["action"] == "intervene") & (plans["intervention"] != "retry"), "problem_id"])
    assert predicted == level3 and row["eval_budget"] == "1 (audit config)"
    routed = {pid: _hand_rescued(rollouts, pid, "solution_prefix", 1) for pid in predicted}
    retry = {pid: _hand_rescued(rollouts, pid, "retry", 1) for pid in predicted}
    assert sum(routed.values()) != sum(_hand_rescued(rollouts, p, "solution_prefix", 99) for p in predicted)  # the budget matters
    assert row["routed rescue [95% CI]"].startswith(f"{sum(routed.values())} of 4 = ")
    assert row["retry rescue [95% CI]"].startswith("0 of 4 = 0.0%")  # retry never solves L3
    b = sum(routed[p] and not retry[p] for p in predicted)
    c = sum(retry[p] and not routed[p] for p in predicted)
    both = sum(routed[p] and retry[p] for p in predicted)
    lift, lo, hi = newcombe_paired_diff(both, b, c, 4 - both - b - c)
    assert row["routed only / retry only"] == f"{b} / {c}"
    assert row["routed lift over retry [95% CI]"] == f"{100 * lift:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}] (n=4)"
    assert (row["_n"], row["_lift"], row["_lift_ci_low"], row["_precision"]) == (4, lift, lo, 1.0)  # for the discussion
    assert not any(k.startswith("_") for k in shown_columns([row])[0])  # and not in the table
    assert row["label steerable-hard among predicted (precision)"].startswith("4 of 4 = 100.0%")
    assert row["predicted among label steerable-hard (recall)"].startswith("4 of 4 = 100.0%")
    # a structural L4 problem routed to the prefix as well: precision 4 of 5, recall unchanged, never rescued
    wrong = sorted(pid for pid in labels["problem_id"] if "-L4-" in pid)[0]
    tampered = plans.copy()
    tampered.loc[tampered["problem_id"] == wrong, ["action", "intervention"]] = ["intervene", "solution_prefix"]
    [row] = predicted_steerable_hard(tampered, rollouts, labels, budgets)
    assert row["predicted steerable-hard"] == 5 and row["routed rescue [95% CI]"].startswith(f"{sum(routed.values())} of 5 = ")
    lo, hi = wilson_interval(4, 5)
    assert row["label steerable-hard among predicted (precision)"] == f"4 of 5 = 80.0% [{100 * lo:.1f}%, {100 * hi:.1f}%]"
    assert row["predicted among label steerable-hard (recall)"].startswith("4 of 4 = ")
    # nothing to score: said why, never nan
    [row] = predicted_steerable_hard(plans, rollouts.iloc[0:0], labels, {})
    assert row["routed rescue [95% CI]"] == "n/a (eval_budget not recorded)" and row["eval_budget"] == "n/a (not recorded)"
    text = results_markdown(store)
    assert "## Routed rescue on predicted steerable-hard problems" in text
    assert re.search(r"^\|\s*ck\s*\|\s*4\s*\|\s*1 \(audit config\)\s*\|", text, re.M)


def _report(ck, method, accuracy, n, null_mean, balanced, balanced_q95, labelled=None):
    return {"checkpoint_id": ck, "suite": "arith", "method": method, "accuracy": accuracy, "failed_problems": n,
            "labelled_problems": labelled, "null_mean": null_mean, "null_q95": null_mean + 0.1, "balanced_accuracy": balanced,
            "balanced_null_mean": 0.4, "balanced_null_q95": balanced_q95}


def test_pooled_recovery_weights_checkpoints_by_their_problems():
    reports = pd.DataFrame([
        _report("a", "gmm", 0.5, 10, 0.4, 0.5, 0.6), _report("b", "gmm", 0.8, 30, 0.5, 0.8, 0.7),
        _report("c", "gmm", 0.6, 20, 0.4, 0.9, 0.5, labelled=5),  # production mode: rests on its 5 labelled problems
        _report("a", "kmeans", float("nan"), 10, float("nan"), float("nan"), float("nan")),
        _report("b", "kmeans", 0.7, 30, 0.5, 0.7, 0.75)])
    rows, sentence = pooled_recovery(reports)
    gmm, kmeans = rows
    assert (gmm["checkpoints"], gmm["problems"]) == (3, 45)
    pooled = (0.5 * 10 + 0.8 * 30 + 0.6 * 5) / 45
    lo, hi = wilson_interval(round(pooled * 45), 45)
    assert gmm["pooled accuracy [95% CI]"] == f"{round(pooled * 45)} of 45 = {100 * pooled:.1f}% [{100 * lo:.1f}%, {100 * hi:.1f}%]"
    assert gmm["pooled null mean"] == f"{100 * (0.4 * 10 + 0.5 * 30 + 0.4 * 5) / 45:.1f}%"
    # strictly above: a at its q95 (0.5 = 0.4 + 0.1) does not beat it
    assert gmm["beats null q95 (balanced)"] == "2 of 3" and gmm["beats null q95 (accuracy)"] == "2 of 3"
    assert (kmeans["checkpoints"], kmeans["problems"]) == (1, 30) and kmeans["beats null q95 (balanced)"] == "0 of 1"
    assert sentence.startswith("The pooled numbers rest on 45 problems over 3 checkpoints")
    only_nan = pooled_recovery(reports[reports["method"] == "kmeans"].iloc[:1])[0][0]
    assert only_nan["pooled accuracy [95% CI]"].startswith("n/a (") and "nan" not in str(only_nan)


def test_eval_budget_read_from_the_audit_config_per_suite_before_the_stored_rows():
    evals = pd.DataFrame([{"checkpoint_id": ck, "suite": suite, "policy": "uniform_retry", "regime": "all",
                           "matching": "samples", "retry_samples": 9} for ck in ("ck", "old") for suite in ("first", "second")])
    config = {**FAKE_CFG.as_dict(), "eval_budget": 4, "suites": [{"name": "first", "eval_budget": 2}, {"name": "second"}]}
    runs = pd.DataFrame([{"id": i, "checkpoint_id": "ck", "asset": asset, "status": status, "started_at": i, "config": c}
                         for i, (asset, status, c) in enumerate([
                             ("rescue_evaluation", "success", {**config, "eval_budget": 7}),  # an earlier run
                             ("rescue_evaluation", "success", config), ("rescue_evaluation", "failed", {"eval_budget": 3}),
                             ("routing_plan", "success", {"eval_budget": 5})])])
    budgets = eval_budgets(runs, evals)
    assert budgets[("ck", "first")] == (2, "audit config") and budgets[("ck", "second")] == (4, "audit config")
    assert budgets[("old", "first")] == (9, "stored retry_samples")  # no audit_runs row: what the evaluation scored with


def _predicted(ck, n, lift, lo, hi, precision):
    return {"checkpoint": ck, "_n": n, "_lift": lift, "_lift_ci_low": lo, "_lift_ci_high": hi, "_precision": precision}


def test_preprint_points_count_what_the_planted_rows_hold():
    """Each sentence of 'Against the preprint' is computed: it changes when the planted numbers do."""
    rows = [_predicted("a", 40, 0.30, 0.15, 0.45, 0.7), _predicted("b", 30, 0.10, -0.05, 0.25, 0.3),
            _predicted("c", 20, 0.20, 0.02, 0.38, 0.5), {"checkpoint": "d", "_n": 0}]
    text = predicted_point(rows)
    assert "above zero on 2 of 3 checkpoints" in text and "+30.0, +10.0, +20.0 points on n = 40, 30, 20" in text
    assert "+12.2% lies inside the interval on 2 of them" in text  # a's interval starts above it
    assert "30-70% carry the steerable-hard label" in text and "No problem was routed to an intervention on d." in text
    flat = [_predicted(ck, 30, 0.0, -0.1, 0.1, 0.3) for ck in "abc"]  # no lift anywhere: the sentence says so
    assert "above zero on 0 of 3 checkpoints" in predicted_point(flat)
    assert predicted_point([]) is None
    assert "no label-free steerable-hard lift" in predicted_point([{"checkpoint": "d", "_n": 0}])

    gate = pd.DataFrame([{"checkpoint": ck, "family": fam, "expected": exp, "failed": n, "landed_as_designed": share}
                         for ck, fam, exp, n, share in [("a", "numeric", "steerable_hard", 50, 0.96),
                                                        ("b", "numeric", "steerable_hard", 40, 0.2),
                                                        ("a", "long", "structural", 45, 0.87),
                                                        ("b", "long", "structural", 43, 0.58),
                                                        ("a", "control", "solved", 2, None)]])
    text = gate_point(gate)
    assert "numeric (steerable_hard) on 1 of 2 (20-96% of its failed problems, n = 40-50)" in text
    assert "long (structural) on 2 of 2" in text and "control" not in text  # no designed regime: not scored
    assert gate_point(pd.DataFrame()) is None

    reports = pd.DataFrame([_report("a", "gmm", 0.5, 10, 0.4, 0.5, 0.6), _report("b", "gmm", 0.8, 30, 0.5, 0.8, 0.7),
                            _report("a", "majority_baseline", 0.6, 10, 0.6, 0.3, 0.3),
                            _report("b", "majority_baseline", 0.4, 30, 0.4, 0.3, 0.3)])
    acc = (0.5 * 10 + 0.8 * 30) / 40
    lo, hi = wilson_interval(round(acc * 40), 40)
    text = pooled_point(reports)
    assert f"recover {100 * acc:.1f}% [{100 * lo:.1f}%, {100 * hi:.1f}%] of the regimes on 40 (checkpoint, problem) pairs" in text
    assert f"null of {100 * (0.4 * 10 + 0.5 * 30) / 40:.1f}% and a majority class of {100 * (0.6 * 10 + 0.4 * 30) / 40:.1f}%" in text

    typed = pd.DataFrame([{"type": kind, "transfer_accuracy": t, "own_accuracy": 0.5, "target_majority": m, "plan_agreement": 0.8}
                          for kind, t, m in [("other family", 0.3, 0.5), ("other family", 0.6, 0.5), ("other seed", 0.7, 0.4)]])
    text = transfer_point(typed)
    assert "other family: 45.0% (own clusters 50.0%, target majority 50.0%; above the majority on 1 of 2 pairs" in text
    assert "other seed: 70.0%" in text and "No pair of type other recipe, same run, other step." in text
    assert transfer_point(typed.iloc[0:0]) is None

    text = stability_point([{"checkpoint": "a", "problems": 200, "agreement": 0.53, "kappa": 0.25},
                            {"checkpoint": "b", "problems": 100, "agreement": 0.83, "kappa": 0.62}])
    assert "same regime for 53-83% of the failed problems (Cohen's kappa 0.25-0.62; 2 checkpoints, n = 200, 100)" in text
    assert stability_point([]) is None
