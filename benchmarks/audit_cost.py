"""What an audit costs in generated tokens, in its three modes, and whether the cheap modes reach the same answers.

    VLLM_CPU_KVCACHE_SPACE=4 .venv/bin/python -m benchmarks.audit_cost [--checkpoint DIR ...] [--json out.json]

One process, one engine per checkpoint, each checkpoint audited three times into three fresh SQLite databases, with
the same seeds and settings except for the mode:

* ``fixed``      every problem draws its whole diagnostic budget (in the same seeded blocks the adaptive mode draws,
  ``diagnostic_early_stop`` off), every label group its whole budget (``label_early_stop`` off), every failed
  problem is labelled: the fixed-budget design, the reference;
* ``adaptive``   diagnostic blocks stop once a problem is known not to be failed; label groups stop at their first
  block with a success (docs/method.md, sections on blocks and stopping);
* ``production`` ``adaptive`` with the label phase on a seeded subsample of the failed problems (``label_subsample``);
  routing and rescue evaluation on all of them.

It prints, per checkpoint and mode, generated (and prompt) tokens per phase and the wall time, then the agreement of
each cheap mode with ``fixed``: the failed set, the routing plan (action and intervention per failed problem), and
the ground-truth label of every problem both label (for ``production``: its subsample). The target of issue 15 is
``production`` generating at most 40% of ``fixed``'s tokens with an identical failed set and routing plan.

Why tokens and not seconds: on a GPU the audit's cost is its generated tokens; this machine's seconds (2 shared CPU
cores, a 1M-parameter model) are printed for completeness only. Prompt tokens are counted once per request (vLLM
prefills a request's prompt once for its ``n`` samples) and appear when the database records them.

The nightly settings are the organism audit's (``demo/organism/audit.yaml``) without the second label seed
(``label_replicate``), which belongs to the science run, not to a nightly audit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pandas as pd  # noqa: E402

from fixability_dag.engines.inprocess import EngineOptions, VLLMEngine  # noqa: E402
from fixability_dag.engines.tools import ToolEngine  # noqa: E402
from fixability_dag.inputs.checkpoints import inspect_checkpoint  # noqa: E402
from fixability_dag.pipeline import audit  # noqa: E402
from fixability_dag.pipeline.config import AuditConfig  # noqa: E402
from fixability_dag.pipeline.settings import read_settings_file  # noqa: E402
from fixability_dag.pipeline.tables import markdown_table  # noqa: E402
from fixability_dag.storage.store import AuditStore  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINTS = (REPO / "demo/organism/org-llama-seed7-sft-s0700",)
DEFAULT_SETTINGS = REPO / "demo/organism/audit.yaml"
TARGET_TOKEN_SHARE = 0.40
PHASES = ("diagnostic", "probe", "label", "eval")


def modes(base: AuditConfig, block: int, subsample: float | int) -> dict[str, AuditConfig]:
    """The three modes over one nightly configuration: only the stopping and subsampling settings differ."""
    nightly = dataclasses.replace(base, label_replicate=False, diagnostic_block=block)
    return {
        "fixed": dataclasses.replace(nightly, diagnostic_early_stop=False, label_early_stop=False),
        "adaptive": dataclasses.replace(nightly, diagnostic_early_stop=True, label_early_stop=True),
        "production": dataclasses.replace(nightly, diagnostic_early_stop=True, label_early_stop=True,
                                          label_subsample=subsample),
    }


STAGES = (
    ("diagnostic", lambda store, engine, ck, cfg: audit.diagnose(store, engine, ck, cfg, "bench")),
    ("probe", lambda store, engine, ck, cfg: audit.probe(store, engine, ck, cfg, "bench")),
    ("features", lambda store, engine, ck, cfg: audit.featurize(store, ck, cfg)),
    ("label", lambda store, engine, ck, cfg: audit.measure_rescues(store, engine, ck, cfg, "bench")),
    ("regimes", lambda store, engine, ck, cfg: audit.label(store, ck, cfg)),
    ("plan", lambda store, engine, ck, cfg: audit.plan(store, ck, cfg)),
    ("eval", lambda store, engine, ck, cfg: audit.evaluate(store, engine, ck, cfg, "bench")),
)


@dataclasses.dataclass
class Audited:
    """One mode's audit of one checkpoint, read back from its database."""

    mode: str
    seconds: dict[str, float]
    rollouts: pd.DataFrame
    failed: set[str]
    plan: pd.DataFrame
    labels: pd.DataFrame

    def tokens(self, column: str = "num_tokens") -> dict[str, int | None]:
        """Tokens per phase (``label`` holds its replicate too, when there is one)."""
        out: dict[str, int | None] = {}
        for phase in PHASES:
            rows = self.rollouts[self.rollouts["phase"].str.startswith(phase)]
            if column not in rows or (len(rows) and rows[column].isna().any()):
                out[phase] = None  # not recorded by this database: unknown, not 0
            else:
                out[phase] = int(rows[column].sum())
        return out


def run_mode(engine, path: Path, cfg: AuditConfig, mode: str, db_dir: Path) -> Audited:
    store = AuditStore(f"sqlite:///{db_dir / f'{mode}.db'}")
    store.migrate()
    info = inspect_checkpoint(path)
    store.register_checkpoint(info.checkpoint_id, str(path), info.fingerprint, recipe=info.recipe,
                              training_step=info.training_step)
    audit.snapshot_problems(store, cfg)
    seconds = {}
    for name, stage in STAGES:
        started = time.perf_counter()
        stage(store, engine, info.checkpoint_id, cfg)
        seconds[name] = time.perf_counter() - started
        print(f"  {mode:<10} {name:<10} {seconds[name]:7.1f} s", file=sys.stderr, flush=True)
    labels = store.read("regime_labels", info.checkpoint_id)
    return Audited(mode, seconds, store.read("rollouts", info.checkpoint_id),
                   set(labels["problem_id"]), store.read("routing_plans", info.checkpoint_id), labels)


def agreement(reference: Audited, other: Audited) -> dict:
    """How far ``other`` reaches ``reference``'s answers: failed set, plan, labels where both have one."""
    plan_key = ["problem_id", "action", "intervention"]
    ref_plan = reference.plan[plan_key].fillna("-").sort_values("problem_id").reset_index(drop=True)
    oth_plan = other.plan[plan_key].fillna("-").sort_values("problem_id").reset_index(drop=True)
    same_plan = (len(ref_plan) == len(oth_plan) and bool((ref_plan.to_numpy() == oth_plan.to_numpy()).all()))
    both = reference.labels.merge(other.labels, on="problem_id", suffixes=("_ref", "_oth"))
    both = both[both["true_regime_ref"].notna() & both["true_regime_oth"].notna()]
    plan_matches = int(ref_plan.merge(oth_plan, on=plan_key).shape[0])
    return {"failed_identical": reference.failed == other.failed, "failed_ref": len(reference.failed),
            "failed_other": len(other.failed), "plan_identical": same_plan,
            "plan_agreement": plan_matches / len(ref_plan) if len(ref_plan) else float("nan"),
            "labelled_both": len(both),
            "label_agreement": float((both["true_regime_ref"] == both["true_regime_oth"]).mean()) if len(both) else float("nan")}


def report(results: dict[str, dict[str, Audited]]) -> tuple[str, dict]:
    lines, raw = [], {}
    for ck, by_mode in results.items():
        fixed_total = sum(v for v in by_mode["fixed"].tokens().values() if v)
        rows, raw[ck] = [], {}
        for mode, audited in by_mode.items():
            gen, prompt = audited.tokens(), audited.tokens("prompt_tokens")
            total = sum(v for v in gen.values() if v)
            prompt_total = None if any(v is None for v in prompt.values()) else sum(prompt.values())
            row = {"mode": mode, **{f"{p} tokens": gen[p] for p in PHASES}, "generated tokens": total,
                   "share of fixed": round(total / fixed_total, 3) if fixed_total else None,
                   "prompt tokens": prompt_total, "wall s": round(sum(audited.seconds.values()), 1)}
            if mode != "fixed":
                row.update(agreement(by_mode["fixed"], audited))
            rows.append(row)
            raw[ck][mode] = {**row, "seconds": audited.seconds, "prompt_by_phase": prompt}
        lines += [f"### {ck}", "", markdown_table(pd.DataFrame(rows).drop(columns=[
            c for c in ("failed_ref", "failed_other") if c in pd.DataFrame(rows)])), ""]
        prod = raw[ck]["production"]
        met = (prod["share of fixed"] is not None and prod["share of fixed"] <= TARGET_TOKEN_SHARE
               and prod["failed_identical"] and prod["plan_identical"])
        lines.append(f"Target (production <= {TARGET_TOKEN_SHARE:.0%} of fixed's generated tokens, identical failed set "
                     f"and routing plan): **{'met' if met else 'not met'}** (share {prod['share of fixed']}, failed set "
                     f"{'identical' if prod['failed_identical'] else 'differs'}, plan "
                     f"{'identical' if prod['plan_identical'] else 'differs'}).")
        lines.append("")
    return "\n".join(lines), raw


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", type=Path, help="checkpoint directory (repeatable)")
    parser.add_argument("--config", type=Path, default=DEFAULT_SETTINGS, help="settings file of the nightly audit")
    parser.add_argument("--diagnostic-block", type=int, default=4)
    parser.add_argument("--label-subsample", type=float, default=0.25,
                        help="fraction (< 1) or count (>= 1) of failed problems the production label phase covers")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    subsample = args.label_subsample
    configs = modes(read_settings_file(args.config), args.diagnostic_block, subsample)
    results: dict[str, dict[str, Audited]] = {}
    for path in args.checkpoint or DEFAULT_CHECKPOINTS:
        engine = ToolEngine(VLLMEngine(path, EngineOptions()))
        try:
            with tempfile.TemporaryDirectory(prefix="audit-cost-") as db_dir:
                results[path.name] = {mode: run_mode(engine, path, cfg, mode, Path(db_dir))
                                      for mode, cfg in configs.items()}
        finally:
            engine.close()
    text, raw = report(results)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": str(args.config), "diagnostic_block": args.diagnostic_block,
                                         "label_subsample": subsample, "checkpoints": raw}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
