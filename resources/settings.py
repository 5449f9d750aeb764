"""The audit's scientific settings as a Dagster resource (mirrors :class:`fixability_dag.pipeline.config.AuditConfig`)."""

from __future__ import annotations

from dagster import ConfigurableResource

from fixability_dag.pipeline.config import AuditConfig

_D = AuditConfig()


class AuditSettings(ConfigurableResource):
    """How a checkpoint is audited. Changing any of these changes the config hash, and the nightly schedule
    re-audits every checkpoint audited under another hash."""

    problem_format: str = _D.problem_format
    problem_path: str | None = _D.problem_path
    chain_lengths: list[int] = list(_D.chain_lengths)
    templates_per_length: int = _D.templates_per_length
    variants_per_template: int = _D.variants_per_template
    question_field: str = _D.question_field
    answer_field: str = _D.answer_field
    id_field: str | None = _D.id_field
    n_samples: int = _D.n_samples
    temperature: float = _D.temperature
    top_p: float = _D.top_p
    max_tokens: int = _D.max_tokens
    fail_threshold: float = _D.fail_threshold
    probe_intervention: str = _D.probe_intervention
    probe_interventions: list[str] = list(_D.probe_interventions)
    probe_samples: int = _D.probe_samples
    shift_threshold: float = _D.shift_threshold
    headroom_threshold: float = _D.headroom_threshold
    interventions: list[str] = list(_D.interventions)
    max_tool_calls: int = _D.max_tool_calls
    retry_budget: int = _D.retry_budget
    intervention_budget: int = _D.intervention_budget
    eval_budget: int = _D.eval_budget
    cluster_method: str = _D.cluster_method
    cluster_seeds: int = _D.cluster_seeds
    cluster_bootstraps: int = _D.cluster_bootstraps
    ablation_seeds: int = _D.ablation_seeds
    null_permutations: int = _D.null_permutations
    baseline_null_permutations: int = _D.baseline_null_permutations
    label_replicate: bool = _D.label_replicate
    label_block: int = _D.label_block
    label_early_stop: bool = _D.label_early_stop
    eval_retry_samples: int = _D.eval_retry_samples
    seed: int = _D.seed
    commit_every: int = _D.commit_every

    def config(self) -> AuditConfig:
        return AuditConfig.from_mapping({name: getattr(self, name) for name in AuditConfig.__dataclass_fields__})
