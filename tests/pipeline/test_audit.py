"""The audit stages end to end on a fake engine with known per-difficulty behaviour (fast; the same stages run on
the real vLLM engine in test_end_to_end.py)."""

import dataclasses

import pytest

from fixability_dag.core.regimes import REGIMES
from fixability_dag.core.rescue import POLICIES, TOKEN_MATCHED
from fixability_dag.core.sampling import Completion
from fixability_dag.engines.tools import ToolEngine
from fixability_dag.pipeline import audit, checks

from tests.support import FAKE_CFG, GOLD, FakeEngine, behaviour, planted, run_audit


def test_stages_store_consistent_rows(store):
    engine = FakeEngine(behaviour)
    diag, labels, report, plan, evaluations, summary = run_audit(store, engine)
    n_problems = len(GOLD)
    assert store.count("rollouts", "ck", phase="diagnostic") == n_problems * FAKE_CFG.n_samples
    failed = diag["failed_problems"]
    assert failed == 12  # L2, L3, L4: 4 problems each
    assert store.count("problem_features", "ck") == failed
    assert store.count("rollouts", "ck", phase="probe") == failed * FAKE_CFG.probe_samples * len(FAKE_CFG.probe_interventions)
    assert store.count("probe_shifts", "ck") == failed * len(FAKE_CFG.probe_interventions)
    # every (failed problem, intervention) group could draw its budget (greedy: one sample); groups stop early
    per_problem = sum(1 if name == "greedy" else FAKE_CFG.budget_for(name) for name in FAKE_CFG.interventions)
    outcomes = store.read("intervention_outcomes", "ck")
    assert len(outcomes) == failed * len(FAKE_CFG.interventions)
    assert outcomes.groupby("problem_id")["budget"].sum().eq(per_problem).all()
    drawn = store.count("rollouts", "ck", phase="label")
    assert drawn == outcomes["samples"].sum() < failed * per_problem  # L2 and L3 groups stop at their first success
    regimes = labels.set_index("problem_id")["true_regime"]
    assert {regimes[p] for p in regimes.index if "-L3-" in p} == {"steerable_hard"}
    assert {regimes[p] for p in regimes.index if "-L4-" in p} == {"structural"}
    assert set(plan["action"]) <= {"retry", "intervene", "skip"} and len(plan) == failed
    routed = plan.set_index("problem_id")
    # L3 is stuck at base and moved only by the solution prefix; L4 moves under nothing
    assert {routed.loc[p, "intervention"] for p in routed.index if "-L3-" in p} == {"solution_prefix"}
    assert set(routed.loc[[p for p in routed.index if "-L4-" in p], "action"]) == {"skip"}
    assert len(evaluations) == (len(POLICIES) + len(TOKEN_MATCHED)) * (1 + len(REGIMES))
    all_rows = evaluations[(evaluations["regime"] == "all") & (evaluations["matching"] == "samples")].set_index("policy")
    assert all_rows.loc["hindsight_oracle", "rescue_rate"] >= all_rows["rescue_rate"].max() - 1e-12
    assert report["regime_shares"]["structural"] == pytest.approx(4 / 12)


def test_rerunning_replaces_and_never_duplicates(store):
    engine = FakeEngine(behaviour)
    run_audit(store, engine)
    counts = {t: store.count(t, "ck") for t in ("rollouts", "problem_features", "intervention_outcomes", "regime_labels", "routing_plans", "rescue_evaluations")}
    first = store.read("rollouts", "ck").sort_values(["phase", "problem_id", "intervention", "sample_index"])["answer"].tolist()
    run_audit(store, engine)
    assert {t: store.count(t, "ck") for t in counts} == counts
    again = store.read("rollouts", "ck").sort_values(["phase", "problem_id", "intervention", "sample_index"])["answer"].tolist()
    assert again == first  # per-request seeds: the re-run draws the same samples
    assert store.count("problems") == len(GOLD)


def test_checkpoints_do_not_touch_each_other(sqlite_store):
    engine = FakeEngine(behaviour)
    run_audit(sqlite_store, engine, checkpoint_id="a")
    before = sqlite_store.count("rollouts", "a")
    run_audit(sqlite_store, engine, checkpoint_id="b")
    assert sqlite_store.count("rollouts", "a") == before == sqlite_store.count("rollouts", "b")
    table = audit.topography(sqlite_store)
    assert list(table["checkpoint"]) == ["a", "b"]
    assert table[[f"share_{r}" for r in REGIMES]].sum(axis=1).round(6).tolist() == [1.0, 1.0]


def test_a_checkpoint_that_solves_everything(sqlite_store):
    """No failed problem: every stage still runs, stores empty results, and the checkpoint shows in the topography."""
    engine = FakeEngine(lambda request, rng: GOLD[request.problem_id])
    diag, labels, report, plan, evaluations, summary = run_audit(sqlite_store, engine, checkpoint_id="perfect")
    assert diag["pass_rate"] == 1.0 and diag["failed_problems"] == 0
    assert labels.empty and plan.empty and evaluations.empty and summary == {"failed_problems": 0}
    assert sqlite_store.count("rollouts", "perfect", phase="label") == 0
    [row] = audit.topography(sqlite_store).to_dict("records")
    assert row["checkpoint"] == "perfect" and row["failed"] == 0 and row["pass_rate"] == 1.0


def test_a_replicate_label_phase_measures_label_agreement(sqlite_store):
    import dataclasses

    cfg = dataclasses.replace(FAKE_CFG, label_replicate=True)
    engine = FakeEngine(behaviour)
    diag, labels, report, plan, evaluations, summary = run_audit(sqlite_store, engine, cfg, checkpoint_id="rep")
    phases = {r.phase for call in engine.calls for r in call}
    assert "label_replicate" in phases
    replicate = sqlite_store.read("rollouts", "rep", phase="label_replicate")
    label = sqlite_store.read("rollouts", "rep", phase="label")
    groups = lambda frame: set(zip(frame["problem_id"], frame["intervention"]))  # noqa: E731
    assert groups(replicate) == groups(label) and set(replicate["seed"]).isdisjoint(label["seed"])  # independent draws
    stored = sqlite_store.read("regime_labels", "rep")
    assert stored["replicate_regime"].notna().all()
    agreement = report["label_agreement"]
    assert agreement["problems"] == len(stored) and 0 <= agreement["agreement"] <= 1
    same = (stored["true_regime"] == stored["replicate_regime"]).mean()
    assert agreement["agreement"] == pytest.approx(same)
    strata = set(evaluations["regime"])
    assert {"replicated:structural", "replicated:steerable_hard"} <= strata
    structural = evaluations[(evaluations["policy"] == "routed") & (evaluations["regime"] == "replicated:structural")]
    replicated_structural = ((stored["true_regime"] == "structural") & (stored["replicate_regime"] == "structural")).sum()
    assert int(structural["problems"].iloc[0]) == replicated_structural


PIDS = sorted(GOLD)
SMALL_RUNS = {
    "one_failed": {PIDS[0]: "retry_recoverable"},
    "two_failed": {PIDS[0]: "steerable_hard", PIDS[5]: "structural"},
    "three_all_retry": {p: "retry_recoverable" for p in PIDS[:3]},
    "eight_all_structural": {p: "structural" for p in PIDS[:8]},
    "none_failed": {},
}


@pytest.mark.parametrize("regimes", SMALL_RUNS.values(), ids=SMALL_RUNS.keys())
def test_small_and_lopsided_runs_finish_and_say_what_was_not_computed(sqlite_store, regimes):
    """0, 1 or 2 failed problems, or failures in one regime only: every stage completes (sklearn once refused to
    cluster one sample), the labels are the planted ones, and the report says why there are no accuracies."""
    diag, labels, report, plan, evaluations, summary = run_audit(sqlite_store, FakeEngine(planted(regimes)))
    assert diag["failed_problems"] == len(regimes)
    assert dict(zip(labels["problem_id"], labels["true_regime"])) == regimes
    assert sorted(plan["problem_id"]) == sorted(regimes)
    assert len(evaluations) == ((len(POLICIES) + len(TOKEN_MATCHED)) * (1 + len(REGIMES)) if regimes else 0)
    why = report["not_computed"]["regime_report"]
    assert (f"{len(regimes)} failed problem" in why) if len(regimes) < 6 else ("are structural" in why)
    stored = sqlite_store.read("regime_reports", "ck")
    assert set(stored["method"]) == {"gmm", "kmeans", "majority_baseline", "supervised_logreg", "trace_reading_tfidf"}
    assert (stored["note"] == why).all() and stored["accuracy"].isna().all()
    assert sqlite_store.count("feature_ablations", "ck") == 0


def test_an_evaluable_run_reports_accuracies_and_nothing_missing(sqlite_store):
    """The control for the test above: with enough failures in several regimes the accuracies are there."""
    regimes = {p: ("retry_recoverable", "steerable_hard", "structural")[i % 3] for i, p in enumerate(PIDS[:9])}
    _, _, report, *_ = run_audit(sqlite_store, FakeEngine(planted(regimes)))
    assert "not_computed" not in report
    stored = sqlite_store.read("regime_reports", "ck").set_index("method")
    assert stored.loc["gmm", "accuracy"] is not None and stored["note"].isna().all()


class ShortContextEngine(FakeEngine):
    """The fake engine with a context: a prompt counts a token per four characters, so with ``max_tokens`` 128 the
    few-shot prompts of the longer chains (and only those) exceed it. Stands in for the real engine's count
    (tests/engines/test_chat_engine.py)."""

    max_model_len = FAKE_CFG.max_tokens + 30

    def prompt_tokens(self, requests):
        return [len(r.prompt) // 4 for r in requests]


def test_groups_that_do_not_fit_are_skipped_counted_and_missing_downstream(sqlite_store):
    engine = ShortContextEngine(behaviour)
    diag, labels, report, plan, evaluations, summary = run_audit(sqlite_store, engine)
    skipped = sqlite_store.read("skipped_requests", "ck")
    assert len(skipped) and set(skipped["intervention"]) == {"few_shot"}
    assert set(skipped["phase"]) <= {"probe", "label", "eval"} and "probe" in set(skipped["phase"])
    assert (skipped["prompt_tokens"] + FAKE_CFG.max_tokens > engine.max_model_len).all()
    assert all(n + FAKE_CFG.max_tokens <= engine.max_model_len  # never sent
               for call in engine.calls for n in engine.prompt_tokens(call))
    # missing, not failed: no outcome row and no probe shift for a skipped group; every later stage still completes
    outcomes = sqlite_store.read("intervention_outcomes", "ck")
    label_skips = set(map(tuple, skipped.loc[skipped["phase"] == "label", ["problem_id", "intervention"]].values))
    assert label_skips and not label_skips & set(zip(outcomes["problem_id"], outcomes["intervention"]))
    shifts = sqlite_store.read("probe_shifts", "ck")
    probe_skips = skipped.loc[skipped["phase"] == "probe", "problem_id"]
    assert shifts[shifts["problem_id"].isin(probe_skips) & (shifts["intervention"] == "few_shot")]["shift"].isna().all()
    assert diag["skipped_requests"] == 0 and len(labels) and len(evaluations)
    assert "skipped_requests" in summary
    _assert_checks_pass(sqlite_store)


def _assert_checks_pass(store):
    """Every asset check holds: the checks expect no rows for the skipped groups."""
    failed = [(asset, inv.name, out.message) for asset in checks.CHECKS
              for inv, out in checks.evaluate(asset, store, "ck", FAKE_CFG) if inv.blocking and not out.passed]
    assert not failed


def test_a_policy_choice_the_context_cannot_hold_is_not_scored_on_that_problem(sqlite_store):
    """Few-shot rescues every problem it fits (the 2- and 3-step chains), so it is the best single intervention and is
    chosen for the 4-step chains too, whose few-shot prompt does not fit: those choices are missing (left out of best_single's problems), not failures."""
    def sampler(request, rng):
        if request.intervention == "few_shot" and request.phase in ("label", "eval"):
            return GOLD[request.problem_id]
        return behaviour(request, rng)

    engine = ShortContextEngine(sampler)
    engine.max_model_len = FAKE_CFG.max_tokens + 36  # few-shot fits the 3-step chains, not the 4-step ones
    *_, evaluations, summary = run_audit(sqlite_store, engine)
    skipped = sqlite_store.read("skipped_requests", "ck")
    eval_skips = set(skipped.loc[skipped["phase"] == "eval", "problem_id"])
    assert eval_skips and summary["skipped_requests"] == len(eval_skips)
    rows = evaluations[(evaluations["regime"] == "all") & (evaluations["matching"] == "samples")].set_index("policy")
    assert rows.loc["best_single", "problems"] == rows.loc["uniform_retry", "problems"] - len(eval_skips)
    assert rows.loc["best_single", "rescued"] == rows.loc["best_single", "problems"]  # every scored choice rescued
    _assert_checks_pass(sqlite_store)


class AnnotatingEngine(FakeEngine):
    """A FakeEngine whose samples open a GSM8K annotation when ``=`` is a stop string: ``<<6*7`` and a stop on
    ``=`` (4 tokens, the ``=`` among them), then, once the tool has closed it, the fake's usual body."""

    def generate(self, requests):
        out = []
        for r in requests:
            if "=" in r.decoding.stop and not r.prompt.endswith(">>"):
                out.append([Completion("<<6*7", 4, -2.0, "stop", stop_reason="=") for _ in range(r.n)])
            else:
                out += super().generate([r])
        return out


def test_the_calculator_stores_tool_calls_and_every_generated_token(store):
    cfg = dataclasses.replace(FAKE_CFG, interventions=(*FAKE_CFG.interventions, "calculator"))
    run_audit(store, ToolEngine(AnnotatingEngine(behaviour)), cfg)
    label = store.read("rollouts", "ck", phase="label")
    tooled = label[label["intervention"] == "calculator"]
    others = label[label["intervention"] != "calculator"]
    assert len(tooled) and (tooled["tool_calls"] == 1).all() and (others["tool_calls"] == 0).all()
    assert tooled["text"].str.startswith("<<6*7=42>>1+1=2\n").all()
    body = tooled["text"].str.len() - len("<<6*7=42>>")
    assert (tooled["num_tokens"] == body + 4).all()  # the tool's "42>>" is not generated, the model's "=" is
    outcomes = store.read("intervention_outcomes", "ck").set_index(["problem_id", "intervention"])
    mine = outcomes.xs("calculator", level="intervention")
    assert (mine["tool_calls"] == mine["samples"]).all()
    assert (outcomes.drop("calculator", level="intervention")["tool_calls"] == 0).all()
    sums = tooled.groupby("problem_id")["num_tokens"].sum()
    assert (mine.loc[sums.index, "tokens"] == sums).all()  # the intervention's cost: every generated token
    assert FAKE_CFG.config_hash() == dataclasses.replace(FAKE_CFG, max_tool_calls=2).config_hash()  # no tool: not hashed
    assert cfg.config_hash() != dataclasses.replace(cfg, max_tool_calls=2).config_hash()


def _prompt_count(request) -> int:
    return 10 + len(request.intervention)  # distinct per intervention, so a sum over the wrong rows shows


def test_tokens_per_phase_and_intervention_reach_the_summaries_metadata_and_topography(store):
    engine = FakeEngine(behaviour, count_prompt=_prompt_count)
    diag, labels, _, _, _, eval_summary = run_audit(store, engine, dataclasses.replace(FAKE_CFG, label_replicate=True))
    rollouts = store.read("rollouts", "ck")
    groups = rollouts.groupby(["problem_id", "phase", "intervention", "seed"])
    first = rollouts.loc[groups["sample_index"].idxmin()]
    assert (first["prompt_tokens"] == first["intervention"].map(lambda i: 10 + len(i))).all()
    assert rollouts.drop(first.index)["prompt_tokens"].eq(0).all()  # the shared prompt counted once per request

    def expected(phase):
        rows = rollouts[rollouts["phase"] == phase]
        return {iv: {"generated": int(g["num_tokens"].sum()), "prompt": int(g["prompt_tokens"].sum()), "rollouts": len(g)}
                for iv, g in rows.groupby("intervention")}

    assert diag["tokens_by_intervention"] == expected("diagnostic") and diag["prompt_tokens_unknown_rollouts"] == 0
    # run_audit keeps only some summaries: the label stage again (it resumes every stored group, generates nothing)
    label = audit.measure_rescues(store, engine, "ck", dataclasses.replace(FAKE_CFG, label_replicate=True), "run")
    assert label.summary["tokens_by_phase"]["label"]["tokens_by_intervention"] == expected("label")
    assert label.summary["tokens_by_phase"]["label_replicate"]["tokens_by_intervention"] == expected("label_replicate")
    both = rollouts[rollouts["phase"].isin(["label", "label_replicate"])]
    assert label.summary["generated_tokens"] == int(both["num_tokens"].sum())
    assert label.shown["generated_tokens_solution_prefix"] == expected("label")["solution_prefix"]["generated"]
    assert label.shown["label_replicate_prompt_tokens_retry"] == expected("label_replicate")["retry"]["prompt"]
    assert eval_summary["generated_tokens"] == int(rollouts.loc[rollouts["phase"] == "eval", "num_tokens"].sum())

    row = audit.topography(store).iloc[0]
    spent = rollouts[rollouts["phase"].isin(audit.FAILED_PHASES)]
    assert row["generated_tokens"] == int(rollouts["num_tokens"].sum())
    assert row["generated_tokens_per_failed"] == pytest.approx(spent["num_tokens"].sum() / len(labels))
    assert row["prompt_tokens_per_failed"] == pytest.approx(spent["prompt_tokens"].sum() / len(labels))


def test_an_engine_that_does_not_count_prompts_leaves_them_unknown_not_zero(store):
    diag, labels, *_ = run_audit(store, FakeEngine(behaviour))
    rollouts = store.read("rollouts", "ck")
    assert rollouts["prompt_tokens"].isna().all()
    assert diag["prompt_tokens"] is None and diag["prompt_tokens_unknown_rollouts"] == (rollouts["phase"] == "diagnostic").sum()
    shown = audit.probe(store, FakeEngine(behaviour), "ck", FAKE_CFG, "run").shown
    assert shown["prompt_tokens"].startswith("n/a (") and isinstance(shown["generated_tokens"], int)
    row = audit.topography(store).iloc[0]
    assert row["generated_tokens_per_failed"] > 0 and row["prompt_tokens_per_failed"] != row["prompt_tokens_per_failed"]


def _example_queries() -> list[str]:
    """The statements of docs/example_queries.sql, comments left out."""
    from tests.support import REPO

    text = "\n".join(line for line in (REPO / "docs/example_queries.sql").read_text().splitlines()
                     if not line.lstrip().startswith("--"))
    return [q.strip() for q in text.split(";") if q.strip()]


def test_the_example_queries_run_on_both_databases_and_query_5_sums_the_tokens(store):
    """docs/example_queries.sql says it runs unchanged on SQLite and PostgreSQL: every query, on a fake audit."""
    import sqlalchemy as sa

    run_audit(store, FakeEngine(behaviour, count_prompt=_prompt_count))
    queries = _example_queries()
    with store.engine.connect() as conn:
        results = [conn.execute(sa.text(q)).mappings().all() for q in queries]
    assert len(queries) >= 5 and all(results[:1]) and results[4]
    rollouts = store.read("rollouts", "ck")
    assert sum(int(r["generated_tokens"]) for r in results[4]) == int(rollouts["num_tokens"].sum())
    assert sum(int(r["prompt_tokens"]) for r in results[4]) == int(rollouts["prompt_tokens"].sum())
    assert all(int(r["prompt_unknown"]) == 0 for r in results[4])
    topo = audit.topography(store).iloc[0]
    [row] = results[0]
    assert (int(row["failed"]), int(row["labelled"])) == (topo["failed"], topo["failed"])
    assert all(abs(float(row[r]) - topo[f"share_{r}"]) < 5e-4 for r in REGIMES)


def test_example_query_1_estimates_the_shares_of_a_production_audit(store):
    """With a label subsample, query 1's shares are the topography's weighted estimates over the labelled problems,
    not shares of every failed problem with the unlabelled counted in no regime."""
    import sqlalchemy as sa

    cfg = dataclasses.replace(FAKE_CFG, label_subsample=0.5)
    run_audit(store, FakeEngine(behaviour), cfg)
    query = _example_queries()[0]
    with store.engine.connect() as conn:
        [row] = conn.execute(sa.text(query)).mappings().all()
    topo = audit.topography(store).iloc[0]
    assert int(row["labelled"]) == topo["labelled"] < int(row["failed"]) == topo["failed"]
    assert all(abs(float(row[r]) - topo[f"share_{r}"]) < 5e-4 for r in REGIMES)
    assert abs(sum(float(row[r]) for r in REGIMES) - 1) < 2e-3
