"""The audit of one checkpoint as a sequence of stages over the results database.

Each stage reads what earlier stages stored, computes, and replaces its own rows for the checkpoint atomically, so
any stage can be re-run alone (a Dagster re-materialization) and always leaves one consistent copy. The Dagster
assets are thin wrappers around these functions; scripts and tests can call them directly.

A configuration may cover several suites (``AuditConfig.suites``). Every stage runs once per suite
(:func:`per_suite`), on a store bound to that suite and that suite's own config: a suite's failed problems,
features, clusters, plan and evaluation are computed from its rows alone, as if it were audited by itself, and
never pooled with another suite's (GSM8K and MATH failures differ in kind, and pooling would let one suite's
problems shift the other's clusters and rates).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
from collections.abc import Callable

import numpy as np
import pandas as pd

from fixability_dag.core.features import (
    ALL_FEATURES,
    FEATURES,
    compute_features,
    failed_problem_ids,
    first_block_pass_rates,
)
from fixability_dag.core.interventions import RETRY, build_requests
from fixability_dag.core.problems import Problem, problems_by_id
from fixability_dag.core.regimes import (
    REGIMES,
    REPORT_METHODS,
    accuracy_rows,
    cluster,
    clustering_accuracy,
    feature_ablation,
    feature_matrix,
    fit_regime_model,
    ground_truth,
    intervention_outcomes,
    label_regimes,
    predict_regimes,
    regime_report,
)
from fixability_dag.core.rescue import evaluate_policies, interventions_needed, policy_choices, summarize
from fixability_dag.core.routing import CATALOG_RULE_VERSION, fit_thresholds, route_actions, route_catalog
from fixability_dag.core.sampling import RolloutEngine, graded_chunks, split_by_context, token_counts
from fixability_dag.core.signals import retry_headroom, shift_features
from fixability_dag.core.stats import cohen_kappa, majority_share, matched_accuracy
from fixability_dag.core.stopping import decided, failed_cap, first_seeded_block, savings
from fixability_dag.core.subsample import Subsample, draw_subsample, regime_shares
from fixability_dag.pipeline import metrics
from fixability_dag.pipeline.config import AuditConfig
from fixability_dag.pipeline.progress import Progress
from fixability_dag.pipeline.resume import group_key, plan_resume, request_hash
from fixability_dag.storage.store import AuditStore

log = logging.getLogger(__name__)


@dataclasses.dataclass
class StageResult:
    """What one stage did, for its caller to record and show.

    ``rows`` and ``summary`` (JSON-able) go to ``audit_runs``; ``frame`` is the stage's main output (features,
    labels, plan...), if it has one; ``shown`` holds what a person should see, as plain values: numbers, strings
    and DataFrames, each under the name it should be shown by (the Dagster layer turns them into metadata).
    """

    rows: int
    summary: dict
    frame: pd.DataFrame | None = None
    shown: dict = dataclasses.field(default_factory=dict)


def merge_suites(results: list[tuple[str, StageResult]]) -> StageResult:
    """One stage's results over several suites as one: rows added, each suite's summary under ``suites``, frames
    stacked with a ``suite`` column, each shown value under ``<suite>.<name>``. One suite: its result unchanged."""
    if len(results) == 1:
        return results[0][1]
    frames = [r.frame.assign(suite=name) for name, r in results if r.frame is not None]
    return StageResult(sum(r.rows for _, r in results), {"suites": {name: r.summary for name, r in results}},
                       pd.concat(frames, ignore_index=True) if frames else None,
                       {f"{name}.{key}": value for name, r in results for key, value in r.shown.items()})


def per_suite(stage: Callable[..., StageResult]) -> Callable[..., StageResult]:
    """Run ``stage(store, ..., cfg, ...)`` once per suite of ``cfg``, with ``store`` bound to the suite and
    ``cfg`` that suite's config, and merge the results (:func:`merge_suites`)."""
    signature = inspect.signature(stage)

    @functools.wraps(stage)
    def run(*args, **kwargs) -> StageResult:
        bound = signature.bind(*args, **kwargs)
        store, cfg = bound.arguments["store"], bound.arguments["cfg"]
        results = []
        for suite_cfg in cfg.suite_configs():
            bound.arguments.update(store=store.for_suite(suite_cfg.suite_name), cfg=suite_cfg)
            results.append((suite_cfg.suite_name, stage(*bound.args, **bound.kwargs)))
        return merge_suites(results)

    return run


def _two_columns(values: dict, key: str, value: str) -> pd.DataFrame:
    return pd.DataFrame({key: list(values), value: list(values.values())})


@per_suite
def snapshot_problems(store: AuditStore, cfg: AuditConfig) -> StageResult:
    """Load the configured problems (failing loudly on a malformed file) and upsert them by id."""
    problems = cfg.load_problems()
    store.upsert_problems(problems)
    by_len = pd.Series(["n/a" if p.difficulty is None else str(p.difficulty) for p in problems]).value_counts()
    by_len = by_len.sort_index(key=lambda keys: keys.map(lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k)))
    summary = {"problems": len(problems), "suite": problems[0].suite, "by_difficulty": {k: int(v) for k, v in by_len.items()}}
    return StageResult(len(problems), summary, shown={
        "problems": len(problems), "suite": summary["suite"],
        "problems_by_difficulty": _two_columns(summary["by_difficulty"], "difficulty", "problems")})


def audit_problems(store: AuditStore, cfg: AuditConfig) -> list[Problem]:
    """The configured problems, as stored (the database is the source of truth for ids and gold answers)."""
    ids = [p.problem_id for p in cfg.load_problems()]
    stored = problems_by_id(store.problems(ids))
    missing = [pid for pid in ids if pid not in stored]
    if missing:
        raise RuntimeError(f"{len(missing)} configured problems are not in the database (first: {missing[0]}); materialize problem_set first")
    return [stored[pid] for pid in ids]


def _rollouts(store: AuditStore, checkpoint_id: str, phase: str) -> pd.DataFrame:
    frame = store.read("rollouts", checkpoint_id, phase=phase)
    if not frame.empty:
        frame["answer"] = frame["answer"].astype(object).where(frame["answer"].notna(), None)
    return frame


def _diagnostic(store: AuditStore, checkpoint_id: str) -> pd.DataFrame:
    diagnostic = _rollouts(store, checkpoint_id, "diagnostic")
    if diagnostic.empty:
        raise RuntimeError(f"no diagnostic rollouts for checkpoint {checkpoint_id}; materialize base_rollouts first")
    return diagnostic


def failed_ids(store: AuditStore, checkpoint_id: str, cfg: AuditConfig) -> list[str]:
    return failed_problem_ids(_diagnostic(store, checkpoint_id), cfg.fail_threshold)


def label_subsample(failed: list[str], cfg: AuditConfig) -> Subsample:
    """The failed problems the label phase covers (production mode: ``label_subsample``; else every one), a pure
    function of the failed set and the audit seed (:func:`fixability_dag.core.subsample.draw_subsample`)."""
    return draw_subsample(failed, cfg.label_subsample, cfg.seed)


def _subsample_shown(sample: Subsample) -> dict:
    """What a stage shows of the label subsample, in production mode only (a full audit shows what it always did)."""
    if sample.complete:
        return {}
    return {"label_subsample": sample.describe(), "labelled_problems": len(sample.drawn)}


def sample_phase(store: AuditStore, engine: RolloutEngine, checkpoint_id: str, phase: str, requests, problems,
                 run_id: str | None = None, commit_every: int = 32) -> pd.DataFrame:
    """Generate, grade and commit a phase's rollouts chunk by chunk, resuming whatever a killed run committed.

    Groups already stored with the same request hash and all their samples are kept; groups no request asks for any
    more are removed; the rest is generated ``commit_every`` requests at a time, each chunk committed in one
    transaction. Returns the phase's rows as stored; ``frame.attrs`` says how many requests were kept / generated /
    skipped (prompt too long for the context, see :func:`fit_context`).
    """
    requests, skipped = fit_context(store, engine, checkpoint_id, phase, requests, problems, run_id)
    registered = store.checkpoint(checkpoint_id)
    fingerprint = registered["fingerprint"] if registered else None
    hashes = {group_key(r): request_hash(r, fingerprint) for r in requests}
    stored = store.rollout_groups(checkpoint_id, phase)
    plan = plan_resume(requests, stored, hashes)
    # Stored rows that no request keeps (groups asked for no more, partial groups, groups sampled with other settings
    # or weights) go in one delete up front, so every chunk below is a plain insert: deleting per chunk cost
    # PostgreSQL 1.6 s per 32-request chunk at 640,000 stored rows. A kill after this delete loses nothing a
    # re-run would keep: those groups are regenerated either way.
    doomed = plan.stale + [key for key in map(group_key, plan.todo) if key in stored]
    if doomed:
        store.delete_rollout_groups(checkpoint_id, phase, doomed, whole_phase=len(doomed) == len(stored))
    _generate_and_commit(store, engine, checkpoint_id, plan.todo, problems_by_id(problems), lambda r: hashes[group_key(r)],
                         run_id, commit_every, Progress(phase, len(plan.todo), plan.kept))
    frame = _sorted_phase(store, checkpoint_id, phase)
    frame.attrs.update(requests=len(requests), kept_requests=plan.kept, generated_requests=len(plan.todo), **skipped)
    return frame


def _generate_and_commit(store: AuditStore, engine: RolloutEngine, checkpoint_id: str, todo, problems: dict,
                         hash_of, run_id: str | None, commit_every: int, progress: Progress) -> list[dict]:
    """Generate and grade ``todo`` ``commit_every`` requests at a time, each chunk committed in one transaction,
    every row stamped with its run and the hash of the request that drew it, progress reported per chunk. Returns
    the rows committed."""
    committed: list[dict] = []
    for chunk, rows in graded_chunks(engine, todo, problems, commit_every):
        stamps = iter([hash_of(r) for r in chunk for _ in range(r.n)])  # rows come in request order, n per request
        for row in rows:
            row["run_id"], row["request_hash"] = run_id, next(stamps)
        store.insert_rollouts(checkpoint_id, rows)
        progress.advance(len(chunk), rows)
        committed += rows
    return committed


def _sorted_phase(store: AuditStore, checkpoint_id: str, phase: str) -> pd.DataFrame:
    frame = _rollouts(store, checkpoint_id, phase)
    return frame.sort_values(["problem_id", "intervention", "sample_index"], kind="stable").reset_index(drop=True)


def sample_blocks(store: AuditStore, engine: RolloutEngine, checkpoint_id: str, phase: str, requests, problems,
                  run_id: str | None = None, commit_every: int = 32, stop: bool = True, threshold: int = 0) -> pd.DataFrame:
    """A phase drawn in seeded blocks (``requests`` holds every block of every group), round by round: each
    round draws the next block of every group not yet decided (:func:`fixability_dag.core.stopping.decided` with
    ``threshold``), so a group stops after the first block that takes its successes above ``threshold`` (the label
    phase: 0, its first success; the diagnostic phase: the failed cap); ``stop=False`` draws every block.

    Resume works per block: stored blocks are kept from each group's first block on while their hash matches and
    they are whole (and, with ``stop``, until the group is decided); everything after the first block not kept
    is deleted up front, as are groups no request asks for. A kill at any point therefore resumes to the rows an
    uninterrupted run draws. ``frame.attrs`` says how many block requests were planned / kept / generated, and
    which groups were skipped (prompt too long for the context).
    """
    requests, skipped = fit_context(store, engine, checkpoint_id, phase, requests, problems, run_id)
    registered = store.checkpoint(checkpoint_id)
    fingerprint = registered["fingerprint"] if registered else None
    hashes = {r: request_hash(r, fingerprint) for r in requests}
    groups: dict[tuple[str, str], list] = {}
    for r in sorted(requests, key=lambda r: r.first_index):
        groups.setdefault(group_key(r), []).append(r)
    stored = store.rollout_blocks(checkpoint_id, phase)
    progress: dict[tuple[str, str], list[int]] = {}  # group -> [blocks kept or drawn, correct samples so far]
    tails, stale = [], [key for key in stored if key not in groups]
    for key, chain in groups.items():
        have, kept, correct = stored.get(key, {}), 0, 0
        while kept < len(chain) and not (stop and decided(correct, threshold)):
            count, successes = have.get(hashes[chain[kept]], (0, 0))
            if count != chain[kept].n:
                break
            kept, correct = kept + 1, correct + successes
        progress[key] = [kept, correct]
        if sum(n for n, _ in have.values()) > sum(r.n for r in chain[:kept]):  # anything stored beyond the kept blocks
            tails.append((*key, chain[kept].first_index if kept < len(chain) else chain[-1].first_index + chain[-1].n))
    if stale:
        store.delete_rollout_groups(checkpoint_id, phase, stale, whole_phase=len(stale) == len(stored))
    if tails:
        store.delete_rollout_tails(checkpoint_id, phase, tails)
    kept_blocks, generated = sum(k for k, _ in progress.values()), 0
    by_problem = problems_by_id(problems)
    # at most every block not yet drawn of every undecided group: the count of requests progress reports against
    bound = sum(len(chain) - progress[key][0] for key, chain in groups.items() if not (stop and decided(progress[key][1], threshold)))
    reporter = Progress(phase, bound, kept_blocks)
    while True:
        todo = [chain[progress[key][0]] for key, chain in groups.items()
                if progress[key][0] < len(chain) and not (stop and decided(progress[key][1], threshold))]
        if not todo:
            break
        for row in _generate_and_commit(store, engine, checkpoint_id, todo, by_problem, hashes.__getitem__, run_id,
                                        commit_every, reporter):
            progress[(row["problem_id"], row["intervention"])][1] += int(row["is_correct"])
        for r in todo:
            progress[group_key(r)][0] += 1
        generated += len(todo)
    reporter.finish()
    frame = _sorted_phase(store, checkpoint_id, phase)
    frame.attrs.update(requests=len(requests), kept_requests=kept_blocks, generated_requests=generated, **skipped)
    return frame


def fit_context(store: AuditStore, engine: RolloutEngine, checkpoint_id: str, phase: str, requests, problems,
                run_id: str | None = None) -> tuple[list, dict]:
    """The requests whose prompt and ``max_tokens`` fit the engine's context; the others are recorded in
    ``skipped_requests`` (replacing the phase's earlier skips) with their reason, and left out.

    A skipped (problem, intervention) group is *missing*, not failed: it has no rollouts, so it gives no evidence
    either way (no outcome row, no probe shift; a policy that would pick it is not scored on that problem). The
    prompt is counted with the checkpoint's tokenizer by the engine itself (an engine that cannot count, such as a
    test double, skips nothing). Returns the requests kept and ``{"skipped_requests": count, "skipped_groups": keys}``.
    """
    requests = list(requests)
    skipped: list[dict] = []
    if requests and hasattr(engine, "prompt_tokens"):
        firsts = {}  # blocks of a group share its prompt: count it once
        for r in requests:
            firsts.setdefault(group_key(r), r)
        lengths = dict(zip(firsts, engine.prompt_tokens(list(firsts.values()))))
        requests, skipped = split_by_context(requests, [lengths[group_key(r)] for r in requests], engine.max_model_len)
    suite_of = {p.problem_id: p.suite for p in problems}  # a skip is keyed by its problem's suite, as rollouts are
    store.replace("skipped_requests", checkpoint_id,
                  [{**row, "suite": suite_of[row["problem_id"]], "run_id": run_id} for row in skipped], phase=phase)
    if skipped:
        log.warning("%s/%s: %d (problem, intervention) groups skipped, prompt too long for the context (first: %s/%s, %s)",
                    checkpoint_id, phase, len(skipped), skipped[0]["problem_id"], skipped[0]["intervention"],
                    skipped[0]["reason"])
    return requests, {"skipped_requests": len(skipped),
                      "skipped_groups": [(row["problem_id"], row["intervention"]) for row in skipped]}


def _requests(cfg: AuditConfig, problems, intervention: str, phase: str, budget: int, exemplars=(),
              block: int | None = None):
    """The requests of one intervention in one phase, under the audit's decoding, seed and prompt format."""
    return build_requests(problems, intervention, phase, budget, cfg.decoding, cfg.seed, exemplars, block=block,
                          prompt_format=cfg.prompt_format)


def _resume_summary(frame: pd.DataFrame) -> dict:
    return {k: int(frame.attrs[k]) for k in ("kept_requests", "generated_requests", "skipped_requests") if k in frame.attrs}


@per_suite
def diagnose(store: AuditStore, engine: RolloutEngine, checkpoint_id: str, cfg: AuditConfig, run_id: str | None = None) -> StageResult:
    """N base samples per problem: in one request per problem (prompt shared through ``n``), or with
    ``diagnostic_block`` in seeded blocks, each problem stopping once it is known not to be failed when
    ``diagnostic_early_stop`` is set (:mod:`fixability_dag.core.stopping`). The failed set reads every drawn sample;
    pass rates read each problem's first block, which is all its samples without blocks."""
    problems = audit_problems(store, cfg)
    if cfg.diagnostic_block is None:
        requests = _requests(cfg, problems, RETRY, "diagnostic", cfg.n_samples)
        frame = sample_phase(store, engine, checkpoint_id, "diagnostic", requests, problems, run_id, cfg.commit_every)
    else:
        requests = _requests(cfg, problems, RETRY, "diagnostic", cfg.n_samples, block=cfg.diagnostic_block)
        frame = sample_blocks(store, engine, checkpoint_id, "diagnostic", requests, problems, run_id, cfg.commit_every,
                              stop=cfg.diagnostic_early_stop, threshold=failed_cap(cfg.n_samples, cfg.fail_threshold))
    rates = first_block_pass_rates(frame)  # unbiased under the stopping rule (all samples without blocks)
    difficulty = {p.problem_id: p.difficulty for p in problems}
    rates["difficulty"] = rates["problem_id"].map(difficulty)
    by_difficulty = rates.groupby("difficulty")["pass_rate"].mean().round(3)
    summary = {
        "rollouts": len(frame),
        "problems": len(rates),
        "pass_rate": float(rates["correct"].sum() / rates["n"].sum()) if len(rates) else float("nan"),
        "solved_by_most": int((rates["pass_rate"] > 0.5).sum()),
        "solved_by_few": int(((rates["pass_rate"] > 0) & (rates["pass_rate"] <= 0.5)).sum()),
        "solved_by_none": int((rates["pass_rate"] == 0).sum()),
        "failed_problems": len(failed_problem_ids(frame, cfg.fail_threshold)),
        "pass_rate_by_difficulty": {str(k): float(v) for k, v in by_difficulty.items()},
        **(tokens := token_counts(frame)),
        "no_answer_rate": float(frame["answer"].isna().mean()),
        **_resume_summary(frame),
    }
    if cfg.diagnostic_block is not None:
        summary.update({"block": cfg.diagnostic_block, "early_stop": cfg.diagnostic_early_stop,
                        **{f"diagnostic_{k}": v for k, v in savings(_diagnostic_draws(frame, cfg)).items()}})
    shown = {k: v for k, v in summary.items() if k not in ("pass_rate_by_difficulty", *tokens)}
    shown.update(metrics.tokens(tokens))
    shown["pass_rate_by_difficulty"] = _two_columns(summary["pass_rate_by_difficulty"], "difficulty", "pass rate")
    return StageResult(len(frame), summary, frame, shown)


def _diagnostic_draws(frame: pd.DataFrame, cfg: AuditConfig) -> pd.DataFrame:
    """Per problem: its budget, the samples and tokens drawn, and its first block's (what ``savings`` reads)."""
    if frame.empty:
        return pd.DataFrame(columns=["budget", "samples", "tokens", "first_block_samples", "first_block_tokens"])
    drawn = frame.groupby("problem_id").agg(samples=("num_tokens", "size"), tokens=("num_tokens", "sum"))
    first = first_seeded_block(frame, ["problem_id"]).groupby("problem_id").agg(
        first_block_samples=("num_tokens", "size"), first_block_tokens=("num_tokens", "sum"))
    return drawn.join(first).assign(budget=cfg.n_samples).reset_index()


@per_suite
def probe(store: AuditStore, engine: RolloutEngine, checkpoint_id: str, cfg: AuditConfig, run_id: str | None = None) -> StageResult:
    """A small batch per failed problem under every probe intervention: the data behind the shift features."""
    failed = failed_ids(store, checkpoint_id, cfg)
    problems = store.problems(failed)
    exemplars = audit_problems(store, cfg)
    requests = []
    for name in cfg.probe_interventions:
        requests += _requests(cfg, problems, name, "probe", cfg.probe_samples, exemplars)
    frame = sample_phase(store, engine, checkpoint_id, "probe", requests, problems, run_id, cfg.commit_every)
    summary = {"failed_problems": len(failed), "rollouts": len(frame), "interventions": list(cfg.probe_interventions),
               "probe_share_of_diagnostic": len(cfg.probe_interventions) * cfg.probe_samples / cfg.n_samples,
               **(tokens := token_counts(frame)), **_resume_summary(frame)}
    shown = {k: v for k, v in summary.items() if k not in ("interventions", *tokens)} | metrics.tokens(tokens)
    return StageResult(len(frame), summary, frame, shown)


@per_suite
def featurize(store: AuditStore, checkpoint_id: str, cfg: AuditConfig) -> StageResult:
    """The registered features (the legacy ``probe_shift`` reads the ``probe_intervention``'s batch), the
    noise-corrected shift under every probe intervention (``probe_shifts``) and the empirical-Bayes retry headroom."""
    diagnostic = _diagnostic(store, checkpoint_id)  # read once: it gives the failed set and the features
    failed = failed_problem_ids(diagnostic, cfg.fail_threshold)
    probe_frame = _rollouts(store, checkpoint_id, "probe")
    legacy_probe = probe_frame[probe_frame["intervention"] == cfg.probe_intervention] if len(probe_frame) else probe_frame
    features = compute_features(diagnostic, legacy_probe, failed)
    # the prior is fitted on every problem's first block: a fixed sample size under the stopping rule (and every
    # sample without blocks), so the failed problems' headroom is the same whether the solved ones stopped or not
    headroom = retry_headroom(diagnostic, failed, k=cfg.retry_budget, prior=first_seeded_block(diagnostic, ["problem_id"]))
    features["retry_headroom"] = features["problem_id"].map(dict(zip(headroom["problem_id"], headroom["retry_headroom"])))
    shifts = shift_features(diagnostic, probe_frame, failed, cfg.probe_interventions, seed=cfg.seed)
    long = shifts.melt(id_vars="problem_id", var_name="intervention", value_name="shift")
    long["intervention"] = long["intervention"].str.removeprefix("shift_")
    store.replace("problem_features", checkpoint_id, features)
    store.replace("probe_shifts", checkpoint_id, long)
    fit = {k: headroom.attrs.get(k) for k in ("a", "b", "kappa", "method")}
    described = (features[[*ALL_FEATURES, "retry_headroom"]].describe().T[["mean", "std", "min", "max"]]
                 .reset_index(names="feature") if len(features) else pd.DataFrame())
    mean_shift = long.groupby("intervention")["shift"].mean().round(3).to_dict() if len(long) else {}
    return StageResult(len(features), {"failed_problems": len(features), "headroom_fit": fit, "mean_shift": mean_shift},
                       features, {"failed_problems": len(features), "feature_summary": described,
                                  "mean_corrected_shift": _two_columns(mean_shift, "intervention", "mean shift"),
                                  **{f"headroom_fit_{k}": v for k, v in fit.items()}})


def routing_features(store: AuditStore, checkpoint_id: str) -> pd.DataFrame:
    """The stored features with one ``shift_<intervention>`` column per probe intervention."""
    features = store.read("problem_features", checkpoint_id)
    shifts = store.read("probe_shifts", checkpoint_id)
    if shifts.empty:
        return features
    wide = shifts.pivot(index="problem_id", columns="intervention", values="shift").add_prefix("shift_").reset_index()
    return features.merge(wide, on="problem_id", how="left")


TOKEN_COLUMNS = ["intervention", "num_tokens", "prompt_tokens"]
"""What :func:`fixability_dag.core.sampling.token_counts` reads of a rollout frame."""

LABEL_PHASE, REPLICATE_PHASE = "label", "label_replicate"
"""The label phase, and its optional replicate on independent seeds (``label_replicate``): how stable labels are."""


@per_suite
def measure_rescues(store: AuditStore, engine: RolloutEngine, checkpoint_id: str, cfg: AuditConfig, run_id: str | None = None) -> StageResult:
    """Every catalog intervention on every failed problem (production mode: on the label subsample), fresh seeds:
    the evidence for the ground truth.

    Each group is drawn in seeded blocks of ``label_block`` samples and, with ``label_early_stop``, stops after
    its first block with a success: the labels only need to know whether the budget rescues the problem
    (:mod:`fixability_dag.core.stopping`). The summary says what that saved.
    """
    failed = failed_ids(store, checkpoint_id, cfg)
    sample = label_subsample(failed, cfg)  # production mode: the seeded subsample only
    problems = store.problems([pid for pid in failed if pid in sample.drawn])
    exemplars = audit_problems(store, cfg)
    frames, by_phase = {}, {}
    for phase in (LABEL_PHASE, REPLICATE_PHASE) if cfg.label_replicate else (LABEL_PHASE,):
        requests = []
        for name in cfg.interventions:  # the phase name enters every seed: the replicate's draws are independent
            requests += _requests(cfg, problems, name, phase, cfg.budget_for(name), exemplars, block=cfg.label_block)
        frames[phase] = sample_blocks(store, engine, checkpoint_id, phase, requests, problems, run_id, cfg.commit_every,
                                      stop=cfg.label_early_stop)
        budgets = {}
        for r in requests:  # a group's budget: every block it could draw (one sample for a deterministic one)
            budgets[r.intervention] = max(budgets.get(r.intervention, 0), r.first_index + r.n)
        by_phase[phase] = intervention_outcomes(frames[phase], cfg.label_block, budgets)
    saved = {phase: savings(o) for phase, o in by_phase.items()}
    outcomes = by_phase[LABEL_PHASE]
    store.replace("intervention_outcomes", checkpoint_id, outcomes)
    table = (outcomes.groupby("intervention")
             .agg(problems=("problem_id", "size"), rescued=("rescued", "sum"), majority_correct=("majority_correct", "sum"),
                  samples=("samples", "sum"), budget=("budget", "sum"), tokens=("tokens", "sum"),
                  tool_calls=("tool_calls", "sum")).reset_index())
    rows = int(outcomes["samples"].sum()) if len(outcomes) else 0
    resume = _resume_summary(frames[LABEL_PHASE])
    tokens = {phase: token_counts(f) for phase, f in frames.items()}
    summary = {"by_intervention": table.to_dict("records"), "early_stop": cfg.label_early_stop,
               "block": cfg.label_block, **{f"{phase}_{k}": v for phase, d in saved.items() for k, v in d.items()},
               **token_counts(pd.concat([f[TOKEN_COLUMNS] for f in frames.values()], ignore_index=True)),
               "tokens_by_phase": tokens, **resume}
    if not sample.complete:
        summary["label_subsample"] = {"labelled": len(sample.drawn), "failed": len(failed), "setting": cfg.label_subsample}
    label_saved = saved[LABEL_PHASE]
    return StageResult(rows, summary, outcomes, {
        **_subsample_shown(sample),
        "rollouts": rows, "tokens": int(table["tokens"].sum()), "rescues_by_intervention": table, **resume,
        **{k: v for phase, counts in tokens.items()
           for k, v in metrics.tokens(counts, "" if phase == LABEL_PHASE else f"{phase}_").items()},
        "label_samples_budget": label_saved["samples_budget"], "label_samples_saved": label_saved["samples_saved"],
        "label_tokens_saved_estimate": label_saved["tokens_saved_estimate"]})


@per_suite
def label(store: AuditStore, checkpoint_id: str, cfg: AuditConfig) -> StageResult:
    """Ground-truth regimes and unsupervised clusters, plus how well the clusters recover the regimes.

    Production mode (``label_subsample``): the truth exists for the label subsample only. ``regime_labels`` keeps a
    row per failed problem (its cluster, fitted on all of them; truth NULL outside the subsample, ``label_sample``
    and ``label_weight`` saying which is which); every accuracy is computed on the subsample, and says so; the
    regime shares of all failed problems are weighted (Hajek) estimates with intervals."""
    features = store.read("problem_features", checkpoint_id)
    outcomes = store.read("intervention_outcomes", checkpoint_id)
    failed = list(features["problem_id"])
    sample = label_subsample(failed, cfg)
    drawn = [pid for pid in failed if pid in sample.drawn]
    truth = ground_truth(outcomes, drawn)
    labels = label_regimes(features, truth, FEATURES, cfg.cluster_method, cfg.seed)
    replicate = _replicate_regimes(store, checkpoint_id, drawn) if cfg.label_replicate else None
    labels["replicate_regime"] = labels["problem_id"].map(replicate) if replicate is not None else None
    labels["label_sample"] = labels["problem_id"].isin(sample.drawn)
    labels["label_weight"] = [sample.weight(pid) if pid in sample.drawn else None for pid in labels["problem_id"]]
    store.replace("regime_labels", checkpoint_id, labels)
    labelled = labels[labels["label_sample"]]
    sampled_features = features[features["problem_id"].isin(sample.drawn)].reset_index(drop=True)
    report: dict = {"failed_problems": len(failed)}
    ablation = pd.DataFrame(columns=["features", "accuracy", "std"])
    if why := why_not_evaluable(truth):  # said in the summary and, as a note per method, in regime_reports
        why = why if sample.complete else f"label subsample, {len(drawn)} of {len(failed)} failed: {why}"
        report["not_computed"] = {"regime_report": why, "feature_ablation": why}
        report.update({method: {"note": why} for method in REPORT_METHODS if method != "gmm_replicated"})
    else:
        diagnostic = _rollouts(store, checkpoint_id, "diagnostic")
        traces = diagnostic[diagnostic["problem_id"].isin(drawn)].groupby("problem_id")["text"].apply("\n\n".join)
        questions = {p.problem_id: p.question for p in store.problems(drawn)}
        texts = {pid: questions.get(pid, "") + "\n\n" + body for pid, body in traces.items()}  # what a reader sees
        report = regime_report(sampled_features, truth, texts, FEATURES, cfg.cluster_seeds, cfg.cluster_bootstraps,
                               cfg.null_permutations, cfg.baseline_null_permutations)
        report["failed_problems"] = len(failed)
        ablation = feature_ablation(sampled_features, truth, ALL_FEATURES, seeds=cfg.ablation_seeds)
    if replicate is not None:
        report["label_agreement"] = label_agreement(labelled)
        replicated = labelled[labelled["true_regime"] == labelled["replicate_regime"]]
        if evaluable(replicated):
            X = feature_matrix(features.set_index("problem_id").loc[replicated["problem_id"]].reset_index(), FEATURES)
            report["gmm_replicated"] = clustering_accuracy(X, list(replicated["true_regime"]), "gmm", cfg.cluster_seeds,
                                                           cfg.cluster_bootstraps, permutations=cfg.null_permutations)
    shown_subsample = {}
    if sample.complete:
        report["regime_shares"] = {r: float((truth["true_regime"] == r).mean()) if len(truth) else 0.0 for r in REGIMES}
        share_table = _two_columns(report["regime_shares"], "regime", "share")
    else:  # weighted estimates of the whole failed population's shares, each with its interval
        estimated = regime_shares(list(truth["true_regime"]), [1 / sample.weight(p) for p in truth["problem_id"]],
                                  len(failed), REGIMES)
        report["regime_shares"] = {r: est for r, (est, _, _) in estimated.items()}
        report["regime_share_intervals"] = {r: [lo, hi] for r, (_, lo, hi) in estimated.items()}
        report["label_subsample"] = {"labelled": len(drawn), "failed": len(failed), "setting": cfg.label_subsample,
                                     "accuracies_on": sample.describe()}
        share_table = pd.DataFrame([{"regime": r, "share (estimate)": est, "ci_low": lo, "ci_high": hi,
                                     "estimated from": sample.describe()} for r, (est, lo, hi) in estimated.items()])
        shown_subsample = {**_subsample_shown(sample), "accuracies_on": sample.describe(),
                           **{f"share_{r}_ci_low": metrics.rounded(lo) for r, (_, lo, _) in estimated.items()},
                           **{f"share_{r}_ci_high": metrics.rounded(hi) for r, (_, _, hi) in estimated.items()}}
    accuracies = accuracy_rows(report)
    store.replace("regime_reports", checkpoint_id, [{**r, "failed_problems": len(failed), "labelled_problems": len(drawn)}
                                                    for r in accuracies])
    store.replace("feature_ablations", checkpoint_id, ablation.rename(columns={"std": "accuracy_std"}).assign(rank=range(1, len(ablation) + 1)))
    accuracy_table = pd.DataFrame(accuracies, columns=[
        "method", "accuracy", "balanced_accuracy", "null_mean", "balanced_null_mean", "balanced_null_q95", "null_p", "note"])
    if not sample.complete:
        accuracy_table.insert(1, "on", sample.describe())
    return StageResult(len(labels), report, labels, {
        "failed_problems": len(failed), **shown_subsample,
        **({"not_computed": _two_columns(report["not_computed"], "what", "why")} if "not_computed" in report else {}),
        "regime_shares": share_table,
        **metrics.regime_shares(report["regime_shares"]), **metrics.accuracies(accuracies),
        "cluster_accuracy": metrics.explained_table(accuracy_table)})


def _replicate_regimes(store: AuditStore, checkpoint_id: str, failed: list[str]) -> dict[str, str]:
    """The regime each failed problem gets from the replicate label phase alone."""
    rollouts = _rollouts(store, checkpoint_id, REPLICATE_PHASE)
    truth = ground_truth(intervention_outcomes(rollouts[rollouts["problem_id"].isin(failed)]), failed)
    return dict(zip(truth["problem_id"], truth["true_regime"]))


def label_agreement(labels: pd.DataFrame) -> dict:
    """How often the two label phases agree, raw and chance-corrected (Cohen's kappa), on how many problems."""
    a, b = list(labels["true_regime"]), list(labels["replicate_regime"])
    kappa = cohen_kappa(a, b) if a else float("nan")
    return {"problems": len(a), "agreement": float(np.mean([x == y for x, y in zip(a, b)])) if a else float("nan"),
            "kappa": None if np.isnan(kappa) else float(kappa)}


MIN_EVALUABLE_PROBLEMS = 6


def why_not_evaluable(truth: pd.DataFrame) -> str | None:
    """Why the regime accuracies cannot be computed on these failed problems, or None when they can."""
    regimes = sorted(set(truth["true_regime"]))
    if len(truth) < MIN_EVALUABLE_PROBLEMS:
        return (f"{len(truth)} failed problem{'s' if len(truth) != 1 else ''}; cluster and baseline accuracies need at "
                f"least {MIN_EVALUABLE_PROBLEMS} in at least 2 regimes")
    if len(regimes) < 2:
        return (f"all {len(truth)} failed problems are {regimes[0]}; cluster and baseline accuracies need failures in "
                "at least 2 regimes")
    return None


def evaluable(truth: pd.DataFrame) -> bool:
    """Enough failed problems, in at least two regimes, for accuracies to mean anything."""
    return why_not_evaluable(truth) is None


@per_suite
def plan(store: AuditStore, checkpoint_id: str, cfg: AuditConfig) -> StageResult:
    """The training-free routing plan: each failed problem to the catalog intervention whose probe moved it beyond
    sampling noise, else to retry when a success within the retry budget is likely, else skip."""
    features = routing_features(store, checkpoint_id)
    rule = cfg.routing_rule()
    if features.empty:
        plan_frame = pd.DataFrame(columns=["problem_id", "action", "intervention", "budget", "reason"])
    else:
        plan_frame = route_catalog(features, rule, cfg.probe_interventions)
    plan_frame["rule_version"] = CATALOG_RULE_VERSION
    plan_frame["thresholds"] = [rule.as_dict()] * len(plan_frame)
    store.replace("routing_plans", checkpoint_id, plan_frame)
    counts = plan_frame["action"].value_counts().to_dict() if len(plan_frame) else {}
    chosen = plan_frame["intervention"].fillna("skip").value_counts().to_dict() if len(plan_frame) else {}
    return StageResult(len(plan_frame), {"rule": rule.as_dict(), "actions": counts, "interventions": chosen}, plan_frame, {
        "planned_problems": len(plan_frame), "actions": _two_columns(counts, "action", "problems"),
        "routed_to": _two_columns(chosen, "intervention", "problems"),
        "rule": _two_columns(rule.as_dict(), "setting", "value")})


@per_suite
def evaluate(store: AuditStore, engine: RolloutEngine, checkpoint_id: str, cfg: AuditConfig, run_id: str | None = None) -> StageResult:
    """Score routed vs. uniform retry vs. best single vs. label-informed vs. hindsight oracle on fresh-seed rollouts."""
    plan_frame = store.read("routing_plans", checkpoint_id)
    outcomes = store.read("intervention_outcomes", checkpoint_id)
    stored = store.read("regime_labels", checkpoint_id)
    truth = stored[["problem_id", "true_regime", "replicate_regime"]]
    failed = list(truth["problem_id"])
    if not failed:
        store.replace("rollouts", checkpoint_id, [], phase="eval")
        store.replace("rescue_evaluations", checkpoint_id, [])
        return StageResult(0, {"failed_problems": 0}, pd.DataFrame(), {"failed_problems": 0})
    drawn = set(stored.loc[stored["label_sample"].fillna(True).astype(bool), "problem_id"])
    # the subsample as label stored it (not redrawn: the evaluation scores what was labelled); only its size is read
    sample = Subsample(tuple(failed), frozenset(drawn), {})
    labelled = None if sample.complete else drawn
    choices = policy_choices(plan_frame, outcomes, failed, labelled)
    problems = problems_by_id(store.problems(failed))
    exemplars = audit_problems(store, cfg)
    requests = []
    for name, pids in sorted(interventions_needed(choices).items()):
        # retry draws more: its first eval_budget samples score it at equal samples, its first m at equal tokens
        budget = cfg.eval_retry_samples if name == RETRY else cfg.eval_budget
        requests += _requests(cfg, [problems[p] for p in sorted(pids)], name, "eval", budget, exemplars)
    frame = sample_phase(store, engine, checkpoint_id, "eval", requests, list(problems.values()), run_id, cfg.commit_every)
    missing = set(frame.attrs.get("skipped_groups", ()))  # a choice the context cannot hold is missing, not failed
    choices = {policy: {pid: name for pid, name in per.items() if (pid, name) not in missing}
               for policy, per in choices.items()}
    evaluations = evaluate_policies(choices, frame, truth, _upfront_tokens(store, checkpoint_id, failed, outcomes),
                                    cfg.eval_budget, labelled)
    store.replace("rescue_evaluations", checkpoint_id, evaluations)
    tokens = token_counts(frame)
    summary = {"failed_problems": len(failed), "eval_rollouts": len(frame), **_resume_summary(frame), **tokens,
               **summarize(evaluations)}
    shown_columns = ["policy", "regime", "matching", "problems", "rescued", "rescue_rate", "policy_tokens",
                     "retry_samples", "baseline_rescued", "lift_vs_retry"]
    table = evaluations[shown_columns]
    subsample_shown = {}
    if labelled is not None:  # production mode: every per-regime row and subsample policy rests on n of N
        steer = evaluations[(evaluations["policy"] == "routed") & (evaluations["regime"] == "steerable_hard")
                            & (evaluations["matching"] == "samples")]
        summary["label_subsample"] = {"labelled": len(drawn), "failed": len(failed)}
        summary["steerable_hard_problems"] = int(steer["problems"].iloc[0]) if len(steer) else 0
        subsample_shown = {**_subsample_shown(sample), "steerable_hard_problems": summary["steerable_hard_problems"],
                           "steerable_hard_lift_on": f"{summary['steerable_hard_problems']} steerable-hard problems of "
                                                     f"{sample.describe()}"}
        table = evaluations[[*shown_columns, "lift_ci_low", "lift_ci_high"]].assign(
            on=[f"{n} of {len(failed)} failed problems" + (" (label subsample)" if sub else "")
                for n, sub in zip(evaluations["problems"], evaluations["label_subsample"])])
    return StageResult(len(evaluations), summary, evaluations, {
        **{k: summary.get(k) for k in ("failed_problems", "steerable_hard_lift", "steerable_hard_lift_equal_tokens",
                                       "compute_saved_routed_vs_retry", "skipped_requests")},
        **subsample_shown, **metrics.policy_numbers(evaluations), **metrics.tokens(tokens), "evaluation": table})


def _upfront_tokens(store: AuditStore, checkpoint_id: str, failed: list[str],
                    outcomes: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Tokens each policy generated before it could choose, per failed problem (see ``evaluate_policies``): the
    probe rollouts for ``routed``; for the label-phase policies, the label tokens ``intervention_outcomes`` sums.

    In production mode the label phase ran on the subsample only, so only its problems carry label tokens: each
    policy is charged what was generated for it, no more. ``label_informed`` is scored on the subsample and pays
    its problems' own label tokens, as in a full audit; ``best_single`` is scored on every failed problem and pays
    the subsample's label tokens once (its choice cost that much; the problems outside the sample add 0), so at
    equal tokens retry gets the eval tokens plus the label tokens actually spent."""
    probe = store.read("rollouts", checkpoint_id, phase="probe")
    probe = probe[probe["problem_id"].isin(failed)].groupby("problem_id")["num_tokens"].sum()
    label = outcomes[outcomes["problem_id"].isin(failed)].groupby("problem_id")["tokens"].sum()
    label_tokens = {str(k): int(v) for k, v in label.items()}
    return {"routed": {str(k): int(v) for k, v in probe.items()}, "best_single": label_tokens,
            "label_informed": label_tokens}


def topography(store: AuditStore) -> pd.DataFrame:
    """Regime shares, pass rate and rescue per checkpoint: how the failure landscape moves across training. When
    the checkpoints were audited on several suites: one row per (suite, checkpoint), the suite in the first column."""
    suites = store.suites() if store.suite is None else [store.suite]
    if len(suites) > 1:
        tables = [t.assign(suite=s)[["suite", *t.columns]] for s in suites if len(t := _topography(store.for_suite(s)))]
        return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return _topography(store.for_suite(suites[0]) if suites else store)


def _topography(store: AuditStore) -> pd.DataFrame:
    checkpoints = store.read("checkpoints")
    if checkpoints.empty:
        return pd.DataFrame()
    labels = store.read("regime_labels")
    evals = store.read("rescue_evaluations")
    features = store.read("problem_features")
    tokens = store.token_sums()
    rows = []
    for ck in checkpoints.sort_values(["recipe", "training_step", "checkpoint_id"], na_position="last").itertuples(index=False):
        mine = labels[labels["checkpoint_id"] == ck.checkpoint_id] if len(labels) else labels
        counts = store.pass_counts(ck.checkpoint_id)
        if counts.empty:
            continue  # registered, not audited yet
        # first blocks: every sample without diagnostic blocks, a fixed-size sample under the stopping rule
        row = {"checkpoint": ck.checkpoint_id, "recipe": ck.recipe, "step": ck.training_step,
               "pass_rate": counts["first_block_correct"].sum() / counts["first_block_samples"].sum(),
               "failed": len(mine)}
        drawn = mine[mine["label_sample"].fillna(True).astype(bool)] if len(mine) else mine
        if len(drawn) == len(mine):  # every failed problem labelled: the shares are counted
            for regime in REGIMES:
                row[f"share_{regime}"] = float((mine["true_regime"] == regime).mean()) if len(mine) else float("nan")
        else:  # production mode: weighted estimates from the label subsample, with intervals
            row["labelled"] = len(drawn)
            probabilities = 1 / drawn["label_weight"].astype(float).to_numpy()
            for regime, (est, lo, hi) in regime_shares(list(drawn["true_regime"]), probabilities, len(mine),
                                                       REGIMES).items():
                row[f"share_{regime}"], row[f"share_{regime}_ci_low"], row[f"share_{regime}_ci_high"] = est, lo, hi
        ev = evals[(evals["checkpoint_id"] == ck.checkpoint_id) & (evals["regime"] == "all")
                   & (evals["matching"] == "samples")] if len(evals) else evals
        for r in ev.itertuples(index=False):
            row[f"rescue_{r.policy}"] = r.rescue_rate
        row.update(tokens_per_failed(tokens[tokens["checkpoint_id"] == ck.checkpoint_id], len(mine)))
        f = features[features["checkpoint_id"] == ck.checkpoint_id]
        for name in FEATURES:
            row[f"mean_{name}"] = float(f[name].mean()) if len(f) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


FAILED_PHASES = ("probe", LABEL_PHASE, REPLICATE_PHASE, "eval")
"""The phases that spend on failed problems only: what a failed problem costs beyond its diagnostic samples."""


def tokens_per_failed(sums: pd.DataFrame, failed: int) -> dict:
    """One checkpoint's token bill from :meth:`AuditStore.token_sums`: the whole audit's generated tokens, and the
    generated and prompt tokens spent per failed problem after the diagnosis (probe, label, replicate, eval). A
    prompt count is ``nan`` when any of its rollouts has none (stored before prompts were counted)."""
    on_failed = sums[sums["phase"].isin(FAILED_PHASES)]
    prompt_known = not on_failed["prompt_unknown"].any()
    return {"generated_tokens": int(sums["generated_tokens"].sum()),
            "generated_tokens_per_failed": on_failed["generated_tokens"].sum() / failed if failed else float("nan"),
            "prompt_tokens_per_failed": (on_failed["prompt_tokens"].sum() / failed if failed and prompt_known
                                         else float("nan"))}


def transfer(store: AuditStore, seed: int = 0) -> pd.DataFrame:
    """Clusters and routing thresholds fitted on each audited checkpoint, applied to every other one audited on the
    same suite (each suite's pairs replace that suite's rows of ``regime_transfers``).

    ``transfer_accuracy`` uses the source's mixture and the source's cluster -> regime map (no target label);
    ``own_accuracy`` is the target's own clusters matched on the target, the in-checkpoint reference.
    """
    suites = store.suites() if store.suite is None else [store.suite]
    frames = [_transfer(store.for_suite(s), seed).assign(suite=s) for s in suites]
    columns = ["suite", "source_checkpoint", "target_checkpoint", "target_problems", "transfer_accuracy",
               "own_accuracy", "target_majority", "plan_agreement"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def _transfer(store: AuditStore, seed: int) -> pd.DataFrame:
    features, labels = store.read("problem_features"), store.read("regime_labels")
    per_checkpoint = {}
    for ck, f in features.groupby("checkpoint_id"):
        t = labels[(labels["checkpoint_id"] == ck) & labels["true_regime"].notna()][["problem_id", "true_regime"]]
        if evaluable(t):
            per_checkpoint[ck] = (f.reset_index(drop=True), t)
    # what depends on the target alone is computed once per target, not once per (source, target) pair
    targets = {}
    for ck, (f, t) in per_checkpoint.items():
        merged = f.merge(t, on="problem_id", validate="one_to_one")
        truth = list(merged["true_regime"])
        targets[ck] = (merged, truth, {
            "target_problems": len(merged),
            "own_accuracy": matched_accuracy(cluster(feature_matrix(merged, FEATURES), len(REGIMES), "gmm", seed), truth),
            "target_majority": majority_share(truth),
        }, route_actions(merged, fit_thresholds(merged)))
    rows = []
    for source, (f_src, t_src) in per_checkpoint.items():
        model = fit_regime_model(f_src, t_src, FEATURES, seed)
        src_thresholds = fit_thresholds(f_src)
        for target, (merged, truth, own, plan_own) in targets.items():
            if target == source:
                continue
            predicted = predict_regimes(model, merged)
            plan_src = route_actions(merged, src_thresholds)
            rows.append({
                "source_checkpoint": source, "target_checkpoint": target, **own,
                "transfer_accuracy": float(np.mean([p == y for p, y in zip(predicted, truth)])),
                "plan_agreement": float((plan_src == plan_own).mean()),
            })
    frame = pd.DataFrame(rows, columns=["source_checkpoint", "target_checkpoint", "target_problems", "transfer_accuracy",
                                        "own_accuracy", "target_majority", "plan_agreement"])
    store.replace_all("regime_transfers", frame)
    return frame
