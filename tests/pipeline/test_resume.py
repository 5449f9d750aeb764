"""Rollouts are committed chunk by chunk and a re-run resumes: only what is missing is generated, nothing is lost
or duplicated. A crashing fake engine stands in for a dying one here; test_kill_resume.py kills a real vLLM run."""

import pytest

from fixability_dag.core.features import first_block_pass_rates
from fixability_dag.core.interventions import RETRY, build_requests
from fixability_dag.core.regimes import ground_truth
from fixability_dag.core.stopping import replay
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


# --- the label phase drawn in seeded blocks, stopped once decided (core.stopping) ---

LABEL_CFG = AuditConfig(chain_lengths=(1, 2, 3), templates_per_length=2, variants_per_template=2, n_samples=6,
                        retry_budget=12, intervention_budget=8, label_block=4, commit_every=5)
LABEL_KEYS = [*KEYS, "seed", "text", "answer", "is_correct", "request_hash"]


def label_setup(store, checkpoint_id, cfg=LABEL_CFG):
    store.register_checkpoint(checkpoint_id, "/nowhere", "fp")
    audit.snapshot_problems(store, cfg)
    audit.diagnose(store, FakeEngine(behaviour), checkpoint_id, cfg, "run")


def test_a_stopped_label_phase_draws_the_replay_of_the_fixed_budget_one_and_the_same_labels(store):
    """Same block seeds on two checkpoints (the checkpoint is not in the seed): the stopped run's rows are exactly
    what replaying the stopping rule on the fixed-budget rows keeps, and every label agrees."""
    fixed_cfg = AuditConfig(**{**LABEL_CFG.as_dict(), "label_early_stop": False})
    for key in ("fixed", "stopped"):
        label_setup(store, key)
    fixed = audit.measure_rescues(store, FakeEngine(behaviour), "fixed", fixed_cfg, "run")
    stopped = audit.measure_rescues(store, FakeEngine(behaviour), "stopped", LABEL_CFG, "run")
    full, drawn = rows(store, "label", "fixed"), rows(store, "label", "stopped")
    assert drawn[LABEL_KEYS].equals(replay(full, LABEL_CFG.label_block)[LABEL_KEYS].reset_index(drop=True))
    failed = audit.failed_ids(store, "fixed", LABEL_CFG)
    assert ground_truth(fixed.frame, failed).equals(ground_truth(stopped.frame, failed))
    # the saving is real and exactly the undrawn samples; the first block (rates, majorities) is the same in both
    assert stopped.summary["label_samples_saved"] == len(full) - len(drawn) > 0
    assert fixed.summary["label_samples_saved"] == 0 and fixed.summary["label_samples_drawn"] == len(full)
    columns = ["problem_id", "intervention", "budget", "first_block_samples", "first_block_correct", "majority_correct"]
    assert fixed.frame[columns].equals(stopped.frame[columns])
    # without a signal to stop on (nothing ever rescued) nothing is saved: the rule never guesses
    assert (stopped.frame.loc[~stopped.frame["rescued"], "samples"] == stopped.frame.loc[~stopped.frame["rescued"], "budget"]).all()


def test_a_killed_blocked_phase_resumes_block_by_block_to_the_uninterrupted_rows(store):
    label_setup(store, "ck")
    label_setup(store, "fresh")
    with pytest.raises(Crash):
        audit.measure_rescues(store, CrashingEngine(chunks=7), "ck", LABEL_CFG, "run-1")
    partial = rows(store, "label")
    assert 0 < len(partial) and (partial.groupby(["problem_id", "intervention", "seed"]).size() <= LABEL_CFG.label_block).all()
    engine = FakeEngine(behaviour)
    resumed = audit.measure_rescues(store, engine, "ck", LABEL_CFG, "run-2")
    assert resumed.summary["kept_requests"] > 0 and sum(len(c) for c in engine.calls) == resumed.summary["generated_requests"]
    audit.measure_rescues(store, FakeEngine(behaviour), "fresh", LABEL_CFG, "run-3")
    assert rows(store, "label")[LABEL_KEYS].equals(rows(store, "label", "fresh")[LABEL_KEYS])
    idle = FakeEngine(behaviour)
    assert audit.measure_rescues(store, idle, "ck", LABEL_CFG, "run-4").summary["generated_requests"] == 0 and idle.calls == []


def test_a_changed_block_size_or_stopping_setting_replaces_what_it_must(store):
    label_setup(store, "ck")
    audit.measure_rescues(store, FakeEngine(behaviour), "ck", LABEL_CFG, "run-1")
    stopped = rows(store, "label")
    # drawn to the full budget: the stopped blocks are kept (same seeds), only the rest is drawn
    full_cfg = AuditConfig(**{**LABEL_CFG.as_dict(), "label_early_stop": False})
    engine = FakeEngine(behaviour)
    audit.measure_rescues(store, engine, "ck", full_cfg, "run-2")
    full = rows(store, "label")
    assert not full.duplicated(KEYS).any() and len(full) > len(stopped)
    assert set(full.loc[full["run_id"] == "run-1", "request_hash"]) == set(stopped["request_hash"])
    # back to stopping: the blocks after each group's first success are deleted, not left behind
    audit.measure_rescues(store, FakeEngine(behaviour), "ck", LABEL_CFG, "run-3")
    assert rows(store, "label")[LABEL_KEYS].equals(stopped[LABEL_KEYS])
    # another block size: other requests, every group redrawn (greedy's one sample is the same request: kept)
    other = AuditConfig(**{**LABEL_CFG.as_dict(), "label_block": 3})
    audit.measure_rescues(store, FakeEngine(behaviour), "ck", other, "run-4")
    redrawn = rows(store, "label")
    stochastic = redrawn["intervention"] != "greedy"
    assert set(redrawn.loc[stochastic, "run_id"]) == {"run-4"} and set(redrawn.loc[~stochastic, "run_id"]) == {"run-1"}
    assert not redrawn.duplicated(KEYS).any() and (redrawn.loc[stochastic].groupby(["problem_id", "intervention", "seed"]).size() <= 3).all()


def test_the_tool_fields_leave_existing_hashes_alone_and_enter_them_when_set():
    """The literals were computed at code 0.5.0 before Decoding had tool fields: rows stored then keep their
    request hashes (a resumed run keeps them) and audits without a tool intervention keep their config hash."""
    import dataclasses

    from fixability_dag.core.sampling import Decoding, GenerationRequest

    plain = GenerationRequest("p1", "label", "retry", "Q: 1+1\nA: ", 4, 123, Decoding(temperature=0.5, max_tokens=64))
    assert request_hash(plain, "fp") == "948cad8209389391cb2d0d8abc8f711f"
    assert request_hash(dataclasses.replace(plain, decoding=Decoding(0.5, max_tokens=64, max_tool_calls=2)), "fp") == \
        "948cad8209389391cb2d0d8abc8f711f"  # read only with a tool
    assert AuditConfig().config_hash() == "de951b0d4b2a924b"
    tooled = dataclasses.replace(plain, decoding=Decoding(0.5, max_tokens=64, tool="calculator"))
    fewer = dataclasses.replace(plain, decoding=Decoding(0.5, max_tokens=64, tool="calculator", max_tool_calls=2))
    assert len({request_hash(r, "fp") for r in (plain, tooled, fewer)}) == 3


# --- the diagnostic phase in seeded blocks, each problem stopped once it is known not to be failed ---

DIAG_CFG = AuditConfig(chain_lengths=(1, 2, 3, 4), templates_per_length=2, variants_per_template=2, n_samples=8,
                       fail_threshold=0.25, diagnostic_block=2, diagnostic_early_stop=True, commit_every=3,
                       probe_samples=4, retry_budget=8, intervention_budget=4, eval_budget=4)
DIAG_FIXED = AuditConfig(**{**DIAG_CFG.as_dict(), "diagnostic_early_stop": False})
CAP = 2  # failed: at most 2 successes in 8 samples


def graded(request, rng):
    """Pass rates that put problems on both sides of the cap, some failed with a success or two."""
    from tests.support import GOLD

    length = int(request.problem_id.split("-L")[1].split("-")[0])
    p = {1: 0.8, 2: 0.2, 3: 0.35, 4: 0.0}[length] if request.phase == "diagnostic" else 0.3
    return GOLD[request.problem_id] if rng.random() < p else str(rng.randint(0, 99))


def diag_setup(store, checkpoint_id, cfg=DIAG_CFG):
    store.register_checkpoint(checkpoint_id, "/nowhere", "fp")
    audit.snapshot_problems(store, cfg)


def test_a_stopped_diagnostic_phase_is_the_replay_of_the_fixed_one_with_the_same_failed_problems(store):
    """Same block seeds on two checkpoints: the stopped run's rows are what the rule keeps of the fixed-budget
    blocked run's; the failed set, every failed problem's rows and features, and the first-block rates are equal."""
    for key, cfg in (("fixed", DIAG_FIXED), ("stopped", DIAG_CFG)):
        diag_setup(store, key, cfg)
        audit.diagnose(store, FakeEngine(graded), key, cfg, "run")
        audit.probe(store, FakeEngine(graded), key, cfg, "run")
        audit.featurize(store, key, cfg)
    full, drawn = rows(store, "diagnostic", "fixed"), rows(store, "diagnostic", "stopped")
    assert drawn[LABEL_KEYS].equals(replay(full, 2, CAP, ["problem_id"])[LABEL_KEYS].reset_index(drop=True))
    assert len(drawn) < len(full)  # problems did stop
    failed = audit.failed_ids(store, "fixed", DIAG_FIXED)
    assert failed == audit.failed_ids(store, "stopped", DIAG_CFG) and failed
    solved_a_little = full[full["problem_id"].isin(failed)].groupby("problem_id")["is_correct"].sum()
    assert (solved_a_little > 0).any()  # failed problems with successes below the cap, not only zeros
    mine = lambda f: f[f["problem_id"].isin(failed)][LABEL_KEYS].reset_index(drop=True)  # noqa: E731
    assert mine(full).equals(mine(drawn))
    columns = lambda key: store.read("problem_features", key).drop(columns=["checkpoint_id"])  # noqa: E731
    assert columns("fixed").equals(columns("stopped"))
    fixed_rates = first_block_pass_rates(full)
    assert fixed_rates.equals(first_block_pass_rates(drawn))


def test_a_killed_stopped_diagnostic_phase_resumes_and_a_rerun_keeps_every_stored_block(store):
    diag_setup(store, "ck")
    diag_setup(store, "fresh")
    crashing = CrashingEngine(chunks=4)
    crashing.sampler = graded
    with pytest.raises(Crash):
        audit.diagnose(store, crashing, "ck", DIAG_CFG, "run-1")
    engine = FakeEngine(graded)
    first = audit.diagnose(store, engine, "ck", DIAG_CFG, "run-2").summary
    assert first["kept_requests"] > 0 and sum(len(c) for c in engine.calls) == first["generated_requests"]
    audit.diagnose(store, FakeEngine(graded), "fresh", DIAG_CFG, "run-3")
    stored = rows(store)
    assert stored[LABEL_KEYS].equals(rows(store, checkpoint_id="fresh")[LABEL_KEYS])
    # a re-run keeps every stored block (each problem's blocks up to its decision) and asks the engine for nothing
    idle = FakeEngine(graded)
    again = audit.diagnose(store, idle, "ck", DIAG_CFG, "run-4").summary
    blocks_stored = stored.groupby(["problem_id", "seed"]).ngroups
    assert idle.calls == [] and again["generated_requests"] == 0 and again["kept_requests"] == blocks_stored
    assert rows(store)[LABEL_KEYS].equals(stored[LABEL_KEYS])
    # drawn to the full budget the stored blocks stay (same seeds); back to stopping, what follows a decision goes
    full = audit.diagnose(store, FakeEngine(graded), "ck", DIAG_FIXED, "run-5").summary
    assert full["kept_requests"] == blocks_stored and len(rows(store)) == len(DIAG_CFG.load_problems()) * 8
    audit.diagnose(store, FakeEngine(graded), "ck", DIAG_CFG, "run-6")
    assert rows(store)[LABEL_KEYS].equals(stored[LABEL_KEYS])


def test_the_diagnostic_settings_leave_unblocked_audits_alone():
    """The defaults keep the hash of every config written before they existed, so nothing is re-audited, and the
    blocked settings enter it (a blocked audit is another audit)."""
    assert AuditConfig().config_hash() == "de951b0d4b2a924b"
    assert DIAG_FIXED.config_hash() != DIAG_CFG.config_hash() != AuditConfig(**{**DIAG_CFG.as_dict(),
        "diagnostic_block": None, "diagnostic_early_stop": False}).config_hash()
