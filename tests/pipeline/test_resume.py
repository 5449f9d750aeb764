"""Rollouts are committed chunk by chunk and a re-run resumes: only what is missing is generated, nothing is lost
or duplicated. A crashing fake engine stands in for a dying one here; test_kill_resume.py kills a real vLLM run."""

import pytest

from fixability_dag.core.interventions import RETRY, build_requests
from fixability_dag.pipeline import audit
from fixability_dag.pipeline.config import AuditConfig
from fixability_dag.pipeline.resume import group_key, plan_resume, request_hash

from tests.support import FakeEngine, behaviour

pytestmark = pytest.mark.postgres

CFG = AuditConfig(chain_lengths=(1, 2, 3), templates_per_length=2, variants_per_template=2, n_samples=6, commit_every=3)
KEYS = ["problem_id", "intervention", "sample_index"]


class Crash(RuntimeError):
    pass


class CrashingEngine(FakeEngine):
    """Answers ``chunks`` generate calls, then dies like an engine process would."""

    def __init__(self, chunks: int):
        super().__init__(behaviour)
        self.chunks = chunks

    def generate(self, requests):
        if len(self.calls) >= self.chunks:
            raise Crash("engine died")
        return super().generate(requests)


def setup(store, checkpoint_id="ck", fingerprint="fp"):
    store.register_checkpoint(checkpoint_id, "/nowhere", fingerprint)
    audit.snapshot_problems(store, CFG)


def rows(store, phase="diagnostic", checkpoint_id="ck"):
    frame = store.read("rollouts", checkpoint_id, phase=phase)
    return frame.sort_values(KEYS).reset_index(drop=True)


def test_a_crash_leaves_whole_groups_and_a_rerun_generates_only_the_rest(store):
    setup(store)
    n_problems = len(CFG.load_problems())
    with pytest.raises(Crash):
        audit.diagnose(store, CrashingEngine(chunks=2), "ck", CFG, "run-1")
    committed = rows(store)
    assert len(committed) == 2 * CFG.commit_every * CFG.n_samples  # two chunks of 3 requests x 6 samples
    assert (committed.groupby(["problem_id", "intervention"]).size() == CFG.n_samples).all()  # whole groups only

    engine = FakeEngine(behaviour)
    summary = audit.diagnose(store, engine, "ck", CFG, "run-2").summary
    assert summary["kept_requests"] == 2 * CFG.commit_every
    assert summary["generated_requests"] == n_problems - 2 * CFG.commit_every
    assert sum(len(c) for c in engine.calls) == summary["generated_requests"]  # never re-asked for a kept group
    resumed = rows(store)
    assert len(resumed) == n_problems * CFG.n_samples and not resumed.duplicated(KEYS).any()
    assert set(resumed[resumed["run_id"] == "run-1"]["problem_id"]) == set(committed["problem_id"])

    # the resumed result is the uninterrupted one: same seeds, same samples
    setup(store, "fresh")
    audit.diagnose(store, FakeEngine(behaviour), "fresh", CFG, "run-3")
    cols = KEYS + ["seed", "text", "answer", "is_correct", "request_hash"]
    assert rows(store, checkpoint_id="fresh")[cols].equals(resumed[cols])

    # a third run has nothing left to do
    idle = FakeEngine(behaviour)
    assert audit.diagnose(store, idle, "ck", CFG, "run-4").summary["generated_requests"] == 0 and idle.calls == []


def test_changed_settings_or_weights_regenerate_what_they_touch(store):
    setup(store)
    audit.diagnose(store, FakeEngine(behaviour), "ck", CFG, "run-1")
    more = AuditConfig(**{**CFG.as_dict(), "chain_lengths": (1, 2), "n_samples": 4})
    summary = audit.diagnose(store, FakeEngine(behaviour), "ck", more, "run-2").summary
    assert summary["kept_requests"] == 0  # n changed: every group's hash changed
    assert len(rows(store)) == len(more.load_problems()) * 4  # groups of dropped problems removed, none duplicated
    store.register_checkpoint("ck", "/nowhere", "new-weights")  # same name, new weights (re-saved checkpoint)
    assert audit.diagnose(store, FakeEngine(behaviour), "ck", more, "run-3").summary["kept_requests"] == 0


def test_plan_resume_keeps_only_complete_matching_groups():
    problems = CFG.load_problems()[:3]
    requests = build_requests(problems, RETRY, "diagnostic", 4, CFG.decoding, 0)
    hashes = {group_key(r): request_hash(r, "fp") for r in requests}
    k0, k1, k2 = (group_key(r) for r in requests)
    stored = {k0: (hashes[k0], 4), k1: (hashes[k1], 3), k2: ("other", 4), ("gone", RETRY): (None, 4)}
    plan = plan_resume(requests, stored, hashes)
    assert [group_key(r) for r in plan.todo] == [k1, k2] and plan.kept == 1 and plan.stale == [("gone", RETRY)]
    assert request_hash(requests[0], "fp") != request_hash(requests[0], "other-weights")
