"""The results database: one table per audit artifact, keyed so that every write is idempotent.

Keys follow the grain of the data: a rollout is unique per (checkpoint, suite, problem, phase, intervention, sample), a
feature row per (checkpoint, suite, problem), an evaluation per (checkpoint, suite, policy, regime, matching). A problem is
identified by its suite *and* its id (:data:`PROBLEM_KEY`): two problem files may reuse the same ids (``1``, ``2``...)
and must never overwrite each other's questions, gold answers or rollouts. Re-materializing a
checkpoint replaces its rows for that asset in one transaction, so a re-run never duplicates.

The schema is owned by Alembic (``fixability_dag/storage/migrations``); these models are its source of truth. Change a
model, then add a migration: ``alembic -c fixability_dag/storage/migrations/alembic.ini revision --autogenerate``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import false as sa_false
from sqlalchemy import true as sa_true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Deterministic constraint names make migrations portable between SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BigId = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only


PROBLEM_KEY = ("suite", "problem_id")
"""What identifies a problem: every table that names a problem names it by both columns."""


def _suite_column(comment: str = "problem suite (problems.suite)"):
    return mapped_column(String(100), primary_key=True, comment=comment)


def _problem_fk() -> ForeignKeyConstraint:
    return ForeignKeyConstraint(list(PROBLEM_KEY), [f"problems.{c}" for c in PROBLEM_KEY])


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    checkpoint_id: Mapped[str] = mapped_column(String(128), primary_key=True, comment="Dagster partition key")
    path: Mapped[str] = mapped_column(Text)
    recipe: Mapped[str | None] = mapped_column(String(64))
    training_step: Mapped[int | None] = mapped_column(Integer)
    fingerprint: Mapped[str] = mapped_column(String(64), comment="hash of config, weights index and tokenizer")
    info: Mapped[dict | None] = mapped_column(JSON)
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ProblemRow(Base):
    __tablename__ = "problems"
    suite: Mapped[str] = mapped_column(String(100), primary_key=True, index=True)
    problem_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    question: Mapped[str] = mapped_column(Text)
    gold_answer: Mapped[str] = mapped_column(String(200))
    reference_steps: Mapped[list | None] = mapped_column(JSON)
    difficulty: Mapped[int | None] = mapped_column(Integer, index=True)
    template_id: Mapped[str | None] = mapped_column(String(200))
    family: Mapped[str | None] = mapped_column(String(32), comment="a model-organism problem's planted mechanism (validation only, never a feature)")
    content_hash: Mapped[str] = mapped_column(String(64))


class RolloutRow(Base):
    __tablename__ = "rollouts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    checkpoint_id: Mapped[str] = mapped_column(ForeignKey("checkpoints.checkpoint_id", ondelete="CASCADE"))
    suite: Mapped[str] = mapped_column(String(100), comment="problem suite (problems.suite)")
    problem_id: Mapped[str] = mapped_column(String(200))
    phase: Mapped[str] = mapped_column(String(16), comment="diagnostic | probe | label | eval")
    intervention: Mapped[str] = mapped_column(String(64))
    sample_index: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger, comment="request seed; samples of one request share it")
    text: Mapped[str] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(String(200), comment="canonical extracted answer; NULL = no answer")
    is_correct: Mapped[bool] = mapped_column(Boolean)
    num_tokens: Mapped[int] = mapped_column(Integer)
    prompt_tokens: Mapped[int | None] = mapped_column(
        Integer, comment="prompt tokens prefilled for this sample (the request's on its first sample, 0 on the others); "
                         "NULL: unknown")
    cumulative_logprob: Mapped[float | None] = mapped_column(Float)
    mean_logprob: Mapped[float | None] = mapped_column(Float)
    finish_reason: Mapped[str | None] = mapped_column(String(16))
    tool_calls: Mapped[int | None] = mapped_column(Integer, server_default="0",
                                                   comment="tool calls the sample made (tool interventions), refused ones included")
    run_id: Mapped[str | None] = mapped_column(String(64))
    request_hash: Mapped[str | None] = mapped_column(
        String(32), comment="hash of what produced the sample group (prompt, n, seed, decoding, weights): a resumed run "
                            "keeps a committed group only while this matches")
    __table_args__ = (
        # named by hand: the conventional name is longer than PostgreSQL's 63 characters
        UniqueConstraint("checkpoint_id", "suite", "problem_id", "phase", "intervention", "sample_index",
                         name="uq_rollouts_sample"),
        _problem_fk(),
        Index("ix_rollouts_checkpoint_phase", "checkpoint_id", "phase", "intervention"),
        Index("ix_rollouts_problem", "problem_id", "checkpoint_id"),
    )


class ProblemFeatures(Base):
    __tablename__ = "problem_features"
    checkpoint_id: Mapped[str] = mapped_column(ForeignKey("checkpoints.checkpoint_id", ondelete="CASCADE"), primary_key=True)
    suite: Mapped[str] = _suite_column()
    problem_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    base_samples: Mapped[int] = mapped_column(Integer)
    base_pass_rate: Mapped[float] = mapped_column(Float)
    answer_dispersion: Mapped[float | None] = mapped_column(Float)
    policy_confidence: Mapped[float | None] = mapped_column(Float)
    probe_shift: Mapped[float | None] = mapped_column(Float)
    top_wrong_share: Mapped[float | None] = mapped_column(Float)
    no_answer_rate: Mapped[float | None] = mapped_column(Float)
    truncation_rate: Mapped[float | None] = mapped_column(Float)
    mean_tokens: Mapped[float | None] = mapped_column(Float)
    tokens_cv: Mapped[float | None] = mapped_column(Float)
    distinct_answers: Mapped[float | None] = mapped_column(Float)
    probe_dispersion: Mapped[float | None] = mapped_column(Float)
    retry_headroom: Mapped[float | None] = mapped_column(Float, comment="empirical-Bayes P(success within the retry budget)")
    __table_args__ = (Index("ix_problem_features_problem", "problem_id"), _problem_fk())


class ProbeShift(Base):
    """Per failed problem and probe intervention: the probe's answer shift beyond what sampling alone moves."""

    __tablename__ = "probe_shifts"
    checkpoint_id: Mapped[str] = mapped_column(ForeignKey("checkpoints.checkpoint_id", ondelete="CASCADE"), primary_key=True)
    suite: Mapped[str] = _suite_column()
    problem_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    intervention: Mapped[str] = mapped_column(String(64), primary_key=True)
    shift: Mapped[float | None] = mapped_column(Float, comment="TV(base, probe) minus its permutation null")
    __table_args__ = (_problem_fk(),)


class InterventionOutcome(Base):
    __tablename__ = "intervention_outcomes"
    checkpoint_id: Mapped[str] = mapped_column(ForeignKey("checkpoints.checkpoint_id", ondelete="CASCADE"), primary_key=True)
    suite: Mapped[str] = _suite_column()
    problem_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    intervention: Mapped[str] = mapped_column(String(64), primary_key=True)
    samples: Mapped[int] = mapped_column(Integer)
    correct: Mapped[int] = mapped_column(Integer)
    rescued: Mapped[bool] = mapped_column(Boolean)
    majority_answer: Mapped[str | None] = mapped_column(String(200))
    majority_correct: Mapped[bool] = mapped_column(Boolean)
    tokens: Mapped[int] = mapped_column(Integer)
    budget: Mapped[int | None] = mapped_column(Integer, comment="samples the group could draw; samples is what it drew")
    first_block_samples: Mapped[int | None] = mapped_column(Integer, comment="the fixed first block: rates read from it")
    first_block_correct: Mapped[int | None] = mapped_column(Integer)
    first_block_tokens: Mapped[int | None] = mapped_column(Integer)
    tool_calls: Mapped[int | None] = mapped_column(Integer, server_default="0",
                                                   comment="tool calls of the group's samples (tool interventions)")
    __table_args__ = (Index("ix_intervention_outcomes_intervention", "intervention", "checkpoint_id"), _problem_fk())


class RegimeLabel(Base):
    __tablename__ = "regime_labels"
    checkpoint_id: Mapped[str] = mapped_column(ForeignKey("checkpoints.checkpoint_id", ondelete="CASCADE"), primary_key=True)
    suite: Mapped[str] = _suite_column()
    problem_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    true_regime: Mapped[str | None] = mapped_column(String(32), comment="NULL: not in the label subsample (label_sample)")
    rescued_by: Mapped[list | None] = mapped_column(JSON)
    majority_rescued_by: Mapped[list | None] = mapped_column(JSON)
    cluster_id: Mapped[int | None] = mapped_column(Integer)
    cluster_regime: Mapped[str | None] = mapped_column(String(32))
    cluster_method: Mapped[str | None] = mapped_column(String(16))
    replicate_regime: Mapped[str | None] = mapped_column(String(32), comment="regime from the replicate label phase")
    label_sample: Mapped[bool] = mapped_column(Boolean, server_default=sa_true(),
                                               comment="drawn for the label phase (label_subsample); false: no truth")
    label_weight: Mapped[float | None] = mapped_column(Float, server_default="1", comment=(
        "Horvitz-Thompson weight 1/inclusion probability of a drawn problem; NULL when not drawn"))
    __table_args__ = (Index("ix_regime_labels_regime", "true_regime", "checkpoint_id"), _problem_fk())


class RoutingPlan(Base):
    __tablename__ = "routing_plans"
    checkpoint_id: Mapped[str] = mapped_column(ForeignKey("checkpoints.checkpoint_id", ondelete="CASCADE"), primary_key=True)
    suite: Mapped[str] = _suite_column()
    problem_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    action: Mapped[str] = mapped_column(String(16), comment="retry | intervene | skip")
    intervention: Mapped[str | None] = mapped_column(String(64))
    budget: Mapped[int] = mapped_column(Integer, comment="samples")
    reason: Mapped[str] = mapped_column(Text)
    rule_version: Mapped[str] = mapped_column(String(32))
    thresholds: Mapped[dict | None] = mapped_column(JSON)
    __table_args__ = (Index("ix_routing_plans_intervention", "intervention", "checkpoint_id"), _problem_fk())


class RescueEvaluation(Base):
    __tablename__ = "rescue_evaluations"
    checkpoint_id: Mapped[str] = mapped_column(ForeignKey("checkpoints.checkpoint_id", ondelete="CASCADE"), primary_key=True)
    suite: Mapped[str] = _suite_column("the suite whose failed problems were evaluated")
    policy: Mapped[str] = mapped_column(String(32), primary_key=True)
    regime: Mapped[str] = mapped_column(String(32), primary_key=True, comment="'all' or a ground-truth regime")
    matching: Mapped[str] = mapped_column(String(16), primary_key=True, server_default="samples",
                                          comment="samples | tokens: how retry, the baseline, is given equal compute")
    problems: Mapped[int] = mapped_column(Integer)
    rescued: Mapped[int] = mapped_column(Integer)
    rescue_rate: Mapped[float | None] = mapped_column(Float)
    rate_ci_low: Mapped[float | None] = mapped_column(Float)
    rate_ci_high: Mapped[float | None] = mapped_column(Float)
    tokens: Mapped[int] = mapped_column(BigInteger)
    samples: Mapped[int] = mapped_column(Integer)
    skipped: Mapped[int] = mapped_column(Integer)
    upfront_tokens: Mapped[int | None] = mapped_column(BigInteger, comment="generated before choosing: probe or label phase")
    policy_tokens: Mapped[int | None] = mapped_column(BigInteger, comment="tokens + upfront_tokens: what the policy costs")
    compute_saved_vs_retry: Mapped[float | None] = mapped_column(Float)
    lift_vs_retry: Mapped[float | None] = mapped_column(Float)
    lift_ci_low: Mapped[float | None] = mapped_column(Float)
    lift_ci_high: Mapped[float | None] = mapped_column(Float)
    retry_samples: Mapped[int | None] = mapped_column(Integer, comment="eval samples per problem the retry baseline got")
    baseline_rescued: Mapped[int | None] = mapped_column(Integer, comment="problems the retry baseline rescued")
    baseline_tokens: Mapped[int | None] = mapped_column(BigInteger, comment="tokens the retry baseline generated")
    token_match_capped: Mapped[bool | None] = mapped_column(Boolean, comment="retry's draws ran out before the policy's tokens")
    pairs_both: Mapped[int | None] = mapped_column(Integer, comment="paired outcomes: rescued by both")
    pairs_policy_only: Mapped[int | None] = mapped_column(Integer, comment="rescued by the policy, not the baseline")
    pairs_retry_only: Mapped[int | None] = mapped_column(Integer, comment="rescued by the baseline, not the policy")
    label_subsample: Mapped[bool | None] = mapped_column(Boolean, server_default=sa_false(), comment=(
        "true: the row's problems are the label subsample (production mode), not every failed problem"))
    failed_problems: Mapped[int | None] = mapped_column(Integer, comment="failed problems of the checkpoint (N)")


class AuditRun(Base):
    __tablename__ = "audit_runs"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64))
    checkpoint_id: Mapped[str] = mapped_column(ForeignKey("checkpoints.checkpoint_id", ondelete="CASCADE"))
    asset: Mapped[str] = mapped_column(String(64))
    code_version: Mapped[str] = mapped_column(String(32))
    config_hash: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict] = mapped_column(JSON)
    settings_file: Mapped[str | None] = mapped_column(
        String(1024), comment="settings file the step read; NULL: the demo defaults (or not recorded)")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    seconds: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), comment="running | success | failed")
    rows_written: Mapped[int | None] = mapped_column(Integer)
    summary: Mapped[dict | None] = mapped_column(JSON)
    __table_args__ = (Index("ix_audit_runs_checkpoint_asset", "checkpoint_id", "asset", "status"),)


class RegimeReport(Base):
    """How well each method recovers one checkpoint's ground-truth regimes (clusters and baselines)."""

    __tablename__ = "regime_reports"
    checkpoint_id: Mapped[str] = mapped_column(ForeignKey("checkpoints.checkpoint_id", ondelete="CASCADE"), primary_key=True)
    suite: Mapped[str] = _suite_column("the suite whose failed problems were clustered")
    method: Mapped[str] = mapped_column(String(32), primary_key=True, comment="gmm | kmeans | majority | supervised_logreg | trace_reading_tfidf")
    accuracy: Mapped[float | None] = mapped_column(Float)
    accuracy_std: Mapped[float | None] = mapped_column(Float)  # from 0.3.0: std over stratified bootstrap resamples
    runs: Mapped[int | None] = mapped_column(Integer, comment="seeds + bootstrap resamples behind the std")
    failed_problems: Mapped[int] = mapped_column(Integer)
    balanced_accuracy: Mapped[float | None] = mapped_column(Float, comment="mean per-regime recall (matched, for clusters)")
    seed_std: Mapped[float | None] = mapped_column(Float, comment="clusters: std over mixture seeds on all problems")
    null_mean: Mapped[float | None] = mapped_column(Float, comment="same procedure on shuffled labels: mean accuracy")
    null_q95: Mapped[float | None] = mapped_column(Float)
    balanced_null_mean: Mapped[float | None] = mapped_column(Float)
    balanced_null_q95: Mapped[float | None] = mapped_column(Float)
    null_p: Mapped[float | None] = mapped_column(Float, comment="share of shuffled-label balanced accuracies >= observed")
    note: Mapped[str | None] = mapped_column(String(200), comment="why a value could not be computed")
    labelled_problems: Mapped[int | None] = mapped_column(Integer, comment=(
        "failed problems the accuracy rests on (the label subsample); NULL before 0011: failed_problems"))


class FeatureAblation(Base):
    """Matched clustering accuracy of every triple of candidate features, per checkpoint."""

    __tablename__ = "feature_ablations"
    checkpoint_id: Mapped[str] = mapped_column(ForeignKey("checkpoints.checkpoint_id", ondelete="CASCADE"), primary_key=True)
    suite: Mapped[str] = _suite_column("the suite whose failed problems were clustered")
    features: Mapped[str] = mapped_column(String(200), primary_key=True)
    accuracy: Mapped[float | None] = mapped_column(Float)
    accuracy_std: Mapped[float | None] = mapped_column(Float)
    rank: Mapped[int] = mapped_column(Integer)
    selection_accuracy: Mapped[float | None] = mapped_column(Float, comment="on the half that ranks; accuracy is the other")


class RegimeTransfer(Base):
    """Clusters and routing thresholds fitted on one checkpoint, applied to another (cross-checkpoint probes)."""

    __tablename__ = "regime_transfers"
    source_checkpoint: Mapped[str] = mapped_column(ForeignKey("checkpoints.checkpoint_id", ondelete="CASCADE"), primary_key=True)
    suite: Mapped[str] = _suite_column("the suite both checkpoints were audited on")
    target_checkpoint: Mapped[str] = mapped_column(ForeignKey("checkpoints.checkpoint_id", ondelete="CASCADE"), primary_key=True)
    target_problems: Mapped[int] = mapped_column(Integer)
    transfer_accuracy: Mapped[float | None] = mapped_column(Float, comment="source-fitted clusters + source cluster->regime map, on target")
    own_accuracy: Mapped[float | None] = mapped_column(Float, comment="target's own clusters, Hungarian-matched on target")
    target_majority: Mapped[float | None] = mapped_column(Float)
    plan_agreement: Mapped[float | None] = mapped_column(Float, comment="share of target problems routed alike by source and own thresholds")


class SkippedRequest(Base):
    """A (problem, intervention) group of a phase that was not generated, and why (its prompt and ``max_tokens``
    do not fit the context): missing evidence, not a failure. Keyed by suite like every per-problem table (two
    suites may reuse an id); not a foreign key to ``problems``: it records a request, not a stored problem row."""

    __tablename__ = "skipped_requests"
    checkpoint_id: Mapped[str] = mapped_column(ForeignKey("checkpoints.checkpoint_id", ondelete="CASCADE"), primary_key=True)
    suite: Mapped[str] = _suite_column()
    phase: Mapped[str] = mapped_column(String(16), primary_key=True)
    problem_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    intervention: Mapped[str] = mapped_column(String(64), primary_key=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer, comment="prompt length with the checkpoint's tokenizer")
    max_tokens: Mapped[int] = mapped_column(Integer)
    max_model_len: Mapped[int] = mapped_column(Integer, comment="the engine's context")
    reason: Mapped[str] = mapped_column(Text)
    run_id: Mapped[str | None] = mapped_column(String(64))


class CheckpointLease(Base):
    """Who is auditing a checkpoint right now: one row per checkpoint, held by one run at a time.

    Not a foreign key to ``checkpoints``: the lease is taken before the checkpoint is registered.
    """

    __tablename__ = "checkpoint_leases"
    checkpoint_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), comment="refreshed at every step and chunk commit")


TABLES = Base.metadata.tables
"""Every table by name, straight from the models' metadata: a model defined above is registered by existing."""
