"""Several suites per checkpoint, and two problem files that reuse each other's ids: nothing is ever overwritten.

The issue this guards against: ``problems`` keyed by id alone let a second file with ids ``0, 1, ...`` overwrite the
first file's questions and gold answers, and the first checkpoint's rollouts then joined to the wrong problems.
"""

from __future__ import annotations

import pandas as pd
import pytest

from fixability_dag.core.problems import problems_by_id
from fixability_dag.pipeline import audit
from fixability_dag.pipeline.config import AuditConfig
from resources import AuditSettings

from tests.support import GSM8K_ROWS, PER_SUITE, FakeEngine, run_audit, suite_files

ROLLOUT_KEY = ["suite", "problem_id", "phase", "intervention", "sample_index"]
SMALL = dict(problem_format="gsm8k", id_field=None, n_samples=8, probe_samples=4, retry_budget=8, intervention_budget=4,
             eval_budget=4, label_block=2, cluster_seeds=2, cluster_bootstraps=3, ablation_seeds=1)


def gold_sampler(configs):
    """A checkpoint that solves ids 0-2 of the first suite and 5-7 of the second, retry-rescues 3 and 4 of both, and
    never solves the rest: each suite's problems are found by their question, which only that suite's prompts hold."""
    problems = [p for cfg in configs for p in cfg.load_problems()]

    def sampler(request, rng):
        [problem] = [p for p in problems if p.problem_id == request.problem_id and p.question in request.prompt]
        index, first = int(problem.problem_id), problem.suite == "first"
        solved = index <= 2 if first else index >= 5
        if solved or (index in (3, 4) and request.phase not in ("diagnostic", "probe") and request.intervention == "retry"
                      and rng.random() < 0.9):
            return problem.gold_answer
        return "-1"

    return sampler


def test_two_files_with_the_same_ids_on_two_checkpoints_overwrite_nothing(sqlite_store, tmp_path):
    first, second = suite_files(tmp_path)
    one = AuditConfig(**SMALL, problem_path=str(first))
    both = AuditConfig(**SMALL, problem_path=str(first), suites=({"problem_path": str(first)}, {"problem_path": str(second)}))
    assert [c.suite_name for c in both.suite_configs()] == ["first", "second"]
    engine = FakeEngine(gold_sampler(both.suite_configs()))
    run_audit(sqlite_store, engine, one, "ck-one")
    before = sqlite_store.read("rollouts", "ck-one").drop(columns="id").sort_values(ROLLOUT_KEY)
    run_audit(sqlite_store, engine, both, "ck-both")

    stored = sqlite_store.read("problems")
    assert len(stored) == 2 * PER_SUITE and set(stored["suite"]) == {"first", "second"}
    for cfg in both.suite_configs():  # each suite's questions and gold answers as its file has them
        mine = stored[stored["suite"] == cfg.suite_name].set_index("problem_id")
        for p in cfg.load_problems():
            assert (mine.loc[p.problem_id, "question"], mine.loc[p.problem_id, "gold_answer"]) == (p.question, p.gold_answer)
    assert stored.groupby("problem_id")["question"].nunique().eq(2).all(), "every id is in both suites, different"

    after = sqlite_store.read("rollouts", "ck-one").drop(columns="id").sort_values(ROLLOUT_KEY)
    pd.testing.assert_frame_equal(after.reset_index(drop=True), before.reset_index(drop=True))
    assert set(after["suite"]) == {"first"}

    rollouts = sqlite_store.read("rollouts", "ck-both", phase="diagnostic")
    assert rollouts.groupby("suite").size().to_dict() == {"first": PER_SUITE * 8, "second": PER_SUITE * 8}
    by_suite = {c.suite_name: problems_by_id(c.load_problems()) for c in both.suite_configs()}
    rates = rollouts.groupby(["suite", "problem_id"])["is_correct"].mean()
    for (suite, pid), rate in rates.items():  # graded against its own suite's gold answer
        solved = int(pid) <= 2 if suite == "first" else int(pid) >= 5
        assert rate == (1.0 if solved else 0.0), (suite, pid, by_suite[suite][pid].gold_answer)

    labels = sqlite_store.read("regime_labels", "ck-both")
    failed = {s: set(g["problem_id"]) for s, g in labels.groupby("suite")}
    assert failed == {"first": {"3", "4", "5", "6", "7"}, "second": {"0", "1", "2", "3", "4"}}
    assert labels.set_index(["suite", "problem_id"]).loc[[("first", "3"), ("second", "4")], "true_regime"].eq(
        "retry_recoverable").all()
    for table in ("problem_features", "routing_plans", "intervention_outcomes", "probe_shifts"):
        assert set(sqlite_store.read(table, "ck-both")["suite"]) == {"first", "second"}, table
    evals = sqlite_store.read("rescue_evaluations", "ck-both")
    assert evals.groupby("suite").size().nunique() == 1 and set(evals["suite"]) == {"first", "second"}
    # the first checkpoint's results are still its own suite's alone
    assert set(sqlite_store.read("regime_labels", "ck-one")["problem_id"]) == {"3", "4", "5", "6", "7"}


def test_rerunning_a_multi_suite_audit_keeps_every_group_and_changes_no_row(sqlite_store, tmp_path):
    first, second = suite_files(tmp_path)
    both = AuditConfig(**SMALL, problem_path=str(first), suites=({"problem_path": str(first)}, {"problem_path": str(second)}))
    engine = FakeEngine(gold_sampler(both.suite_configs()))
    run_audit(sqlite_store, engine, both, "ck")
    tables = ("rollouts", "problem_features", "regime_labels", "routing_plans", "rescue_evaluations")
    before = {t: sqlite_store.read(t, "ck") for t in tables}
    engine.calls.clear()
    sqlite_store.register_checkpoint("ck", "/nowhere", "fp")
    result = audit.diagnose(sqlite_store, engine, "ck", both, "again")
    assert {s: v["generated_requests"] for s, v in result.summary["suites"].items()} == {"first": 0, "second": 0}
    assert result.shown["first.kept_requests"] == PER_SUITE
    run_audit(sqlite_store, engine, both, "ck")
    assert not any(engine.calls), "a re-run of an unchanged audit generates nothing, in any suite"
    for t in tables:
        key = [c for c in ("suite", "problem_id", "phase", "intervention", "sample_index", "policy", "regime", "matching")
               if c in before[t]]
        pd.testing.assert_frame_equal(sqlite_store.read(t, "ck").drop(columns="id", errors="ignore").sort_values(key).reset_index(drop=True),
                                      before[t].drop(columns="id", errors="ignore").sort_values(key).reset_index(drop=True))


def test_suites_settings_are_validated_with_the_entry_named(tmp_path):
    first, second = suite_files(tmp_path)
    with pytest.raises(ValueError, match=r"suites\[1\]: unknown audit settings \['problem_file'\]"):
        AuditConfig(suites=({"name": "a"}, {"name": "b", "problem_file": "x"}))
    with pytest.raises(ValueError, match=r"suites\[0\] and suites\[1\] are both suite 'first'"):
        AuditConfig(**SMALL, problem_path=str(first), suites=({"problem_path": str(first)}, {"problem_path": str(first)}))
    with pytest.raises(ValueError, match=r"suites\[1\] \(math\): problem_format 'math' needs problem_path"):
        AuditConfig(suites=({"name": "arith"}, {"name": "math", "problem_format": "math"}))
    with pytest.raises(ValueError, match=r"suites\[0\] must be a mapping"):
        AuditConfig(suites=("gsm8k",))
    named = AuditConfig(**SMALL, problem_path=str(first), suites=({"name": "gsm-a", "problem_path": str(first)},
                                                                  {"name": "gsm-b", "problem_path": str(second),
                                                                   "max_tokens": 64}))
    a, b = named.suite_configs()
    assert (a.suite_name, b.suite_name, a.max_tokens, b.max_tokens) == ("gsm-a", "gsm-b", 128, 64)
    assert {p.suite for p in b.load_problems()} == {"gsm-b"} and len(named.load_problems()) == 2 * PER_SUITE
    # no suites: the config hash of a pre-suites config is unchanged, and a list of suites changes it
    assert "suites" not in AuditConfig().as_dict() and named.config_hash() != a.config_hash()
    assert AuditConfig.from_mapping(named.as_dict()) == named
    single = AuditConfig(**SMALL, problem_path=str(first), suites=({"problem_path": str(second)},))
    assert single.suite_name == "second" and {p.suite for p in single.load_problems()} == {"second"}


def test_the_settings_resource_carries_suites(tmp_path):
    first, second = suite_files(tmp_path)
    settings = AuditSettings(problem_format="gsm8k", problem_path=str(first),
                             suites=[{"problem_path": str(first)}, {"problem_path": str(second), "n_samples": 4}])
    cfg = settings.config()
    assert [(c.suite_name, c.n_samples) for c in cfg.suite_configs()] == [("first", 16), ("second", 4)]
    assert AuditSettings().config().suites == ()
    assert len(GSM8K_ROWS) >= 2 * PER_SUITE
