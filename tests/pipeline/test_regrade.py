"""Regrading a stored audit after a grader change: every result that depends on correctness is recomputed from the
stored texts, nothing is generated, and a stage that would need new samples says so."""

import pandas as pd
import pytest

from fixability_dag.core import sampling
from fixability_dag.core.answers import grade
from fixability_dag.pipeline.regrade import STAGES, regrade

from tests.support import GOLD, FakeEngine, behaviour, record_audit, run_audit

BOLD_L1 = dict(write=lambda r, answer: f"So the total is:\n\n**{answer}**" if "-L1-" in r.problem_id else f"#### {answer}")
"""L1 problems state their answer in bold, as chat models do; the rest in GSM8K style."""

RESULT_TABLES = {"problem_features": ["problem_id"], "regime_labels": ["problem_id"], "routing_plans": ["problem_id"],
                 "rescue_evaluations": ["policy", "regime"], "intervention_outcomes": ["problem_id", "intervention"]}


def audited(store, engine, checkpoint_id, old_grader=None, monkeypatch=None):
    """A full fake-engine audit, graded by ``old_grader`` (the grader before a change) when given, recorded as a
    successful audit under FAKE_CFG."""
    if old_grader is not None:
        monkeypatch.setattr(sampling, "grade", old_grader)
    run_audit(store, engine, checkpoint_id=checkpoint_id)
    if old_grader is not None:
        monkeypatch.setattr(sampling, "grade", grade)
    record_audit(store, checkpoint_id)


def results(store, checkpoint_id):
    out = {}
    for table, keys in RESULT_TABLES.items():
        frame = store.read(table, checkpoint_id).drop(columns=["checkpoint_id", "id", "created_at"], errors="ignore")
        out[table] = frame.sort_values(keys).reset_index(drop=True)
    return out


def test_regrading_fixes_false_negatives_without_generating(sqlite_store, monkeypatch):
    """The old grader could not read bold answers, so the mostly-solved L1 problems looked failed; after regrading,
    every result equals a fresh audit graded right, and no engine was asked for anything."""
    engine = FakeEngine(behaviour, **BOLD_L1)
    blind_to_bold = lambda gold, text: grade(gold, text) if "####" in text else (None, False)  # noqa: E731
    audited(sqlite_store, engine, "old", blind_to_bold, monkeypatch)
    assert sqlite_store.count("problem_features", "old") == 16  # L1 counted as failed
    calls = len(engine.calls)

    result = regrade(sqlite_store, "old")
    assert len(engine.calls) == calls and result.needs_generation == {}
    assert result.recomputed == [name for name, _ in STAGES]
    assert result.changed["diagnostic"] > 0 and result.pass_rate[1] > result.pass_rate[0]

    audited(sqlite_store, FakeEngine(behaviour, **BOLD_L1), "fresh")
    regraded, fresh = results(sqlite_store, "old"), results(sqlite_store, "fresh")
    for table in RESULT_TABLES:
        pd.testing.assert_frame_equal(regraded[table], fresh[table], check_dtype=False, obj=table)
    assert len(regraded["regime_labels"]) == 12


def test_a_stage_that_would_need_new_samples_says_so(sqlite_store, monkeypatch):
    """The old grader passed every L4 answer (a false positive), so L4 was never probed or rescued: regrading makes
    it failed, and probe_rollouts reports the missing requests instead of generating them."""
    engine = FakeEngine(behaviour)
    l4_golds = {gold for pid, gold in GOLD.items() if "-L4-" in pid}
    lenient_on_l4 = lambda gold, text: (grade(gold, text)[0], True) if gold in l4_golds else grade(gold, text)  # noqa: E731
    audited(sqlite_store, engine, "ck", lenient_on_l4, monkeypatch)
    before = sqlite_store.count("problem_features", "ck")
    calls = len(engine.calls)

    result = regrade(sqlite_store, "ck")
    assert len(engine.calls) == calls and result.recomputed == []
    [(stage, why)] = result.needs_generation.items()
    assert stage == "probe_rollouts" and "re-materialize" in why and "problems arith-L4-" in why
    assert result.pass_rate[1] < result.pass_rate[0]
    assert sqlite_store.count("problem_features", "ck") == before  # later stages were not run on half the data


def test_a_checkpoint_never_audited_is_refused(sqlite_store):
    with pytest.raises(ValueError, match="no successful audit step"):
        regrade(sqlite_store, "nowhere")
