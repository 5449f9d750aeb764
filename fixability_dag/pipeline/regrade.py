"""Re-grade a stored checkpoint after a grader change, and recompute what depends on correctness, generating nothing.

Rollouts keep their text, so a better grader can be applied to an audit that already cost hours of generation:

1. every stored rollout of the checkpoint (each phase) is graded again against its problem's gold answer, and the
   rows whose ``answer`` or ``is_correct`` changed are rewritten (one transaction per phase, under the
   checkpoint's lease like every audit step);
2. the stages after ``base_rollouts`` run again, in the asset graph's order, on a :class:`NoGeneration` engine.
   Their rollout steps resume from what is stored (every group whose request hash matches is kept), so a stage
   whose requests are all stored recomputes its outcomes without calling an engine. A stage that would need new
   samples (a problem that the new grader counts as failed had no probe or rescue rollouts) raises
   :class:`GenerationNeeded` instead; regrading stops there and says which stage, how many requests, and that
   re-materializing the partition generates only those. Later stages depend on it and are not run.

What it cannot see: a stored text cut to ``MAX_TEXT_CHARS`` (its head and tail are kept, and answers sit at the
end), and groups a stage drops because their problem no longer failed (a re-run would drop them too).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence

import pandas as pd

from fixability_dag.core.answers import grade
from fixability_dag.core.sampling import PHASES, Completion, GenerationRequest
from fixability_dag.core.stopping import first_seeded_block
from fixability_dag.pipeline import audit
from fixability_dag.pipeline.config import AuditConfig
from fixability_dag.storage.store import AuditStore




class GenerationNeeded(RuntimeError):
    """A stage asked for rollouts that are not stored; regrading never generates."""


class NoGeneration:
    """A :class:`~fixability_dag.core.sampling.RolloutEngine` that refuses every request, naming the stage."""

    def __init__(self, stage: str):
        self.stage = stage

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        if not requests:
            return []
        problems = sorted({r.problem_id for r in requests})
        raise GenerationNeeded(
            f"{self.stage} needs {len(requests)} requests that are not stored (problems {', '.join(problems[:3])}"
            f"{' ...' if len(problems) > 3 else ''}): re-materialize this checkpoint's partition, which keeps every "
            "stored group and generates only these")


@dataclasses.dataclass
class RegradeResult:
    changed: dict[str, int]  # phase -> rows whose answer or correctness changed
    pass_rate: tuple[float, float]  # diagnostic pass rate before, after
    recomputed: list[str]
    needs_generation: dict[str, str]  # stage -> why (the first such stage; later ones were not run)


STAGES = (
    ("probe_rollouts", lambda store, engine, ck, cfg, run: audit.probe(store, engine, ck, cfg, run)),
    ("failure_features", lambda store, engine, ck, cfg, run: audit.featurize(store, ck, cfg)),
    ("rescue_rollouts", lambda store, engine, ck, cfg, run: audit.measure_rescues(store, engine, ck, cfg, run)),
    ("regime_labels", lambda store, engine, ck, cfg, run: audit.label(store, ck, cfg)),
    ("routing_plan", lambda store, engine, ck, cfg, run: audit.plan(store, ck, cfg)),
    ("rescue_evaluation", lambda store, engine, ck, cfg, run: audit.evaluate(store, engine, ck, cfg, run)),
)
"""The stages after base_rollouts, in the asset graph's order (each reads what the ones before it stored)."""


def audited_config(store: AuditStore, checkpoint_id: str) -> AuditConfig:
    """The configuration the checkpoint's latest successful audit step ran with (what its rows were computed under)."""
    runs = store.read("audit_runs", checkpoint_id)
    runs = runs[runs["status"] == "success"] if len(runs) else runs
    if runs.empty:
        raise ValueError(f"checkpoint {checkpoint_id} has no successful audit step in {store!r}: nothing to regrade")
    return AuditConfig.from_mapping(runs.sort_values("started_at").iloc[-1]["config"])


def regrade_phase(frame: pd.DataFrame, gold: dict[tuple[str, str], str]) -> pd.DataFrame:
    """``frame``'s rollouts graded again against ``gold`` ((suite, problem id) -> answer); ``changed`` marks the rows
    whose answer or correctness moved."""
    graded = [grade(gold[key], text or "") for key, text in zip(zip(frame["suite"], frame["problem_id"]), frame["text"])]
    answers = pd.Series([a for a, _ in graded], index=frame.index, dtype=object)
    correct = pd.Series([bool(c) for _, c in graded], index=frame.index)
    before = frame["answer"].astype(object).where(frame["answer"].notna(), None)
    changed = (answers.fillna("\0") != before.fillna("\0")) | (correct != frame["is_correct"].astype(bool))
    return frame.assign(answer=answers, is_correct=correct, changed=changed)


def regrade(store: AuditStore, checkpoint_id: str) -> RegradeResult:
    """Re-grade every stored rollout of ``checkpoint_id`` and recompute the stages that depend on correctness."""
    cfg = audited_config(store, checkpoint_id)
    run_id = f"regrade-{uuid.uuid4().hex[:12]}"
    store.hold_lease(checkpoint_id, run_id)
    try:
        changed, rates = {}, []
        gold = {(p.suite, p.problem_id): p.gold_answer for p in store.problems()}
        for phase in PHASES:
            frame = store.read("rollouts", checkpoint_id, phase=phase)
            if frame.empty:
                continue
            graded = regrade_phase(frame, gold)
            if phase == "diagnostic":
                first = first_seeded_block(frame, ["problem_id"]).index  # the rate every report reads
                rates = [float(frame.loc[first, "is_correct"].astype(bool).mean()),
                         float(graded.loc[first, "is_correct"].mean())]
            changed[phase] = int(graded["changed"].sum())
            if changed[phase]:
                store.replace("rollouts", checkpoint_id, graded.drop(columns=["id", "checkpoint_id", "changed"]), phase=phase)
        if not rates:
            raise ValueError(f"checkpoint {checkpoint_id} has no diagnostic rollouts: nothing to regrade")
        recomputed, needs = [], {}
        for name, stage in STAGES:
            try:
                stage(store, NoGeneration(name), checkpoint_id, cfg, run_id)
            except GenerationNeeded as exc:
                needs[name] = str(exc)
                break
            recomputed.append(name)
        return RegradeResult(changed, (rates[0], rates[1]), recomputed, needs)
    finally:
        store.release_leases(run_id)
