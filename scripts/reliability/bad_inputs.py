"""Feed every kind of bad input to the real components and record what each one did.

    .venv/bin/python scripts/reliability/bad_inputs.py [--db URL] [--workdir DIR] [--engine]

:func:`run_bad_inputs` pre-populates a results database (problems, one checkpoint, its rollouts: the *baseline*),
then tries each bad input against the component that meets it in production: the problem loaders, checkpoint
validation and the checkpoint sensor, grading and storing model output, the store on a database that is down or
read-only, and (``include_engine=True``, about a minute) the real vLLM engine losing its process mid-batch. Each
case is one row: whether the input was *refused* (a clear error before anything was written) or *handled* (stored
safely), the first line of the error or what was stored, and the baseline row count before and after, which must
be equal: a bad input never costs rows already stored.

Nothing here asserts; ``tests/system/test_bad_inputs.py`` does. This is the table the reliability report prints.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fixability_dag.core.answers import LatexChecker  # noqa: E402
from fixability_dag.inputs.checkpoints import CheckpointError, inspect_checkpoint, partition_key  # noqa: E402
from fixability_dag.core.problems import ArithmeticSuiteSpec, arithmetic_suite  # noqa: E402
from fixability_dag.inputs.problem_files import load_problems  # noqa: E402
from fixability_dag.inputs.problem_files import ProblemFileError
from fixability_dag.core.sampling import Completion, Decoding, GenerationRequest, grade_completions  # noqa: E402
from fixability_dag.storage.store import AuditStore, DatabaseUnavailable, redact  # noqa: E402
from scripts.reliability.runs import first_line  # noqa: E402

DEMO_CHECKPOINT = REPO / "demo" / "checkpoints" / "arith-sft-s0300"
BASELINE = "baseline"
BASELINE_SPEC = ArithmeticSuiteSpec(chain_lengths=(1, 2), templates_per_length=2, variants_per_template=2)
EXPECTED_ERRORS = (ProblemFileError, CheckpointError, DatabaseUnavailable)


# -- the pre-populated store -----------------------------------------------------------------------------------
def populate(store: AuditStore) -> None:
    """Baseline rows every case must leave intact: problems, a checkpoint and 3 rollouts per problem."""
    store.migrate()
    problems = arithmetic_suite(BASELINE_SPEC)
    store.upsert_problems(problems)
    store.register_checkpoint(BASELINE, str(DEMO_CHECKPOINT), "f" * 32, "sft", 300)
    rows = []
    for p in problems:
        request = GenerationRequest(p.problem_id, "diagnostic", "retry", p.prompt, 3, 1, Decoding())
        rows += grade_completions(request, p, [Completion(f"{p.question}={p.gold_answer}\n#### {p.gold_answer}", 5, -1.0, "stop")] * 3)
    store.replace("rollouts", BASELINE, rows, phase="diagnostic")


def baseline_rows(store: AuditStore) -> int:
    """Rows of the baseline: its problems, its checkpoint row and its rollouts."""
    return store.count("problems", suite=BASELINE_SPEC.name) + store.count("checkpoints", checkpoint_id=BASELINE) + store.count("rollouts", BASELINE)


class Runner:
    def __init__(self, store: AuditStore):
        self.store, self.rows = store, []

    def case(self, name: str, given: str, attempt: Callable[[], str]) -> dict:
        """Run ``attempt``; an expected error means *refused*, a return value (what was stored) means *handled*.

        Any other exception is recorded as ``crashed``: that is a finding, not a refusal.
        """
        before = baseline_rows(self.store)
        try:
            answer, message = "handled", attempt()
        except EXPECTED_ERRORS as exc:
            answer, message = "refused", f"{type(exc).__name__}: {first_line(str(exc))}"
        except Exception as exc:  # noqa: BLE001 - reported, never hidden
            answer, message = "crashed", f"{type(exc).__name__}: {first_line(str(exc))}"
        row = {"case": name, "input": given, "answer": answer, "message": first_line(message, 400),
               "rows_before": before, "rows_after": baseline_rows(self.store)}
        self.rows.append(row)
        return row


# -- problem files -----------------------------------------------------------------------------------------------
def _jsonl(*rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode("utf-8")) + b"\n" for r in rows)


PROBLEM_FILES: list[tuple[str, str, str, str, bytes]] = [
    # (case, input, format, file name, content)
    ("problems: non-UTF-8 bytes (JSONL)", "latin-1 'café' on line 2", "gsm8k", "latin1.jsonl",
     _jsonl({"question": "q", "answer": "#### 1"}, '{"question": "caf\xe9", "answer": "#### 2"}'.encode("latin-1"))),
    ("problems: non-UTF-8 bytes (CSV)", "0xff byte in row 2", "csv", "bad.csv", b"question,answer\nq1,1\nq\xff,2\n"),
    ("problems: malformed JSON line", "line 2 is '{not json'", "gsm8k", "broken.jsonl", _jsonl({"question": "q", "answer": "#### 1"}, "{not json")),
    ("problems: row missing the gold answer", "gsm8k row without 'answer'", "gsm8k", "nogold.jsonl", _jsonl({"question": "q", "answer": "#### 1"}, {"question": "q2"})),
    ("problems: empty gold answer", "'#### ' with nothing after it", "gsm8k", "emptygold.jsonl", _jsonl({"question": "q", "answer": "steps\n####   "})),
    ("problems: blank gold cell (CSV)", "answer column empty", "csv", "blank.csv", b"question,answer\nq1,1\nq2,  \n"),
    ("problems: JSON NaN as gold", '"answer": NaN', "jsonl", "nan.jsonl", b'{"question": "q", "answer": NaN}\n'),
    ("problems: 'nan' text as gold", "pandas' missing-value spelling", "csv", "nan.csv", b"question,answer\nq1,nan\n"),
    ("problems: 5000-digit gold (JSON number)", "a 5,000-digit integer literal", "jsonl", "huge.jsonl", b'{"question": "q", "answer": ' + b"9" * 5000 + b"}\n"),
    ("problems: 5000-digit gold (GSM8K)", "'#### ' + 5,000 digits", "gsm8k", "huge_gsm.jsonl", _jsonl({"question": "q", "answer": "#### " + "7" * 5000})),
    ("problems: absurd difficulty", "MATH level 'Level 99999999999'", "math", "level.jsonl",
     _jsonl({"problem": "q", "solution": r"so \boxed{1}", "level": "Level 99999999999"})),
    ("problems: duplicate ids", "ids a,b,a,c,b", "gsm8k", "dupes.jsonl",
     _jsonl(*({"id": i, "question": f"q{n}", "answer": "#### 1"} for n, i in enumerate("abacb")))),
    ("problems: duplicate questions, no id column", "same question twice", "csv", "dupq.csv", b"question,answer\nwhat?,1\nelse?,2\nwhat?,1\n"),
    ("problems: NUL in question", "question contains \\x00", "jsonl", "nul.jsonl", _jsonl({"question": "a\u0000b", "answer": "1"})),
    ("problems: 300-character id", "id longer than the key column", "gsm8k", "longid.jsonl", _jsonl({"id": "x" * 300, "question": "q", "answer": "#### 1"})),
    ("problems: CSV field over 128 KiB", "200,000-character question", "csv", "bigfield.csv", b'question,answer\n"' + b"x" * 200_000 + b'",1\n'),
    ("problems: JSON array instead of object", "line 1 is [1, 2]", "gsm8k", "array.jsonl", _jsonl("[1, 2]")),
    ("problems: empty file", "zero rows", "gsm8k", "empty.jsonl", b"\n\n"),
]

PROBLEM_FILES_HANDLED: list[tuple[str, str, str, str, bytes, Callable]] = [
    ("problems: 1e400 as a JSON number gold", "kept as the literal text, never float('inf')", "jsonl", "exp.jsonl",
     b'{"id": "exp-1", "question": "q", "answer": 1e400}\n', lambda ps: f"gold stored as {ps[0].gold_answer!r}"),
    ("problems: 25-digit integer gold", "JSON integer beyond float precision", "jsonl", "big.jsonl",
     b'{"id": "big-1", "question": "q", "answer": 1234567890123456789012345}\n', lambda ps: f"gold stored as {ps[0].gold_answer!r}"),
    ("problems: UTF-8 byte-order mark", "file starts with EF BB BF", "jsonl", "bom.jsonl",
     b'\xef\xbb\xbf{"id": "bom-1", "question": "q", "answer": "3"}\n', lambda ps: f"{len(ps)} problem loaded, id {ps[0].problem_id!r}"),
]


def problem_cases(run: Runner, workdir: Path) -> None:
    folder = workdir / "problem_files"
    folder.mkdir(parents=True, exist_ok=True)
    for name, given, fmt, filename, content in PROBLEM_FILES:
        path = folder / filename
        path.write_bytes(content)
        run.case(name, given, lambda fmt=fmt, path=path: f"stored {run.store.upsert_problems(load_problems(fmt, path))} problems")
    run.case("problems: file does not exist", "path to nothing", lambda: str(load_problems("gsm8k", folder / "missing.jsonl")))
    for name, given, fmt, filename, content, describe in PROBLEM_FILES_HANDLED:
        path = folder / filename
        path.write_bytes(content)

        def attempt(fmt=fmt, path=path, describe=describe):
            problems = load_problems(fmt, path)
            run.store.upsert_problems(problems)
            stored = run.store.problems([p.problem_id for p in problems])
            return describe(stored)

        run.case(name, given, attempt)


# -- checkpoints --------------------------------------------------------------------------------------------------
def rewrite_header(weights: Path, mutate: Callable[[dict], object]) -> None:
    """Change a safetensors header in place (``mutate`` edits it, or returns a replacement), padded to its original
    length so the file size is unchanged."""
    data = weights.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    replacement = mutate(header)
    text = json.dumps(header if replacement is None else replacement, separators=(",", ":")).encode()
    if len(text) > n:
        raise ValueError("mutated header is longer than the original")
    weights.write_bytes(data[:8] + text.ljust(n, b" ") + data[8 + n :])


def tensors(header: dict) -> list[dict]:
    """The header's tensor entries in file order."""
    return sorted((v for k, v in header.items() if k != "__metadata__"), key=lambda v: v["data_offsets"])


CHECKPOINT_DAMAGE: list[tuple[str, str, str, Callable[[Path], None]]] = [
    # (case, input, directory name, damage)
    ("checkpoint: weights missing", "model.safetensors deleted", "no-weights", lambda d: (d / "model.safetensors").unlink()),
    ("checkpoint: zero-size weights", "model.safetensors is 0 bytes", "zero-weights", lambda d: (d / "model.safetensors").write_bytes(b"")),
    ("checkpoint: truncated weights", "half of model.safetensors", "truncated",
     lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[: (d / "model.safetensors").stat().st_size // 2])),
    ("checkpoint: weights with trailing bytes", "64 bytes appended", "padded",
     lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes() + b"\0" * 64)),
    ("checkpoint: corrupt weights header", "a tensor's shape no longer matches its bytes", "bad-header",
     lambda d: rewrite_header(d / "model.safetensors", lambda h: tensors(h)[0].__setitem__("shape", [1]))),
    ("checkpoint: header is not a tensor table", "header replaced by a JSON list", "list-header",
     lambda d: rewrite_header(d / "model.safetensors", lambda h: {"__metadata__": {}, "t": [1, 2]})),
    ("checkpoint: .partial file left", "model.safetensors.partial present", "partial-file", lambda d: (d / "model.safetensors.partial").write_bytes(b"x")),
    ("checkpoint: no tokenizer", "tokenizer.json deleted", "no-tokenizer", lambda d: (d / "tokenizer.json").unlink()),
    ("checkpoint: truncated tokenizer", "tokenizer.json cut in half", "half-tokenizer",
     lambda d: (d / "tokenizer.json").write_bytes((d / "tokenizer.json").read_bytes()[:1000])),
    ("checkpoint: corrupt config.json", "'{ not json'", "bad-config", lambda d: (d / "config.json").write_text("{ not json")),
    ("checkpoint: config.json without model_type", "'{}'", "empty-config", lambda d: (d / "config.json").write_text("{}")),
    ("checkpoint: corrupt metadata file", "fixability_checkpoint.json not JSON", "bad-meta",
     lambda d: (d / "fixability_checkpoint.json").write_bytes(b"\xff\xfe{")),
]

UNSAFE_NAMES: list[tuple[str, str]] = [
    ("a/b", "path separator"), ("..", "parent directory"), ("a b", "space"), ("ck\n", "trailing newline"),
    (".hidden", "leading dot"), ("ck-\u00e9", "non-ASCII letter"), ("ck\x07", "control character"), ("x" * 129, "129 characters"),
    ("ck;drop table", "SQL-ish punctuation"),
]
UNSAFE_DIRECTORIES = ("with space", ".hidden", "ck-\u00e9t\u00e9", "bell\x07", "run.partial")


def _age(path: Path, seconds: float = 7200) -> None:
    old = time.time() - seconds
    for f in [path, *path.iterdir()]:
        os.utime(f, (old, old))


def checkpoint_cases(run: Runner, workdir: Path) -> None:
    root = workdir / "checkpoints"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    shutil.copytree(DEMO_CHECKPOINT, root / "good")
    for name, given, dirname, damage in CHECKPOINT_DAMAGE:
        target = root / dirname
        shutil.copytree(DEMO_CHECKPOINT, target)
        damage(target)
        run.case(name, given, lambda target=target: f"accepted as {inspect_checkpoint(target).checkpoint_id}")
    for name, why in UNSAFE_NAMES:
        run.case(f"checkpoint name: {why}", repr(name)[:40], lambda name=name: f"accepted as key {partition_key(name)!r}")
    for dirname in UNSAFE_DIRECTORIES:
        shutil.copytree(DEMO_CHECKPOINT, root / dirname)
    for child in root.iterdir():
        _age(child)
    run.case("sensor over all of the above", f"{len(list(root.iterdir()))} directories, 1 complete and safe",
             lambda: _sensor_tick(root, workdir))


def _sensor_tick(root: Path, workdir: Path) -> str:
    from dagster import DagsterInstance, SensorResult, build_sensor_context

    from assets.partitions import checkpoint_partitions
    from fixability_dag.orchestration.sensors import checkpoint_sensor
    from resources import AuditSettings, CheckpointDirectory, ResultsDatabase

    instance = DagsterInstance.ephemeral()
    with build_sensor_context(instance=instance, resources={
        "checkpoints": CheckpointDirectory(root=str(root), settle_seconds=60), "settings": AuditSettings(),
        "database": ResultsDatabase(url=f"sqlite:///{workdir / 'sensor.db'}"),
    }) as context:
        result = checkpoint_sensor(context)
    added = [k for req in getattr(result, "dynamic_partitions_requests", []) or [] for k in req.partition_keys]
    runs = [r.partition_key for r in getattr(result, "run_requests", []) or []] if isinstance(result, SensorResult) else []
    skipped = len(list(root.iterdir())) - len(added)
    assert checkpoint_partitions.get_partition_keys(dynamic_partitions_store=instance) == []  # requests only, nothing applied
    return f"partitions added: {added}; audits requested: {runs}; {skipped} directories not registered (each logged with its reason)"


# -- model output ----------------------------------------------------------------------------------------------------
MODEL_OUTPUTS: list[tuple[str, str, str, str, Completion]] = [
    # (case, input, intervention tag, gold, completion)
    ("output: no final answer", "steps, no '####'", "no_answer", "42", Completion("40+2=42 and so on", 9, -3.0, "length")),
    ("output: 200,000 characters", "200k chars, answer at the very end", "huge_text", "42",
     Completion("1+1=2\n" * 33_334 + "#### 42", 60_000, -900.0, "length")),
    ("output: Arabic-Indic digits", "'#### \u0664\u0662'", "arabic_digits", "42", Completion("#### \u0664\u0662", 3, -0.5, "stop")),
    ("output: full-width digits", "'#### \uff14\uff12'", "fullwidth_digits", "42", Completion("#### \uff14\uff12", 3, -0.5, "stop")),
    ("output: superscript exponent", "'#### 4\u00b2' vs gold 16", "superscript", "16", Completion("#### 4\u00b2", 3, -0.5, "stop")),
    ("output: unicode minus", "'#### \u22125' vs gold -5", "unicode_minus", "-5", Completion("#### \u22125", 3, -0.5, "stop")),
    ("output: control characters and NUL", "'\\x00\\x07\\x1b' inside the text and the answer", "control_chars", "42",
     Completion("a\x00b\x07c\x1b[0m\n#### 4\x002", 9, -0.5, "stop")),
    ("output: lone surrogate", "'\\ud800' in the text", "surrogate", "7", Completion("x\ud800y\n#### 7", 5, -0.5, "stop")),
    ("output: 5,000-character answer", "'#### ' + 5,000 digits", "long_answer", "1", Completion("#### " + "9" * 5000, 2000, -10.0, "length")),
    ("output: -inf log-probability", "cumulative_logprob = -inf", "neg_inf_logprob", "3", Completion("#### 3", 2, float("-inf"), "stop")),
    ("output: 40-character finish reason", "finish_reason longer than its column", "long_finish", "3", Completion("#### 3", 2, -1.0, "x" * 40)),
]


def output_cases(run: Runner) -> None:
    store = run.store
    store.register_checkpoint("bad-output", "/nowhere/bad-output", "0" * 32)
    problem = store.problems()[0]
    for name, given, tag, gold, completion in MODEL_OUTPUTS:
        target = type(problem)(problem.problem_id, problem.suite, problem.question, gold)

        def attempt(tag=tag, target=target, completion=completion):
            request = GenerationRequest(target.problem_id, "diagnostic", tag, target.prompt, 1, 1, Decoding())
            rows = grade_completions(request, target, [completion])
            store.replace("rollouts", "bad-output", rows, phase="diagnostic", intervention=tag)
            back = store.read("rollouts", "bad-output", intervention=tag).iloc[0]
            return (f"stored: answer={back['answer'] if back['answer'] is None else repr(str(back['answer'])[:24])} "
                    f"(len {0 if back['answer'] is None else len(back['answer'])}), is_correct={bool(back['is_correct'])}, "
                    f"text len {len(back['text'])}, finish_reason={back['finish_reason']!r}, "
                    f"cumulative_logprob={back['cumulative_logprob']}")

        run.case(name, given, attempt)

    def nested_exponent() -> str:
        checker, start = LatexChecker(timeout=2.0), time.perf_counter()
        try:
            equal = checker.equal("1", "9^{9^{9}}")
        finally:
            checker.close()
        return f"not shown equal ({equal}) after {time.perf_counter() - start:.1f}s: the math-verify worker was killed at its 2s limit"

    run.case("output: nested exponent answer", "'#### 9^{9^{9}}' (sympy would compute 370M digits)", nested_exponent)


# -- the database -------------------------------------------------------------------------------------------------------
def read_only_url(url: str) -> str:
    """The same database opened read-only: SQLite in ``mode=ro``, PostgreSQL with read-only transactions."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"sqlite:///file:{Path(parsed.database).resolve()}?mode=ro&uri=true"
    return parsed.update_query_dict({"options": "-c default_transaction_read_only=on"}).render_as_string(hide_password=False)


def database_cases(run: Runner, db_url: str) -> None:
    rows = run.store.read("rollouts", BASELINE).drop(columns=["id", "checkpoint_id"])
    down = "postgresql+psycopg://auditor:s3cret@127.0.0.1:1/audits"
    read_only = read_only_url(db_url)
    for name, url, operation in [
        ("database down: write", down, lambda s: f"wrote {s.replace('rollouts', BASELINE, rows.head(2), phase='diagnostic')} rows"),
        ("database down: read", down, lambda s: f"read {s.count('rollouts', BASELINE)} rows"),
        ("database read-only: replace", read_only, lambda s: f"wrote {s.replace('rollouts', BASELINE, rows.head(2), phase='diagnostic')} rows"),
        ("database read-only: upsert", read_only, lambda s: f"upserted {s.upsert_problems(arithmetic_suite(ArithmeticSuiteSpec(chain_lengths=(3,), templates_per_length=1, variants_per_template=1)))}"),
        ("database read-only: read", read_only, lambda s: f"reads still work: {s.count('rollouts', BASELINE)} baseline rollouts"),
    ]:
        def attempt(url=url, operation=operation):
            store = AuditStore(url)
            try:
                return operation(store)
            finally:
                store.dispose()

        run.case(name, redact(url), attempt)


# -- the engine dying mid-batch ----------------------------------------------------------------------------------------
def engine_case(run: Runner, checkpoint: Path = DEMO_CHECKPOINT) -> None:
    """Chunk 1 is generated and committed; the engine-core process is killed while chunk 2 runs.

    Refused means: ``EngineDied`` naming the checkpoint and the batch reached the caller (not a hang), and the
    committed chunk-1 rows are all still there.
    """
    import psutil

    from fixability_dag.engines.inprocess import EngineDied, EngineOptions, VLLMEngine
    from fixability_dag.core.interventions import build_requests

    store = run.store
    problems = store.problems()
    store.register_checkpoint("engine-died", str(checkpoint), "e" * 32)
    first = build_requests(problems[:2], "retry", "diagnostic", 2, Decoding(max_tokens=32), seed=3)
    second = build_requests(arithmetic_suite(), "retry", "diagnostic", 16, Decoding(max_tokens=128), seed=4)
    by_id = {p.problem_id: p for p in problems}
    before = baseline_rows(store)
    engine = None
    try:
        engine = VLLMEngine(checkpoint, EngineOptions(cpu_kvcache_space_gib=int(os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"))))
        rows = [row for r, group in zip(first, engine.generate(first)) for row in grade_completions(r, by_id[r.problem_id], group)]
        store.replace("rollouts", "engine-died", rows, phase="diagnostic")
        committed = store.count("rollouts", "engine-died")
        outcome: dict = {}

        def generate() -> None:
            try:
                outcome["result"] = engine.generate(second)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                outcome["error"] = exc

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        time.sleep(2.0)
        cores = [c for c in psutil.Process().children(recursive=True) if "EngineCore" in c.name()]
        if not cores:
            raise RuntimeError("no VLLM::EngineCore child process found to kill")
        killed_at = time.perf_counter()
        cores[0].kill()
        worker.join(60)
        waited = time.perf_counter() - killed_at
        kept = store.count("rollouts", "engine-died")
        if worker.is_alive():
            answer, message = "crashed", f"generate still blocked {waited:.0f}s after the engine process was killed"
        elif "error" not in outcome:
            answer, message = "crashed", f"generate returned {len(outcome['result'])} groups although its engine was killed"
        else:
            exc = outcome["error"]
            answer = "refused" if isinstance(exc, EngineDied) and kept == committed else "crashed"
            message = (f"{type(exc).__name__} {waited:.1f}s after the kill; committed chunk-1 rows kept: {kept}/{committed}; "
                       f"{first_line(str(exc), 300)}")
    except Exception as exc:  # noqa: BLE001 - reported, never hidden
        answer, message = "crashed", f"{type(exc).__name__}: {first_line(str(exc))}"
    finally:
        if engine is not None:
            engine.close()
    run.rows.append({"case": "engine dies mid-batch", "input": f"kill -9 of VLLM::EngineCore during a {len(second)}-request batch",
                     "answer": answer, "message": message, "rows_before": before, "rows_after": baseline_rows(store)})


# -- entry points ------------------------------------------------------------------------------------------------------
def run_bad_inputs(workdir: Path, db_url: str, include_engine: bool = False) -> list[dict]:
    """Every bad-input case against the real components; one result row per case (see the module docstring)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    store = AuditStore(db_url)
    try:
        populate(store)
        run = Runner(store)
        problem_cases(run, workdir)
        checkpoint_cases(run, workdir)
        output_cases(run)
        database_cases(run, db_url)
        if include_engine:
            engine_case(run)
        return run.rows
    finally:
        store.dispose()


def markdown(rows: list[dict]) -> str:
    cells = lambda r: [r["case"], r["input"], r["answer"], r["message"].replace("|", "\\|"), str(r["rows_before"]), str(r["rows_after"])]  # noqa: E731
    lines = ["| case | input | answer | message | rows before | rows after |", "|---|---|---|---|---:|---:|"]
    lines += ["| " + " | ".join(c.replace("\n", " ") for c in cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="results database URL (default: a fresh SQLite file in the work directory)")
    parser.add_argument("--workdir", type=Path, help="where to write the bad files (default: a temporary directory)")
    parser.add_argument("--engine", action="store_true", help="also kill a real vLLM engine mid-batch (~1 min)")
    args = parser.parse_args(argv)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fixability-bad-inputs-"))
    started = time.perf_counter()
    rows = run_bad_inputs(workdir, args.db or f"sqlite:///{workdir / 'audit.db'}", include_engine=args.engine)
    print(markdown(rows))
    counts = {a: sum(r["answer"] == a for r in rows) for a in ("refused", "handled", "crashed")}
    lost = sum(r["rows_after"] < r["rows_before"] for r in rows)
    print(f"\n{len(rows)} cases: {counts['refused']} refused, {counts['handled']} handled, {counts['crashed']} crashed; "
          f"{lost} lost stored rows; {time.perf_counter() - started:.1f}s")
    return 1 if counts["crashed"] or lost else 0


if __name__ == "__main__":
    sys.exit(main())
