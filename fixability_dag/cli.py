"""Command line: validate problem files, run the demo audit, print what the database holds.

    fixability validate gsm8k data/test.jsonl      # check a file, run nothing
    fixability grade pairs.jsonl                   # grade {"gold", "completion"} rows with the audit's grader
    fixability regrade CHECKPOINT                  # re-grade a stored audit after a grader change, generating nothing
    fixability export CHECKPOINT                   # per suite: Parquet + JSONL rows for the trainer's data loader
    fixability audit CHECKPOINT --config audit.yaml  # audit through the Dagster instance (runs show in the UI)
    fixability demo                                # audit the demo set (demo/set) with demo/organism/demo.yaml
    fixability summary                             # per-checkpoint pass rate and regime shares from the database
    fixability figures serve                       # the figures beside the database for the UI (make ui starts it)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

from fixability_dag.core.answers import grade
from fixability_dag.core.regimes import REGIMES
from fixability_dag.engines.quiet import quiet_engine
from fixability_dag.inputs.problem_files import (
    BUILTIN_FORMATS,
    PROBLEM_FORMATS,
    ColumnMapping,
    ProblemFileError,
    load_grading_pairs,
    load_problems,
)
from fixability_dag.storage.store import AuditStore, default_url, redact


def cmd_validate(args: argparse.Namespace) -> int:
    mapping = ColumnMapping(question=args.question_field, answer=args.answer_field, id=args.id_field)
    try:
        problems = load_problems(args.format, args.path, mapping)
    except ProblemFileError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 2
    with_steps = sum(1 for p in problems if p.reference_steps)
    print(f"ok: {args.path}: {len(problems)} problems ({with_steps} with reference steps)")
    return 0


def cmd_grade(args: argparse.Namespace) -> int:
    """One JSON line per row (line, gold, extracted answer, correct) on stdout, the tally on stderr."""
    try:
        pairs = load_grading_pairs(args.path, args.gold_field, args.completion_field)
    except ProblemFileError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 2
    correct = 0
    for pair in pairs:
        answer, ok = grade(pair.gold, pair.completion)
        correct += ok
        print(json.dumps({"line": pair.line, "gold": pair.gold, "answer": answer, "correct": ok}, ensure_ascii=False))
    print(f"graded {len(pairs)} rows of {args.path}: {correct} correct ({correct / len(pairs):.1%})", file=sys.stderr)
    return 0


def cmd_regrade(args: argparse.Namespace) -> int:
    """Exit 0 when everything was recomputed, 3 when a stage needs new samples (it says which), 2 when refused."""
    from fixability_dag.pipeline.regrade import regrade

    store = AuditStore(args.db)
    store.migrate()
    try:
        result = regrade(store, args.checkpoint)
    except ValueError as exc:
        print(f"cannot regrade: {exc}", file=sys.stderr)
        return 2
    changes = ", ".join(f"{phase} {n}" for phase, n in result.changed.items())
    print(f"{args.checkpoint}: rows re-graded differently per phase: {changes}; diagnostic pass rate "
          f"{result.pass_rate[0]:.3f} -> {result.pass_rate[1]:.3f}")
    print(f"recomputed without generating: {', '.join(result.recomputed) or 'nothing'}")
    for stage, why in result.needs_generation.items():
        print(f"not recomputed: {why}", file=sys.stderr)
    return 3 if result.needs_generation else 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write the checkpoint's export per suite (under the configuration it was audited with); exit 2 when refused."""
    from fixability_dag.pipeline.export import export_training_data
    from fixability_dag.pipeline.regrade import audited_config

    store = AuditStore(args.db)
    store.migrate()
    try:
        cfg = audited_config(store, args.checkpoint)
        if args.suite:
            by_name = {c.suite_name: c for c in cfg.suite_configs()}
            if args.suite not in by_name:
                raise ValueError(f"checkpoint {args.checkpoint} was audited on suites {sorted(by_name)}, not {args.suite!r}")
            cfg = by_name[args.suite]
        result = export_training_data(store, args.checkpoint, cfg, args.out, tuple(args.format or ("parquet", "jsonl")))
    except ValueError as exc:
        print(f"cannot export: {exc}", file=sys.stderr)
        return 2
    for suite, summary in (result.summary.get("suites") or {cfg.suite_name: result.summary}).items():
        print(f"{args.checkpoint} / {suite}: {summary['problems']} problems, {summary['failed']} failed -> "
              + ", ".join(summary["paths"].values()))
    return 0


def summary_table(store: AuditStore) -> pd.DataFrame:
    """Per checkpoint: base pass rate, failed problems, regime shares and routed vs retry rescue, from SQL."""
    from fixability_dag.pipeline.audit import topography

    table = topography(store)
    if table.empty:
        return table
    columns = ["checkpoint", "recipe", "step", "pass_rate", "failed", *[f"share_{r}" for r in REGIMES]]
    columns += [c for c in ("rescue_routed", "rescue_uniform_retry", "rescue_hindsight_oracle") if c in table]
    return table[columns]


def cmd_summary(args: argparse.Namespace) -> int:
    store = AuditStore(args.db)
    store.migrate()
    table = summary_table(store)
    if table.empty:
        print(f"no audited checkpoint in {redact(store.url)}")
        return 1
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nresults database: {_describe_db(store.url)}")
    return 0


def _describe_db(url: str) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return str(Path(parsed.database).resolve())
    return redact(url)


def _checkpoints_at(path: Path) -> tuple[Path, list, dict[str, str]]:
    """``path`` as a checkpoint root (every layout the sensor finds) or one checkpoint directory found under its
    parent: the root, its complete checkpoints in training order and why the others were passed over."""
    from fixability_dag.inputs.checkpoints import CheckpointError, discover, inspect_checkpoint, scan
    from fixability_dag.orchestration.sensors import in_training_order

    path = path.expanduser().resolve()
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory")
    if (path / "config.json").exists():  # one checkpoint
        found, refused = discover(path.parent)
        keys = [key for key, where in found.items() if where.resolve() == path]
        if not keys:
            raise CheckpointError(refused.get(path.name) or f"{path} is not a checkpoint in a layout the sensor finds "
                                  "under its parent; pass the directory that holds it")
        return path.parent, [inspect_checkpoint(path, key=keys[0])], {}
    complete, skipped = scan(path)
    return path, in_training_order(complete), skipped


def progress_bar(key: str, state, now: float, width: int) -> str:
    """The one line a terminal shows for a checkpoint's run: its steps done, the step running and, in a generating
    phase, that phase's requests as a bar with rate and time left (from the last progress line: at most one per
    30 s, so the clock in the line is the run's elapsed time, which moves on its own)."""
    elapsed = now - state.started
    clock = f"{int(elapsed // 60)}m{int(elapsed % 60):02d}s"
    head = f"[{key}] step {min(state.steps_done + 1, state.steps_total) if state.steps_total else '?'}" \
           f"/{state.steps_total or '?'} {state.step or 'starting'}"
    update = state.update
    if update is None:
        fraction, counts = (state.steps_done / state.steps_total if state.steps_total else 0.0), "steps"
        tail = f" {clock}"
    else:
        fraction, counts = update.fraction, f"{update.phase} {update.done}/{update.total}"
        rate = f" {update.tokens_per_s:.0f} tok/s" if update.tokens_per_s else ""
        left = " done" if update.final else (f" ~{update.left:.0f} s left" if update.left is not None else "")
        tail = f" {fraction:4.0%}{rate}{left} {clock}"
    room = width - 1 - len(head) - len(counts) - len(tail) - 4
    bar_width = max(min(room, 30), 0)
    filled = round(fraction * bar_width)
    bar = f" [{'#' * filled}{'.' * (bar_width - filled)}]" if bar_width >= 5 else ""
    return f"{head} {counts}{bar}{tail}"[:max(width - 1, 0)]


class TerminalProgress:
    """A checkpoint's progress bar on the terminal's last line, redrawn in place; the run's other lines print above
    it. Only for a terminal: elsewhere (a log file, a pipe) the progress lines print as they come."""

    def __init__(self, key: str, stream=None):
        self.key, self.stream, self.line = key, stream or sys.stdout, ""

    def _draw(self) -> None:
        self.stream.write(f"\r{self.line}\x1b[K")
        self.stream.flush()

    def emit(self, text: str) -> None:
        self.stream.write("\r\x1b[K")
        print(f"[{self.key}] {text}", file=self.stream)
        self._draw()

    def show(self, state) -> None:
        self.line = progress_bar(self.key, state, time.monotonic(), shutil.get_terminal_size((100, 24)).columns)
        self._draw()

    def close(self) -> None:
        self.stream.write("\r\x1b[K")
        self.stream.flush()


def audit_through_instance(root: Path, checkpoints: list, settings, force: bool = False) -> int:
    """Audit each checkpoint in its own run of the ``audit_checkpoint`` job, launched through the Dagster instance
    with the code location's origin (:mod:`fixability_dag.orchestration.launch`), so the runs are on the UI's
    timeline and re-execute from there, then the cross-checkpoint reports; progress is read from each run's event
    log (a progress bar per checkpoint on a terminal, the progress lines elsewhere). Checkpoints already audited with this code and these settings are skipped unless ``force``."""
    from dagster import DagsterInstance, DagsterRunStatus

    from assets.partitions import checkpoint_partitions
    from fixability_dag.orchestration.launch import LaunchError, code_location, follow, launch
    from fixability_dag.pipeline.config import CODE_VERSION
    from fixability_dag.pipeline.staleness import checkpoints_to_audit

    if not os.environ.get("DAGSTER_HOME"):
        print("set DAGSTER_HOME to the Dagster instance the runs go to (make demo and make ui use .dagster_home)",
              file=sys.stderr)
        return 2
    quiet_engine()  # the engine's INFO lines would bury the progress (FIXABILITY_LOG_LEVEL=INFO brings them back)
    config_hash = settings.config().config_hash()
    store = AuditStore(default_url())
    store.migrate()
    keys = [c.checkpoint_id for c in checkpoints]
    stale = checkpoints_to_audit(store, keys, config_hash, fingerprints={c.checkpoint_id: c.fingerprint for c in checkpoints})
    todo = keys if force else [k for k in keys if k in stale]
    print(f"{len(keys)} checkpoints under {root}, {len(todo)} to audit (code {CODE_VERSION}, config {config_hash}, "
          f"settings {settings.settings_file or 'demo defaults'}); results database: {_describe_db(store.url)}",
          flush=True)
    # the run worker's console logger would print every Dagster event: the lines worth reading come from the log
    run_config = {**settings.run_config(), "loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    run_config["resources"]["checkpoints"] = {"config": {"root": str(root), "settle_seconds": 0}}
    failures = []
    with DagsterInstance.get() as instance:
        known = set(instance.get_dynamic_partitions(checkpoint_partitions.name))
        instance.add_dynamic_partitions(checkpoint_partitions.name, [k for k in keys if k not in known])
        try:
            with code_location(instance) as workspace:
                for key in todo:
                    started = time.monotonic()
                    run_id, how = launch(instance, workspace, "audit_checkpoint", run_config, partition_key=key,
                                         tags={"fixability/trigger": "cli"})
                    print(f"[{key}] run {run_id} {how}", flush=True)
                    if sys.stdout.isatty():
                        bar = TerminalProgress(key)
                        try:
                            status = follow(instance, run_id, bar.emit, show=bar.show)
                        finally:
                            bar.close()
                    else:
                        status = follow(instance, run_id, lambda line, key=key: print(f"[{key}] {line}", flush=True))
                    if status != DagsterRunStatus.SUCCESS:
                        failures.append(key)
                        print(f"[{key}] audit {status.value.lower()}; see the run {run_id} in the Dagster UI",
                              file=sys.stderr)
                    else:
                        print(f"[{key}] audited in {time.monotonic() - started:.0f} s", flush=True)
                report_id, _ = launch(instance, workspace, "failure_topography_report",
                                      {"loggers": run_config["loggers"]}, tags={"fixability/trigger": "cli"})
                if follow(instance, report_id, lambda line: None) != DagsterRunStatus.SUCCESS:
                    failures.append("failure_topography_report")
                    print(f"the cross-checkpoint reports failed; see the run {report_id} in the Dagster UI",
                          file=sys.stderr)
        except LaunchError as exc:
            print(f"cannot launch: {exc}", file=sys.stderr)
            return 2
    print()
    cmd_summary(argparse.Namespace(db=store.url))
    return 1 if failures else 0


def _settings(config: str | None):
    """The settings of ``config`` (else ``$FIXABILITY_SETTINGS``, else the demo defaults), checked, or None after
    saying why. ``--config`` also goes into the environment, so the code server's defaults are the same file."""
    from fixability_dag.pipeline.settings import SETTINGS_ENV, SettingsError

    if config:
        os.environ[SETTINGS_ENV] = str(Path(config).expanduser().resolve())
    try:
        from resources import AuditSettings  # reads $FIXABILITY_SETTINGS when first imported

        return AuditSettings.from_env()
    except SettingsError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        return None


def cmd_audit(args: argparse.Namespace) -> int:
    """Exit 0 when every audit succeeded, 1 when one failed, 2 when refused before any run (settings, path)."""
    from fixability_dag.inputs.checkpoints import CheckpointError

    settings = _settings(args.config)
    if settings is None:
        return 2
    if args.path is None:
        from resources import CheckpointDirectory

        args.path = CheckpointDirectory().root
    try:
        root, complete, skipped = _checkpoints_at(Path(args.path))
    except CheckpointError as exc:
        print(f"cannot audit: {exc}", file=sys.stderr)
        return 2
    for name, why in skipped.items():
        print(f"skipping {name}: {why}")
    if not complete:
        print(f"no complete checkpoint under {root}", file=sys.stderr)
        return 1
    return audit_through_instance(root, complete, settings, args.force)


REPO = Path(__file__).resolve().parents[1]

DEMO_SET = REPO / "demo" / "set"
"""The demo set: links to two model-organism checkpoints of one run, its SFT save and the RFT save on top of it,
whose failure regimes were planted in training (docs/results.md's gate table), so the demo shows what an audit is
for. The arithmetic checkpoints under demo/checkpoints, whose failures are mostly structural, stay the pipeline's
test fixtures and the code's defaults."""

DEMO_SETTINGS = REPO / "demo" / "organism" / "demo.yaml"
"""The demo's settings: the organism audit in the nightly production mode (adaptive diagnosis, a label subsample)."""


def demo_target(checkpoints: str | None, config: str | None) -> tuple[str, str | None]:
    """What ``fixability demo`` audits, and with which settings file: the options, else
    ``$FIXABILITY_CHECKPOINT_DIR`` / ``$FIXABILITY_SETTINGS``, else the demo set and its settings (None: the
    environment's settings file, which :func:`_settings` reads)."""
    from fixability_dag.pipeline.settings import SETTINGS_ENV
    from resources.checkpoints import CHECKPOINT_DIR_ENV

    path = checkpoints or os.environ.get(CHECKPOINT_DIR_ENV) or str(DEMO_SET)
    return path, config or (None if os.environ.get(SETTINGS_ENV) else str(DEMO_SETTINGS))


def cmd_demo(args: argparse.Namespace) -> int:
    """``fixability audit`` of the demo set with the demo's settings (:func:`demo_target`)."""
    path, config = demo_target(args.checkpoints, args.config)
    return cmd_audit(argparse.Namespace(path=path, config=config, force=args.force))


def cmd_figures_serve(args: argparse.Namespace) -> int:
    """Serve the figure directory of ``--db`` on 127.0.0.1 until interrupted; exit 2 when the port is taken or
    ``$FIXABILITY_FIGURE_URL`` is bad."""
    from fixability_dag.pipeline.figure_server import FigureServer, FigureServerError, figure_base_url, figure_port
    from fixability_dag.pipeline.plots import figure_dir

    try:
        base = figure_base_url()
        server = FigureServer(figure_dir(args.db), figure_port(base) if args.port is None else args.port,
                              verbose=args.verbose)
    except FigureServerError as exc:
        print(f"cannot serve figures: {exc}", file=sys.stderr)
        return 2
    print(f"serving the PNG files under {server.root} on http://127.0.0.1:{server.server_port}/ "
          f"(the asset pages link {base}/...); Ctrl-C stops it", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fixability", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a problem file and report the first error (file, line, field)")
    p.add_argument("format", choices=[f for f in PROBLEM_FORMATS if f not in BUILTIN_FORMATS])
    p.add_argument("path", type=Path)
    p.add_argument("--question-field", default="question")
    p.add_argument("--answer-field", default="answer")
    p.add_argument("--id-field", default=None)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("grade", help="grade (gold, completion) pairs of a JSONL file with the audit's grader")
    p.add_argument("path", type=Path)
    p.add_argument("--gold-field", default="gold")
    p.add_argument("--completion-field", default="completion")
    p.set_defaults(func=cmd_grade)

    p = sub.add_parser("regrade", help="re-grade a stored checkpoint's rollouts and recompute what depends on them")
    p.add_argument("checkpoint")
    p.add_argument("--db", default=default_url(), help="SQLAlchemy URL (default: $FIXABILITY_DB_URL or .fixability/audit.db)")
    p.set_defaults(func=cmd_regrade)

    p = sub.add_parser("export", help="per suite: problem id, pass rate, failed, regime, routing as Parquet and JSONL")
    p.add_argument("checkpoint")
    p.add_argument("--suite", help="one suite of the checkpoint's audit (default: every suite)")
    p.add_argument("--out", type=Path, default=None,
                   help="directory (default: exports/ beside a SQLite database, else .fixability/exports)")
    p.add_argument("--format", action="append", choices=["parquet", "jsonl"], help="repeatable (default: both)")
    p.add_argument("--db", default=default_url(), help="SQLAlchemy URL (default: $FIXABILITY_DB_URL or .fixability/audit.db)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("audit", help="audit a checkpoint (or every complete one under a directory) through the "
                       "Dagster instance, with a settings file; the runs show in the UI")
    p.add_argument("path", help="a checkpoint directory, or a directory of checkpoints (any layout the sensor finds)")
    p.add_argument("--config", help="settings file (YAML; default: $FIXABILITY_SETTINGS, else the demo defaults)")
    p.add_argument("--force", action="store_true", help="re-audit checkpoints already audited with this code and config")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("demo", help="audit the demo set: two model-organism checkpoints in production mode")
    p.add_argument("--checkpoints", help="checkpoint directory (default: $FIXABILITY_CHECKPOINT_DIR or demo/set)")
    p.add_argument("--config", help="settings file (default: $FIXABILITY_SETTINGS or demo/organism/demo.yaml)")
    p.add_argument("--force", action="store_true", help="re-audit checkpoints already audited with this code and config")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("summary", help="per-checkpoint pass rate and regime shares read back from the database")
    p.add_argument("--db", default=default_url(), help="SQLAlchemy URL (default: $FIXABILITY_DB_URL or .fixability/audit.db)")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("figures", help="the figures written beside the results database")
    figures = p.add_subparsers(dest="figures_command", required=True)
    p = figures.add_parser("serve", help="serve them read-only on 127.0.0.1 so the UI's asset pages show them "
                           "(port of $FIXABILITY_FIGURE_URL, default 3001; make ui starts it)")
    p.add_argument("--db", default=default_url(), help="SQLAlchemy URL (default: $FIXABILITY_DB_URL or .fixability/audit.db)")
    p.add_argument("--port", type=int, help="listen here instead of $FIXABILITY_FIGURE_URL's port (0: any free port)")
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.set_defaults(func=cmd_figures_serve)

    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
