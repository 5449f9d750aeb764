"""What an audit is configured with, and the version stamps that decide when a checkpoint must be re-audited."""

from __future__ import annotations

import dataclasses
import hashlib
import json

from fixability_dag.core.interventions import CATALOG, DEFAULT_INTERVENTIONS, RETRY
from fixability_dag.core.problems import ArithmeticSuiteSpec, Problem, arithmetic_suite
from fixability_dag.core.routing import CatalogRule
from fixability_dag.core.sampling import Decoding
from fixability_dag.inputs.problem_files import PROBLEM_FORMATS, ColumnMapping, load_problems

CODE_VERSION = "0.5.0"
"""Bump when a change alters what an audit computes; the nightly schedule re-audits checkpoints stamped older."""


OPERATIONAL_FIELDS = frozenset({"commit_every"})
"""Settings that do not change results: changing them must not make the nightly schedule re-audit everything."""


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    # problems
    problem_format: str = "arith"
    problem_path: str | None = None
    chain_lengths: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    templates_per_length: int = 4
    variants_per_template: int = 4
    question_field: str = "question"
    answer_field: str = "answer"
    id_field: str | None = None
    # diagnostic rollouts
    n_samples: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 128
    fail_threshold: float = 0.0
    # features
    probe_intervention: str = "solution_prefix"  # the legacy probe_shift feature (clusters) reads this probe
    probe_interventions: tuple[str, ...] = ("temp_low", "temp_high", "solution_prefix", "few_shot")
    probe_samples: int = 4
    shift_threshold: float = 0.35  # routing: corrected TV a probe must move (see core.routing.CatalogRule)
    headroom_threshold: float = 0.5  # routing: retry when P(success within retry_budget) exceeds this
    # ground truth and evaluation
    interventions: tuple[str, ...] = DEFAULT_INTERVENTIONS  # add "calculator" (a tool intervention) by name
    max_tool_calls: int = 8  # tool interventions: tool calls per sample at most (hashed only when one is selected)
    retry_budget: int = 16
    intervention_budget: int = 8
    eval_budget: int = 8
    cluster_method: str = "gmm"
    cluster_seeds: int = 5
    cluster_bootstraps: int = 20
    ablation_seeds: int = 3
    null_permutations: int = 200  # shuffled-label null of the clusters' matching (cheap: no refit)
    baseline_null_permutations: int = 20  # shuffled-label refits of each cross-validated baseline
    label_replicate: bool = False  # a second label phase on independent seeds: label agreement (kappa)
    label_block: int = 4  # label phases draw each group in seeded blocks of this many samples ...
    label_early_stop: bool = True  # ... and stop a group after its first block with a success (core.stopping)
    eval_retry_samples: int = 32  # retry's eval draws: the first eval_budget score it at equal samples, the
    # first m (m: the policy's total generated tokens) at equal tokens; must be >= eval_budget
    seed: int = 0
    # operation (not part of the config hash: it changes how an audit is written, not what it computes)
    commit_every: int = 32

    def __post_init__(self) -> None:
        if self.problem_format not in PROBLEM_FORMATS:
            raise ValueError(f"problem_format must be one of {PROBLEM_FORMATS}, got {self.problem_format!r}")
        if self.problem_format != "arith" and not self.problem_path:
            raise ValueError(f"problem_format {self.problem_format!r} needs problem_path")
        unknown = [i for i in (*self.interventions, self.probe_intervention) if i not in CATALOG]
        if unknown:
            raise ValueError(f"unknown interventions {unknown}; known: {list(CATALOG)}")
        if RETRY not in self.interventions:
            raise ValueError("the intervention list must include 'retry': the regimes are defined against it")
        if self.probe_intervention == RETRY:
            raise ValueError("the probe must be a non-retry intervention, or probe shift measures only sampling noise")
        bad_probes = [i for i in self.probe_interventions if i not in self.interventions or i == RETRY
                      or CATALOG[i].deterministic]
        if bad_probes or self.probe_intervention not in self.probe_interventions:
            raise ValueError(f"probe_interventions must be non-retry, stochastic members of interventions and include "
                             f"probe_intervention {self.probe_intervention!r}; refused: {bad_probes}")
        for name in ("n_samples", "probe_samples", "retry_budget", "intervention_budget", "eval_budget", "max_tokens",
                     "cluster_seeds", "ablation_seeds", "commit_every", "null_permutations",
                     "baseline_null_permutations", "label_block", "eval_retry_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.eval_retry_samples < self.eval_budget:
            raise ValueError(f"eval_retry_samples ({self.eval_retry_samples}) must be >= eval_budget ({self.eval_budget}): "
                             "the equal-samples comparison scores retry on its first eval_budget eval draws")
        if self.max_tool_calls < 0:
            raise ValueError("max_tool_calls must be >= 0")
        if self.cluster_bootstraps < 0:
            raise ValueError("cluster_bootstraps must be >= 0")
        if not 0.0 <= self.fail_threshold < 1.0:
            raise ValueError("fail_threshold must be in [0, 1)")
        if self.cluster_method not in ("gmm", "kmeans"):
            raise ValueError("cluster_method must be 'gmm' or 'kmeans'")

    @property
    def decoding(self) -> Decoding:
        return Decoding(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                        max_tool_calls=self.max_tool_calls)

    def routing_rule(self) -> CatalogRule:
        return CatalogRule(self.shift_threshold, self.headroom_threshold, self.retry_budget, self.intervention_budget)

    def budget_for(self, intervention: str) -> int:
        return self.retry_budget if intervention == RETRY else self.intervention_budget

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def config_hash(self) -> str:
        science = {k: v for k, v in self.as_dict().items() if k not in OPERATIONAL_FIELDS}
        if not any(CATALOG[i].kind == "tool" for i in self.interventions):
            del science["max_tool_calls"]  # read by tool interventions only: configs without one keep their hashes
        return hashlib.sha256(json.dumps(science, sort_keys=True).encode()).hexdigest()[:16]

    def load_problems(self) -> list[Problem]:
        if self.problem_format == "arith":
            spec = ArithmeticSuiteSpec(
                chain_lengths=tuple(self.chain_lengths),
                templates_per_length=self.templates_per_length,
                variants_per_template=self.variants_per_template,
            )
            return arithmetic_suite(spec)
        mapping = ColumnMapping(question=self.question_field, answer=self.answer_field, id=self.id_field)
        return load_problems(self.problem_format, self.problem_path, mapping)

    @classmethod
    def from_mapping(cls, values: dict) -> AuditConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown audit settings: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
