"""Everything after generation is cheap and scales linearly: a benchmark that prints the figures behind the claim.

Three parts, on planted-regime synthetic rollouts (``synthetic.planted_frames``; texts of 100-300 characters with
newlines, tabs, backslashes and non-ASCII):

1. **In memory**, ``--problems`` failed problems x ``--samples`` rollouts: seconds of failed-problem selection,
   features, clustering (standardise + GMM) and routing (thresholds + plan), median of ``--repeats``. Target:
   under 2 s in total. Baseline in the same process: the per-problem feature code the vectorised one replaced.
2. **Rollout writes**: the same diagnostic frame through the store's real write path,
   ``AuditStore.replace("rollouts", ...)``, into SQLite and PostgreSQL (a fresh database each time), in rows/s.
   Target: >= 100,000 rows/s. Baseline: the previous write path (row-wise ``to_dict`` + ``_clean``, then
   SQLAlchemy ``insert()`` in batches of 5,000), reproduced below.
3. **Per added checkpoint**: with ``--checkpoint-problems`` x ``--checkpoint-samples`` per checkpoint, the
   seconds to write a new checkpoint's rollouts, featurize it and plan it (the post-generation, label-free stages
   of ``audit.py``, reading from the store) after 1, 5 and 20 checkpoints are already audited: median of three
   consecutive additions at each count. Flat = linear in the number of checkpoints. ``EXPLAIN`` shows whether the
   per-checkpoint queries use indexes.

PostgreSQL: ``--db-url`` names a server (any database on it, trust auth); a scratch database
``fixability_bench_<random>`` is created there and dropped at the end. No other database is touched.

Wall seconds depend on what else runs on the machine; the header prints the load average, and every row also
gives this process's CPU seconds (the database server's own CPU is not in it).

    .venv/bin/python -m benchmarks.post_generation --db-url postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        --json .fixability/bench_post_generation.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
from sqlalchemy import delete, select, text

from fixability_dag.core.features import FEATURES, compute_features, compute_features_per_problem, failed_problem_ids
from fixability_dag.core.regimes import cluster, feature_matrix
from fixability_dag.core.routing import fit_thresholds, route
from fixability_dag.core.stats import matched_accuracy
from fixability_dag.pipeline import audit
from fixability_dag.pipeline.config import AuditConfig
from fixability_dag.pipeline.tables import markdown_table
from fixability_dag.storage.schema import TABLES
from fixability_dag.storage.store import AuditStore, _clean, redact
from fixability_dag.testing.scratch import reset_schema, scratch_postgres
from fixability_dag.testing.synthetic import planted_frames

TARGET_SECONDS = 2.0
TARGET_ROWS_PER_SECOND = 100_000


@dataclasses.dataclass
class Timing:
    wall: float
    cpu: float


def timed(fn: Callable[[], object]) -> tuple[object, Timing]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, Timing(time.perf_counter() - wall, time.process_time() - cpu)


def median_timing(timings: list[Timing]) -> Timing:
    return Timing(statistics.median(t.wall for t in timings), statistics.median(t.cpu for t in timings))


def table(headers: list[str], rows: list[list]) -> str:
    return markdown_table(rows, headers, floatfmt=",.3f", intfmt=",")


# -- 1. in memory ------------------------------------------------------------------------------------------------


def in_memory(diagnostic: pd.DataFrame, probe: pd.DataFrame, labels: dict[str, str], repeats: int, baseline: bool) -> dict:
    cfg = AuditConfig()

    def clustering(features: pd.DataFrame):
        return cluster(feature_matrix(features, FEATURES))

    def routing(features: pd.DataFrame) -> pd.DataFrame:  # as audit.plan routes
        return route(features, fit_thresholds(features), cfg.probe_intervention, cfg.eval_budget, cfg.eval_budget)

    stages: dict[str, list[Timing]] = {"failed problems": [], "features": [], "clustering": [], "routing": []}
    for _ in range(repeats):
        failed, t = timed(lambda: failed_problem_ids(diagnostic))
        stages["failed problems"].append(t)
        features, t = timed(lambda: compute_features(diagnostic, probe, failed))
        stages["features"].append(t)
        clusters, t = timed(lambda: clustering(features))
        stages["clustering"].append(t)
        plan, t = timed(lambda: routing(features))
        stages["routing"].append(t)
    med = {name: median_timing(ts) for name, ts in stages.items()}
    total = Timing(sum(t.wall for t in med.values()), sum(t.cpu for t in med.values()))
    result = {
        "problems": len(failed), "rollouts": len(diagnostic), "probe_rollouts": len(probe), "repeats": repeats,
        "stages": {k: dataclasses.asdict(v) for k, v in med.items()}, "total": dataclasses.asdict(total),
        "meets_target": total.wall < TARGET_SECONDS,
        "cluster_matched_accuracy": matched_accuracy(list(clusters), [labels[p] for p in features["problem_id"]]),
        "plan_actions": plan["action"].value_counts().to_dict(),
    }
    if baseline:
        reference, t = timed(lambda: compute_features_per_problem(diagnostic, probe, failed))
        pd.testing.assert_frame_equal(features, reference, check_exact=False, rtol=1e-12)
        result["baseline_features"] = dataclasses.asdict(t)
        with every_thread():  # the same fits as before stats.single_threaded existed
            runs = [(timed(lambda: clustering(features)), timed(lambda: routing(features))) for _ in range(repeats)]
        assert all((c[0] == clusters).all() and p[0].equals(plan) for c, p in runs), "thread count changed the result"
        result["baseline_clustering"] = dataclasses.asdict(median_timing([c[1] for c, _ in runs]))
        result["baseline_routing"] = dataclasses.asdict(median_timing([p[1] for _, p in runs]))
    return result


@contextlib.contextmanager
def every_thread() -> Iterator[None]:
    """Let BLAS/OpenMP use all their threads inside the fits again (the pre-optimisation behaviour)."""
    import fixability_dag.core.regimes as regimes
    import fixability_dag.core.routing as routing

    saved = regimes.single_threaded, routing.single_threaded
    regimes.single_threaded = routing.single_threaded = contextlib.nullcontext
    try:
        yield
    finally:
        regimes.single_threaded, routing.single_threaded = saved


def print_in_memory(r: dict) -> None:
    print(f"\n## 1. Features -> clustering -> routing, in memory ({r['problems']:,} failed problems, "
          f"{r['rollouts']:,} base + {r['probe_rollouts']:,} probe rollouts; median of {r['repeats']})\n")
    rows = [[name, t["wall"], t["cpu"]] for name, t in r["stages"].items()]
    rows.append(["**total**", r["total"]["wall"], r["total"]["cpu"]])
    print(table(["stage", "wall s", "cpu s"], rows))
    verdict = "meets" if r["meets_target"] else "MISSES"
    print(f"\nTotal {r['total']['wall']:.2f} s: {verdict} the < {TARGET_SECONDS:.0f} s target. Clusters vs planted regimes: "
          f"matched accuracy {r['cluster_matched_accuracy']:.3f}; plan: {r['plan_actions']}.")
    if "baseline_features" in r:
        print("\nBefore (same process, identical outputs asserted): per-problem features; clustering and thresholds with "
              "BLAS/OpenMP on every thread.\n")
        rows = []
        for stage, key in (("features", "baseline_features"), ("clustering", "baseline_clustering"), ("routing", "baseline_routing")):
            before, after = r[key], r["stages"][stage]
            rows.append([stage, before["wall"], after["wall"], f"{before['wall'] / after['wall']:.1f}x", before["cpu"], after["cpu"]])
        print(table(["stage", "before wall s", "after wall s", "speed-up", "before cpu s", "after cpu s"], rows))


# -- databases -----------------------------------------------------------------------------------------------------


class Backends:
    """Fresh, migrated stores on demand: a new SQLite file, or the scratch PostgreSQL database with a new schema."""

    def __init__(self, workdir: Path, pg_url: str | None):
        self.workdir, self.pg_url, self.files = workdir, pg_url, 0

    @property
    def names(self) -> list[str]:
        return ["sqlite"] + (["postgresql"] if self.pg_url else [])

    def fresh(self, name: str) -> AuditStore:
        if name == "sqlite":
            self.files += 1
            store = AuditStore(f"sqlite:///{self.workdir / f'bench{self.files}.db'}")
        else:
            reset_schema(self.pg_url)
            store = AuditStore(self.pg_url)
        store.migrate()
        return store.for_suite("synthetic")  # the suite seed_reference_rows stores the problems under


def seed_reference_rows(store: AuditStore, problem_ids: list[str], checkpoints: list[str]) -> None:
    store.upsert("problems", [{"problem_id": p, "suite": "synthetic", "question": "q", "gold_answer": "0", "content_hash": "-"} for p in problem_ids])
    for ck in checkpoints:
        store.register_checkpoint(ck, f"/bench/{ck}", "fingerprint", "synthetic", None)


def legacy_replace(store: AuditStore, table_name: str, checkpoint_id: str, frame: pd.DataFrame, **scope) -> int:
    """The write path before ``fixability_dag.storage.bulk``, verbatim: row-wise records, then SQLAlchemy executemany."""
    table = TABLES[table_name]
    payload = [{"suite": "synthetic", **{k: _clean(v) for k, v in row.items()}} for row in frame.to_dict("records")]
    for row in payload:
        row["checkpoint_id"] = checkpoint_id
    where = [table.c.checkpoint_id == checkpoint_id] + [table.c[k] == v for k, v in scope.items()]
    with store.engine.begin() as conn:
        conn.execute(delete(table).where(*where))
        for start in range(0, len(payload), 5000):
            conn.execute(table.insert(), payload[start : start + 5000])
    return len(payload)


# -- 2. rollout writes -------------------------------------------------------------------------------------------


def rollout_writes(diagnostic: pd.DataFrame, backends: Backends, baseline: bool, chunked: bool = True,
                   foreign_key_experiment: bool = True) -> list[dict]:
    problem_ids = sorted(diagnostic["problem_id"].unique())
    results = []

    def measure(backend: str, variant: str, write: Callable[[AuditStore], object], store: AuditStore | None = None) -> AuditStore:
        store = store or backends.fresh(backend)
        if not store.count("problems"):
            seed_reference_rows(store, problem_ids, ["ck"])
        _, t = timed(lambda: write(store))
        results.append({"backend": backend, "variant": variant, "rows": len(diagnostic), "wall": t.wall, "cpu": t.cpu,
                        "rows_per_s": len(diagnostic) / t.wall, "meets_target": len(diagnostic) / t.wall >= TARGET_ROWS_PER_SECOND})
        print(f"  {backend:10s} {variant:45s} {t.wall:7.2f} s  {len(diagnostic) / t.wall:10,.0f} rows/s", file=sys.stderr)
        return store

    for backend in backends.names:
        if baseline:
            measure(backend, "before: to_dict + SQLAlchemy insert, 5k batches",
                    lambda s: legacy_replace(s, "rollouts", "ck", diagnostic, phase="diagnostic")).dispose()
        store = measure(backend, "after: store.replace (empty table)",
                        lambda s: s.replace("rollouts", "ck", diagnostic, phase="diagnostic"))
        assert store.count("rollouts", "ck") == len(diagnostic)
        measure(backend, "after: store.replace again (delete + insert)",
                lambda s: s.replace("rollouts", "ck", diagnostic, phase="diagnostic"), store=store)
        store.dispose()
        if chunked:
            store = measure(backend, f"insert_rollouts, {CHUNK_REQUESTS}-request chunks (fresh)",
                            lambda s: chunked_writes(s, diagnostic, replace=False))
            measure(backend, f"re-run after new weights: 1 delete + {CHUNK_REQUESTS}-request chunks",
                    lambda s: chunked_writes(s, diagnostic, replace=True), store=store).dispose()
        if backend == "postgresql" and foreign_key_experiment:
            store = backends.fresh(backend)
            seed_reference_rows(store, problem_ids, ["ck"])
            with store.engine.begin() as conn:  # scratch schema only: how much of the write the two RI triggers cost
                for fk in TABLES["rollouts"].foreign_keys:
                    conn.execute(text(f'ALTER TABLE rollouts DROP CONSTRAINT "{fk.constraint.name}"'))
            measure(backend, "experiment: store.replace, rollouts without its 2 FKs",
                    lambda s: s.replace("rollouts", "ck", diagnostic, phase="diagnostic"), store=store).dispose()
    return results


CHUNK_REQUESTS = 32


def chunked_writes(store: AuditStore, frame: pd.DataFrame, replace: bool) -> None:
    """The generation path (``audit.sample_phase``): one transaction per chunk of 32 requests (problems). With
    ``replace`` every group is stored already under another request hash (a re-saved checkpoint): they are deleted
    up front in one statement, as ``sample_phase`` does, then the chunks insert."""
    if replace:
        groups = list(dict.fromkeys(zip(frame["problem_id"], frame["intervention"])))
        store.delete_rollout_groups("ck", "diagnostic", groups, whole_phase=True)
    bounds = frame["problem_id"].ne(frame["problem_id"].shift()).to_numpy().nonzero()[0].tolist() + [len(frame)]
    for i in range(0, len(bounds) - 1, CHUNK_REQUESTS):
        chunk = frame.iloc[bounds[i] : bounds[min(i + CHUNK_REQUESTS, len(bounds) - 1)]]
        store.insert_rollouts("ck", chunk)


def print_rollout_writes(results: list[dict]) -> None:
    print(f"\n## 2. Rollout rows into the database ({results[0]['rows']:,} rows, realistic texts)\n")
    print(table(["backend", "write path", "wall s", "cpu s (this process)", "rows/s", f">= {TARGET_ROWS_PER_SECOND:,}/s"],
                [[r["backend"], r["variant"], r["wall"], r["cpu"], int(r["rows_per_s"]), "yes" if r["meets_target"] else "NO"] for r in results]))


# -- 3. per added checkpoint -------------------------------------------------------------------------------------


def per_checkpoint(backends: Backends, problems: int, samples: int, probe_samples: int, counts: list[int], additions: int) -> dict:
    cfg = AuditConfig(n_samples=samples, probe_samples=probe_samples)
    out = {}
    for backend in backends.names:
        store = backends.fresh(backend)
        labels = planted_frames(problems, 1, 1, seed=0)[2]  # the problem ids depend on ``problems`` only
        seed_reference_rows(store, sorted(labels), [])
        audited, rows = 0, []

        def audit_one(k: int) -> dict[str, float]:
            ck = f"ck-{k:03d}"
            diag, prb, _ = planted_frames(problems, samples, probe_samples, seed=k)
            store.register_checkpoint(ck, f"/bench/{ck}", "fingerprint", "synthetic", k)
            stages = {
                "write rollouts": lambda: (store.replace("rollouts", ck, diag, phase="diagnostic"), store.replace("rollouts", ck, prb, phase="probe")),
                "featurize": lambda: audit.featurize(store, ck, cfg),
                "plan": lambda: audit.plan(store, ck, cfg),
            }
            return {name: timed(fn)[1].wall for name, fn in stages.items()}

        for count in counts:
            while audited < count:
                audit_one(audited)
                audited += 1
            runs = []
            for _ in range(additions):
                runs.append(audit_one(audited))
                audited += 1
            row = {"already_audited": count, **{k: statistics.median(r[k] for r in runs) for k in runs[0]}}
            row["total"] = statistics.median(sum(r.values()) for r in runs)
            rows.append(row)
            print(f"  {backend:10s} after {count:3d} checkpoints: {row['total']:.2f} s per added checkpoint", file=sys.stderr)
        out[backend] = {"rows": rows, "rollouts_per_checkpoint": problems * (samples + probe_samples),
                        "query_plans": query_plans(store, "ck-000"), "checkpoints_in_db": audited}
        store.dispose()
    return out


def query_plans(store: AuditStore, checkpoint_id: str) -> list[dict]:
    """EXPLAIN of the per-checkpoint reads and deletes the stages issue, and whether each uses an index."""
    rollouts, features, plans = (TABLES[n] for n in ("rollouts", "problem_features", "routing_plans"))
    queries = {
        "read rollouts of a checkpoint and phase": select(rollouts).where(rollouts.c.checkpoint_id == checkpoint_id, rollouts.c.phase == "diagnostic"),
        "delete rollouts of a checkpoint and phase": delete(rollouts).where(rollouts.c.checkpoint_id == checkpoint_id, rollouts.c.phase == "probe"),
        "read features of a checkpoint": select(features).where(features.c.checkpoint_id == checkpoint_id),
        "delete features of a checkpoint": delete(features).where(features.c.checkpoint_id == checkpoint_id),
        "delete plan of a checkpoint": delete(plans).where(plans.c.checkpoint_id == checkpoint_id),
    }
    found = []
    with store.engine.connect() as conn:
        if store.dialect == "postgresql":
            conn.execute(text("ANALYZE"))  # what autovacuum keeps up to date on a live database
        for name, query in queries.items():
            compiled = query.compile(dialect=store.engine.dialect)
            if store.dialect == "sqlite":
                params = tuple(compiled.params[k] for k in compiled.positiontup)
                plan = " / ".join(r[-1] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params))
                uses_index = "USING INDEX" in plan or "USING PRIMARY KEY" in plan or "USING COVERING INDEX" in plan
            else:
                plan = " / ".join(r[0].strip() for r in conn.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params))
                uses_index = "Index" in plan and "Seq Scan" not in plan
            found.append({"query": name, "uses_index": uses_index, "plan": plan})
        conn.rollback()
    return found


def print_per_checkpoint(r: dict, problems: int, samples: int, probe_samples: int, additions: int) -> None:
    print(f"\n## 3. Seconds per added checkpoint vs. checkpoints already audited ({problems:,} problems x {samples} "
          f"+ {probe_samples} probe samples per checkpoint; median of {additions} consecutive additions)\n")
    for backend, data in r.items():
        rows = data["rows"]
        first = rows[0]["total"]
        print(f"**{backend}** ({data['rollouts_per_checkpoint']:,} rollouts per checkpoint, {data['checkpoints_in_db']} checkpoints at the end)\n")
        stage_names = [k for k in rows[0] if k not in ("already_audited", "total")]
        print(table(["already audited", *[f"{s} s" for s in stage_names], "total s", "vs first"],
                    [[row["already_audited"], *[row[s] for s in stage_names], row["total"], f"{row['total'] / first:.2f}x"] for row in rows]))
        print()
        print(table(["query", "uses index", "plan"], [[q["query"], "yes" if q["uses_index"] else "NO", f"`{q['plan']}`"] for q in data["query_plans"]]))
        print()


# -- main ----------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=10_000, help="failed problems in parts 1 and 2")
    parser.add_argument("--samples", type=int, default=64, help="base rollouts per problem in parts 1 and 2")
    parser.add_argument("--probe-samples", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="runs of part 1 (median reported)")
    parser.add_argument("--db-url", help="PostgreSQL server for parts 2 and 3 (a scratch database is created on it and "
                                         "dropped); SQLite only when absent")
    parser.add_argument("--checkpoint-problems", type=int, default=1_000)
    parser.add_argument("--checkpoint-samples", type=int, default=16)
    parser.add_argument("--checkpoint-probe-samples", type=int, default=4)
    parser.add_argument("--counts", default="1,5,20", help="checkpoints already audited when one more is timed")
    parser.add_argument("--additions", type=int, default=3, help="consecutive checkpoints timed at each count")
    parser.add_argument("--no-baseline", action="store_true", help="skip the pre-optimisation baselines (slow)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: memory, writes, checkpoints")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    counts = sorted(int(c) for c in args.counts.split(","))

    load = os.getloadavg()
    print(f"# Post-generation benchmark\n\n{os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
          f"(1/5/15 min) at start; PostgreSQL: {redact(args.db_url) if args.db_url else 'not requested'}.")
    report: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "load_average_at_start": load}
    diagnostic, probe, labels = planted_frames(args.problems, args.samples, args.probe_samples, seed=0)

    if "memory" not in skip:
        report["in_memory"] = in_memory(diagnostic, probe, labels, args.repeats, not args.no_baseline)
        print_in_memory(report["in_memory"])

    with contextlib.ExitStack() as stack:
        pg_url = stack.enter_context(scratch_postgres(args.db_url, prefix="fixability_bench")) if args.db_url else None
        backends = Backends(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fixability-bench-"))), pg_url)
        if "writes" not in skip:
            report["rollout_writes"] = rollout_writes(diagnostic, backends, not args.no_baseline)
            print_rollout_writes(report["rollout_writes"])
        del diagnostic, probe
        if "checkpoints" not in skip:
            report["per_checkpoint"] = per_checkpoint(backends, args.checkpoint_problems, args.checkpoint_samples,
                                                      args.checkpoint_probe_samples, counts, args.additions)
            print_per_checkpoint(report["per_checkpoint"], args.checkpoint_problems, args.checkpoint_samples,
                                 args.checkpoint_probe_samples, args.additions)

    load = os.getloadavg()
    report["load_average_at_end"] = load
    print(f"Load average at end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}.")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
