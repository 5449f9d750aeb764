"""What an audit is configured with, and the version stamps that decide when a checkpoint must be re-audited."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from fixability_dag.core.interventions import CATALOG, DEFAULT_INTERVENTIONS, RETRY
from fixability_dag.core.organism import OrganismSpec, organism_suite
from fixability_dag.core.problems import ArithmeticSuiteSpec, Problem, arithmetic_suite
from fixability_dag.core.prompts import PromptFormat
from fixability_dag.core.routing import CatalogRule
from fixability_dag.core.sampling import Decoding
from fixability_dag.core.subsample import check_setting as check_subsample
from fixability_dag.inputs.problem_files import BUILTIN_FORMATS, MAX_SUITE_CHARS, PROBLEM_FORMATS, ColumnMapping, load_problems

CODE_VERSION = "0.6.0"
"""Bump when a change alters what an audit computes; the nightly schedule re-audits checkpoints stamped older."""


OPERATIONAL_FIELDS = frozenset({"commit_every"})
"""Settings that do not change results: changing them must not make the nightly schedule re-audit everything."""

HASHED_WHEN_SET = {"chat": False, "prompt_template": None, "system_prompt": None, "stop": None,
                   "diagnostic_block": None, "diagnostic_early_stop": False, "label_subsample": None}
"""Settings added after 0.5.0 and their defaults: they enter the config hash only when set otherwise, so audits made
before they existed (which used exactly these defaults) keep their hash and are not re-audited for nothing."""


SUITE_NAME = "name"
"""The key of a ``suites`` entry that names the suite (every other key is an audit setting it overrides)."""


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
    max_tokens: int = 128  # up to the context: a request whose prompt + max_tokens exceeds it is skipped
    fail_threshold: float = 0.0
    # None: one request of n_samples per problem (what audits always did); else seeded blocks of this size ...
    diagnostic_block: int | None = None
    # ... and a problem stops once its successes show it is not failed (core.stopping): the failed set and the
    # failed problems' rows are those of diagnostic_block without stopping; rates are read from the first block
    diagnostic_early_stop: bool = False
    # prompt format (core.prompts): the checkpoint tokenizer's chat template, the frame, the system turn, stops
    chat: bool = False
    prompt_template: str | None = None  # with {question}; default 'Q: {question}\nA: ' (completion) / the question (chat)
    system_prompt: str | None = None  # chat only
    stop: tuple[str, ...] | None = None  # default ['\n\n'] (completion) / none beyond EOS (chat); [] = EOS only
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
    # production mode (core.subsample): the label phase on a seeded random subsample of the failed problems, a
    # fraction in (0, 1) (rounded up, at least 1) or a whole count >= 1 (capped at the failed count); None: all
    label_subsample: float | None = None
    eval_retry_samples: int = 32  # retry's eval draws: the first eval_budget score it at equal samples, the
    # first m (m: the policy's total generated tokens) at equal tokens; must be >= eval_budget
    seed: int = 0
    # operation (not part of the config hash: it changes how an audit is written, not what it computes)
    commit_every: int = 32
    # several suites per checkpoint: each entry a mapping with an optional "name" and any of the settings above,
    # overriding them for that suite (e.g. {"name": "math", "problem_format": "math", "problem_path": ...,
    # "max_tokens": 1024}); empty: the one suite the settings above describe. See suite_configs().
    suites: tuple[Mapping, ...] = ()

    def __post_init__(self) -> None:
        if self.problem_format not in PROBLEM_FORMATS:
            raise ValueError(f"problem_format must be one of {PROBLEM_FORMATS}, got {self.problem_format!r}")
        if self.problem_format not in BUILTIN_FORMATS and not self.problem_path:
            raise ValueError(f"problem_format {self.problem_format!r} needs problem_path")
        if self.problem_format in BUILTIN_FORMATS and self.problem_path:
            raise ValueError(f"problem_path {self.problem_path!r} is set but problem_format is "
                             f"{self.problem_format!r} (a built-in suite, which reads no file): set problem_format to "
                             "the file's format")
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
        if self.diagnostic_block is not None and not 1 <= self.diagnostic_block <= self.n_samples:
            raise ValueError(f"diagnostic_block ({self.diagnostic_block}) must be between 1 and n_samples "
                             f"({self.n_samples}): a problem's samples are drawn in blocks of that many")
        if self.diagnostic_early_stop and self.diagnostic_block is None:
            raise ValueError("diagnostic_early_stop needs diagnostic_block: a problem can only stop between blocks "
                             "(set diagnostic_block, e.g. to a quarter of n_samples)")
        if self.eval_retry_samples < self.eval_budget:
            raise ValueError(f"eval_retry_samples ({self.eval_retry_samples}) must be >= eval_budget ({self.eval_budget}): "
                             "the equal-samples comparison scores retry on its first eval_budget eval draws")
        if self.label_block > min(self.retry_budget, self.intervention_budget):
            raise ValueError(f"label_block ({self.label_block}) must be <= retry_budget ({self.retry_budget}) and "
                             f"intervention_budget ({self.intervention_budget}): every group's rates are read from "
                             "its first block, which must be drawn whole under each budget")
        for name in ("shift_threshold", "headroom_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.max_tool_calls < 0:
            raise ValueError("max_tool_calls must be >= 0")
        if self.cluster_bootstraps < 0:
            raise ValueError("cluster_bootstraps must be >= 0")
        if not 0.0 <= self.fail_threshold < 1.0:
            raise ValueError("fail_threshold must be in [0, 1)")
        if self.cluster_method not in ("gmm", "kmeans"):
            raise ValueError("cluster_method must be 'gmm' or 'kmeans'")
        object.__setattr__(self, "label_subsample", check_subsample(self.label_subsample))  # 50 and 50.0: one hash
        self.prompt_format  # noqa: B018 - validates prompt_template, system_prompt and stop together
        self._check_suites()

    def _check_suites(self) -> None:
        """Every ``suites`` entry is a mapping of known settings that makes a valid config, under a unique name."""
        fields = {f.name for f in dataclasses.fields(self)} - {"suites"}
        names: dict[str, int] = {}
        for index, entry in enumerate(self.suites):
            if not isinstance(entry, Mapping):
                raise ValueError(f"suites[{index}] must be a mapping of settings, got {entry!r}")
            unknown = sorted(set(entry) - fields - {SUITE_NAME})
            if unknown:
                raise ValueError(f"suites[{index}]: unknown audit settings {unknown}")
            name = entry.get(SUITE_NAME)
            if name is not None and (not isinstance(name, str) or not name or len(name) > MAX_SUITE_CHARS):
                raise ValueError(f"suites[{index}]: name must be a non-empty string of at most {MAX_SUITE_CHARS} "
                                 f"characters, got {name!r}")
            if len(self.suites) > 1 or set(entry) - {SUITE_NAME}:
                try:
                    name = self._suite_config(entry).suite_name
                except ValueError as exc:
                    raise ValueError(f"suites[{index}] ({name or 'unnamed'}): {exc}") from None
            if name in names:
                raise ValueError(f"suites[{names[name]}] and suites[{index}] are both suite {name!r}: a problem is "
                                 "identified by suite and id, so each suite needs its own name (set 'name')")
            names[name] = index

    def _suite_config(self, entry: Mapping) -> AuditConfig:
        """This config with one entry's overrides applied: a single-suite config that keeps only the entry's name."""
        overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items() if k != SUITE_NAME}
        named = ({SUITE_NAME: entry[SUITE_NAME]},) if entry.get(SUITE_NAME) else ()
        return dataclasses.replace(self, suites=named, **overrides)

    def suite_configs(self) -> list[AuditConfig]:
        """One single-suite config per suite the audit covers (itself when it covers one). Every stage runs once per
        suite on a store bound to it, so a suite's features, clusters, plan and evaluation are its own."""
        if len(self.suites) <= 1 and not any(set(e) - {SUITE_NAME} for e in self.suites):
            return [self]
        return [self._suite_config(entry) for entry in self.suites]

    @property
    def suite_name(self) -> str:
        """The suite of a single-suite config: its ``name``, else the file name without extension (``arith`` for
        the built-in suite), which is what the loaders store in ``problems.suite``."""
        configs = self.suite_configs()
        if len(configs) > 1:
            raise ValueError(f"this config covers {len(configs)} suites; take one from suite_configs()")
        cfg = configs[0]  # a single entry's overrides applied (its problem_path names the suite)
        if cfg.suites and cfg.suites[0].get(SUITE_NAME):
            return cfg.suites[0][SUITE_NAME]
        return cfg.problem_format if cfg.problem_format in BUILTIN_FORMATS else Path(cfg.problem_path).stem

    @property
    def prompt_format(self) -> PromptFormat:
        return PromptFormat(chat=self.chat, template=self.prompt_template, system_prompt=self.system_prompt,
                            stop=None if self.stop is None else tuple(self.stop))

    @property
    def decoding(self) -> Decoding:
        return Decoding(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                        stop=self.prompt_format.stops, max_tool_calls=self.max_tool_calls)

    def routing_rule(self) -> CatalogRule:
        return CatalogRule(self.shift_threshold, self.headroom_threshold, self.retry_budget, self.intervention_budget)

    def budget_for(self, intervention: str) -> int:
        return self.retry_budget if intervention == RETRY else self.intervention_budget

    def as_dict(self) -> dict:
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        # left out when empty, so configs from before suites existed keep their hash (and are not re-audited)
        suites = [{k: list(v) if isinstance(v, tuple) else v for k, v in e.items()} for e in values.pop("suites")]
        return {**values, "suites": suites} if suites else values

    def config_hash(self) -> str:
        science = {k: v for k, v in self.as_dict().items() if k not in OPERATIONAL_FIELDS
                   and not (k in HASHED_WHEN_SET and v == HASHED_WHEN_SET[k])}
        if not any(CATALOG[i].kind == "tool" for i in self.interventions):
            science.pop("max_tool_calls", None)  # read by tool interventions only: configs without one keep their hashes
        return hashlib.sha256(json.dumps(science, sort_keys=True).encode()).hexdigest()[:16]

    def load_problems(self) -> list[Problem]:
        """The problems of every suite the config covers, each with its suite's name."""
        configs = self.suite_configs()
        if len(configs) > 1 or configs[0] is not self:
            return [p for cfg in configs for p in cfg.load_problems()]
        named = self.suites[0].get(SUITE_NAME) if self.suites else None
        if self.problem_format == "arith":
            spec = ArithmeticSuiteSpec(
                chain_lengths=tuple(self.chain_lengths),
                templates_per_length=self.templates_per_length,
                variants_per_template=self.variants_per_template,
                **({"name": named} if named else {}),
            )
            return arithmetic_suite(spec)
        if self.problem_format == "organism":
            return organism_suite(OrganismSpec(**({"name": named} if named else {})))
        mapping = ColumnMapping(question=self.question_field, answer=self.answer_field, id=self.id_field)
        return load_problems(self.problem_format, self.problem_path, mapping, named)

    @classmethod
    def from_mapping(cls, values: dict) -> AuditConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown audit settings: {sorted(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        if "suites" in values:
            values["suites"] = tuple(dict(e) if isinstance(e, Mapping) else e for e in values["suites"])
        return cls(**values)
