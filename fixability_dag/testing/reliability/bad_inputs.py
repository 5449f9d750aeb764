"""Every kind of bad input, fed to the real components: one case table, read by the report and by the tests.

    python -m fixability_dag.testing.reliability.bad_inputs [--db URL] [--workdir DIR] [--engine]

:data:`CASES` lists each bad input once, as a :class:`Case`: its name and a description of the input (the report's
columns), how to feed it to the component that meets it in production (``attempt``: the problem loaders, checkpoint
validation and the checkpoint sensor, grading and storing model output, the store on a database that is down or
read-only) and what that component must answer (:class:`Expected`): *refused* (a clear error before anything was
written, naming the file, line and field, the checkpoint or the database) or *handled* (stored safely), with a
pattern its message must match and exact values (the error's line and field, the stored answer, ...).
:data:`ENGINE_CASE` (the real vLLM engine losing its process mid-batch, about a minute) is run on request.

:func:`run_cases` pre-populates a results database (problems, one checkpoint, its rollouts: the *baseline*), runs
each case and returns one row per case: what it answered, the first line of the error or what was stored, and the
baseline's row count before and after, which must be equal (its content too: a bad input never costs or changes
rows already stored). ``python -m scripts.reliability_report`` prints the rows (docs/reliability.md);
``tests/system/test_bad_inputs.py`` asserts each row against its case's :class:`Expected`. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from sqlalchemy.engine import make_url

from fixability_dag.core.answers import LatexChecker
from fixability_dag.core.problems import ArithmeticSuiteSpec, Problem, arithmetic_suite
from fixability_dag.core.sampling import Completion, Decoding, GenerationRequest, grade_completions
from fixability_dag.engines.inprocess import EngineDied
from fixability_dag.inputs.checkpoints import CheckpointError, inspect_checkpoint, partition_key
from fixability_dag.inputs.problem_files import ColumnMapping, ProblemFileError, load_problems
from fixability_dag.pipeline.tables import markdown_table
from fixability_dag.storage.store import AuditStore, DatabaseUnavailable, redact
from fixability_dag.testing.reliability.runs import REPO, first_line

DEMO_CHECKPOINT = REPO / "demo" / "checkpoints" / "arith-sft-s0300"
BASELINE = "baseline"
BASELINE_SPEC = ArithmeticSuiteSpec(chain_lengths=(1, 2), templates_per_length=2, variants_per_template=2)
BASELINE_ROLLOUTS = 3 * len(arithmetic_suite(BASELINE_SPEC))
EXPECTED_ERRORS = (ProblemFileError, CheckpointError, DatabaseUnavailable, EngineDied)
"""A case that raises one of these was *refused*; any other exception is recorded as ``crashed``: a finding."""
ERROR_FIELDS = ("path", "line", "field", "checkpoint", "batch")
"""Attributes of a refusal kept as its values (ProblemFileError's path/line/field, EngineDied's checkpoint/batch)."""


# -- the case table's types -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Expected:
    """What a case must answer.

    ``pattern`` is searched (``re.search``, DOTALL) in the whole message: the error's text when refused, the
    description of what was stored when handled; ``absent`` must not occur in it (a password). ``values`` are exact:
    each must equal the outcome's value of that name (a compiled pattern is searched in it instead).
    """

    answer: str  # "refused" | "handled"
    pattern: str
    error: type[BaseException] | None = None
    values: Mapping[str, object] = dataclasses.field(default_factory=dict)
    absent: str | None = None


def refused(error: type[BaseException], pattern: str, absent: str | None = None, **values) -> Expected:
    return Expected("refused", pattern, error, values, absent)


def handled(pattern: str, **values) -> Expected:
    return Expected("handled", pattern, None, values)


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input: the report's ``case`` and ``input`` columns, how to feed it, and what it must answer.

    ``attempt(bench)`` returns what was stored (a :class:`Stored` or a string) or raises; ``given`` may be computed
    from the bench (a database URL).
    """

    name: str
    given: str | Callable[[Bench], str]
    attempt: Callable[[Bench], object]
    expected: Expected


@dataclasses.dataclass(frozen=True)
class Stored:
    """What a handled case stored: a one-line description for the report, and the values the tests check."""

    description: str
    values: Mapping[str, object] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        return self.description


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


def baseline_problems(store: AuditStore) -> list[Problem]:
    return [p for p in store.problems() if p.suite == BASELINE_SPEC.name]


def baseline(store: AuditStore) -> tuple[int, str]:
    """Rows of the baseline (its problems, its checkpoint row and its rollouts) and a digest of their content."""
    problems = sorted((p.problem_id, p.question, p.gold_answer) for p in baseline_problems(store))
    checkpoint = store.checkpoint(BASELINE)
    rollouts = store.read("rollouts", BASELINE).sort_values(["problem_id", "intervention", "sample_index"])
    content = (problems, checkpoint and (checkpoint["path"], checkpoint["fingerprint"]),
               rollouts[["id", "problem_id", "phase", "intervention", "sample_index", "text", "answer", "is_correct"]].values.tolist())
    return len(problems) + (checkpoint is not None) + len(rollouts), hashlib.sha1(repr(content).encode()).hexdigest()[:16]


def _plain(value):
    """A value read back from the database as plain Python: NULL/NaN as None, numpy scalars unwrapped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "item"):
        value = value.item()
        return None if isinstance(value, float) and math.isnan(value) else value
    return value


class Bench:
    """Where the cases run: the pre-populated store, a work directory for the bad files, and the case at hand's
    subject (the file or directory it made: a refusal must name it), values and note."""

    def __init__(self, store: AuditStore, workdir: Path, db_url: str):
        self.store, self.workdir, self.db_url = store, Path(workdir), db_url
        self.subject: Path | None = None
        self.values: dict = {}
        self.note = ""

    def problem_file(self, filename: str, content: bytes | None) -> Path:
        """``problem_files/<filename>`` with ``content`` (None: no such file)."""
        folder = self.workdir / "problem_files"
        folder.mkdir(parents=True, exist_ok=True)
        self.subject = folder / filename
        if content is not None:
            self.subject.write_bytes(content)
        return self.subject

    def checkpoint_copy(self, dirname: str) -> Path:
        """A fresh copy of the demo checkpoint as ``checkpoints/<dirname>`` (only damaged copies live there)."""
        self.subject = copy_checkpoint(self.workdir / "checkpoints" / dirname)
        return self.subject

    def run(self, case: Case) -> dict:
        """Run one case: its report row (case, input, answer, message, rows_before, rows_after), and for the tests
        its whole message (``detail``), the exception (``raised``), ``values``, ``subject`` and baseline digests."""
        self.subject, self.values, self.note = None, {}, ""
        given = case.given(self) if callable(case.given) else case.given
        before, digest_before = baseline(self.store)
        raised = None
        try:
            result = case.attempt(self)
            answer, detail, message = "handled", str(result), str(result)
            values = dict(getattr(result, "values", {}))
        except EXPECTED_ERRORS as exc:
            answer, detail, raised = "refused", str(exc), exc
            message = f"{type(exc).__name__}: {self.note + '; ' if self.note else ''}{first_line(str(exc))}"
            values = {k: getattr(exc, k) for k in ERROR_FIELDS if hasattr(exc, k)}
        except Exception as exc:  # noqa: BLE001 - reported, never hidden
            answer, detail, raised = "crashed", f"{type(exc).__name__}: {exc}", exc
            message = f"{type(exc).__name__}: {first_line(str(exc))}"
            values = {}
        after, digest_after = baseline(self.store)
        return {"case": case.name, "input": given, "answer": answer, "message": first_line(message, 400),
                "rows_before": before, "rows_after": after, "detail": detail, "raised": raised,
                "values": {**values, **self.values}, "subject": self.subject,
                "digest_before": digest_before, "digest_after": digest_after}


def copy_checkpoint(target: Path, source: Path = DEMO_CHECKPOINT) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, target)
    return target


# -- problem files -----------------------------------------------------------------------------------------------
def _jsonl(*rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode("utf-8")) + b"\n" for r in rows)


def _problems(fmt: str, filename: str, content: bytes | None, mapping: ColumnMapping | None = None,
              describe: Callable[[list[Problem]], str] | None = None) -> Callable[[Bench], Stored]:
    """Load ``content`` as a ``fmt`` problem file and store what was loaded, as the problem_set asset does."""

    def attempt(bench: Bench) -> Stored:
        problems = load_problems(fmt, bench.problem_file(filename, content), mapping)
        count = bench.store.upsert_problems(problems)
        stored = bench.store.problems([p.problem_id for p in problems])
        return Stored(describe(stored) if describe else f"stored {count} problems",
                      {"problem_ids": [p.problem_id for p in stored], "gold_answers": [p.gold_answer for p in stored]})

    return attempt


def _bad_file(name: str, given: str, fmt: str, filename: str, content: bytes | None, pattern: str,
              line: int | None = None, field: str | None = None, mapping: ColumnMapping | None = None) -> Case:
    return Case(f"problems: {name}", given, _problems(fmt, filename, content, mapping),
                refused(ProblemFileError, pattern, line=line, field=field))


def _gold_kept(ps: list[Problem]) -> str:
    return f"gold stored as {ps[0].gold_answer!r}"


_OK_ROW = {"question": "q", "answer": "#### 1"}

PROBLEM_CASES: list[Case] = [
    _bad_file("non-UTF-8 bytes (JSONL)", "latin-1 'café' on line 2", "gsm8k", "latin1.jsonl",
              _jsonl(_OK_ROW, '{"question": "caf\xe9", "answer": "#### 2"}'.encode("latin-1")),
              # 55 = len(json.dumps(_OK_ROW)) + 1 (its newline) + len('{"question": "caf')
              r"line 2: not valid UTF-8 \(.*at byte offset 55 of the file", line=2),
    _bad_file("non-UTF-8 bytes (CSV)", "0xff byte in row 2", "csv", "bad.csv", b"question,answer\nq1,1\nq\xff,2\n",
              r"line 3: not valid UTF-8 .*byte offset 22", line=3),
    _bad_file("malformed JSON line", "line 2 is '{not json'", "gsm8k", "broken.jsonl", _jsonl(_OK_ROW, "{not json"),
              r"line 2: not valid JSON", line=2),
    _bad_file("row missing the gold answer", "gsm8k row without 'answer'", "gsm8k", "nogold.jsonl",
              _jsonl(_OK_ROW, {"question": "q2"}), r"line 2, field 'answer': missing", line=2, field="answer"),
    _bad_file("empty gold answer", "'#### ' with nothing after it", "gsm8k", "emptygold.jsonl",
              _jsonl({"question": "q", "answer": "steps\n####   "}), r"final answer after '####' is empty", line=1, field="answer"),
    _bad_file("blank gold cell (CSV)", "answer column empty", "csv", "blank.csv", b"question,answer\nq1,1\nq2,  \n",
              r"line 3, field 'answer': empty", line=3, field="answer"),
    _bad_file("JSON NaN as gold", '"answer": NaN', "jsonl", "nan.jsonl", b'{"question": "q", "answer": NaN}\n',
              r"the JSON constant NaN is not a usable value", line=1, field="answer"),
    _bad_file("'nan' text as gold", "pandas' missing-value spelling", "csv", "nan.csv", b"question,answer\nq1,nan\n",
              r"gold answer 'nan' is not a finite number", line=2, field="answer"),
    # past Python's 4300-digit limit on parsing an int
    _bad_file("5000-digit gold (JSON number)", "a 5,000-digit integer literal", "jsonl", "huge.jsonl",
              b'{"question": "q", "answer": ' + b"9" * 5000 + b"}\n", r"expected a short final answer", line=1, field="answer"),
    _bad_file("5000-digit gold (GSM8K)", "'#### ' + 5,000 digits", "gsm8k", "huge_gsm.jsonl",
              _jsonl({"question": "q", "answer": "#### " + "7" * 5000}), r"expected a short final answer", line=1, field="answer"),
    _bad_file("absurd difficulty", "MATH level 'Level 99999999999'", "math", "level.jsonl",
              _jsonl({"problem": "q", "solution": r"so \boxed{1}", "level": "Level 99999999999"}),
              r"difficulty 99999999999 is outside", line=1, field="level"),
    _bad_file("duplicate ids", "ids a,b,a,c,b,b", "gsm8k", "dupes.jsonl",
              _jsonl(*({"id": i, "question": f"q{n}", "answer": "#### 1"} for n, i in enumerate("abacbb"))),
              r"2 duplicated: 'a' \(lines 1, 3\), 'b' \(lines 2, 5, 6\)", line=3, field="id"),
    _bad_file("duplicate questions, no id column", "same question twice; columns 'prompt', 'gold' mapped", "csv", "dupq.csv",
              b"prompt,gold\nwhat?,1\nelse?,2\nwhat?,1\n", r"same question appears twice", line=4, field="prompt",
              mapping=ColumnMapping(question="prompt", answer="gold")),
    _bad_file("NUL in question", "question contains \\x00", "gsm8k", "nul.jsonl",
              _jsonl({"question": "a\u0000b", "answer": "#### 1"}), r"line 1, field 'question': contains a NUL", line=1, field="question"),
    _bad_file("201-character id", "one character over the id column's 200", "gsm8k", "longid.jsonl",
              _jsonl({"id": "x" * 201, "question": "q", "answer": "#### 1"}),
              r"line 1, field 'id': problem id is 201 characters", line=1, field="id"),
    _bad_file("CSV field over 128 KiB", "200,000-character question", "csv", "bigfield.csv",
              b'question,answer\n"' + b"x" * 200_000 + b'",1\n', r"not valid CSV", line=1),
    _bad_file("JSON array instead of object", "line 1 is [1, 2]", "gsm8k", "array.jsonl", _jsonl("[1, 2]"),
              r"line 1: expected a JSON object, got list", line=1),
    _bad_file("empty file", "zero rows", "gsm8k", "empty.jsonl", b"\n\n", r"contains no problems", line=None),
    _bad_file("file does not exist", "path to nothing", "gsm8k", "missing.jsonl", None, r"file not found", line=None),
    Case("problems: 1e400 as a JSON number gold", "kept as the literal text, never float('inf')",
         _problems("jsonl", "exp.jsonl", b'{"id": "exp-1", "question": "q", "answer": 1e400}\n', describe=_gold_kept),
         handled(r"gold stored as '1e400'", gold_answers=["1e400"])),
    Case("problems: 25-digit integer gold", "JSON integer beyond float precision",
         _problems("jsonl", "big.jsonl", b'{"id": "big-1", "question": "q", "answer": 1234567890123456789012345}\n', describe=_gold_kept),
         handled(r"gold stored as '1234567890123456789012345'", gold_answers=["1234567890123456789012345"])),
    Case("problems: UTF-8 byte-order mark", "file starts with EF BB BF",
         _problems("gsm8k", "bom.jsonl", b'\xef\xbb\xbf{"id": "bom-1", "question": "q", "answer": "#### 3"}\n',
                   describe=lambda ps: f"{len(ps)} problem loaded, id {ps[0].problem_id!r}, gold {ps[0].gold_answer!r}"),
         handled(r"1 problem loaded, id 'bom-1', gold '3'", problem_ids=["bom-1"], gold_answers=["3"])),
]


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


def _cut(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as fh:
        fh.write(data)


CHECKPOINT_DAMAGE: list[tuple[str, str, str, Callable[[Path], object], str]] = [
    # (case, input, directory name, damage, what the refusal says)
    ("weights missing", "model.safetensors deleted", "no-weights", lambda d: (d / "model.safetensors").unlink(), r"no weights"),
    ("zero-size weights", "model.safetensors is 0 bytes", "zero-weights", lambda d: (d / "model.safetensors").write_bytes(b""),
     r"shorter than a safetensors header"),
    ("truncated weights", "half of model.safetensors", "truncated",
     lambda d: _cut(d / "model.safetensors", (d / "model.safetensors").stat().st_size // 2), r"model\.safetensors is truncated"),
    ("weights with trailing bytes", "64 bytes appended", "padded", lambda d: _append(d / "model.safetensors", b"\0" * 64),
     r"64 bytes after its last tensor"),
    ("corrupt weights header", "a tensor's shape no longer matches its bytes", "bad-header",
     lambda d: rewrite_header(d / "model.safetensors", lambda h: tensors(h)[0].update(shape=[1])), r"needs 2 bytes"),
    ("header is not a tensor table", "a header entry replaced by a JSON list", "list-header",
     lambda d: rewrite_header(d / "model.safetensors", lambda h: {"__metadata__": {}, "t": [1, 2]}), r"entry 't' is not an object"),
    (".partial file left", "model.safetensors.partial present", "partial-file",
     lambda d: (d / "model.safetensors.partial").write_bytes(b"x"), r"temporary files present"),
    ("no tokenizer", "tokenizer.json deleted", "no-tokenizer", lambda d: (d / "tokenizer.json").unlink(), r"no tokenizer"),
    ("truncated tokenizer", "tokenizer.json cut after 1,000 bytes", "half-tokenizer", lambda d: _cut(d / "tokenizer.json", 1000),
     r"tokenizer\.json is not valid JSON"),
    ("corrupt config.json", "'{ not json'", "bad-config", lambda d: (d / "config.json").write_text("{ not json"),
     r"config\.json is not valid JSON"),
    ("config.json without model_type", "'{\"hidden_size\": 8}'", "empty-config",
     lambda d: (d / "config.json").write_text('{"hidden_size": 8}'), r"config\.json has no model_type"),
    ("corrupt metadata file", "fixability_checkpoint.json not UTF-8", "bad-meta",
     lambda d: (d / "fixability_checkpoint.json").write_bytes(b"\xff\xfe{"), r"fixability_checkpoint\.json is not valid UTF-8"),
]

UNSAFE_NAMES: list[tuple[str, str]] = [
    ("a/b", "path separator"), ("..", "parent directory"), ("a b", "space"), ("ck\n", "trailing newline"),
    (".hidden", "leading dot"), ("ck-\u00e9", "non-ASCII letter"), ("ck\x07", "control character"), ("x" * 129, "129 characters"),
    ("ck;drop table", "SQL-ish punctuation"),
]
UNSAFE_DIRECTORIES = ("with space", ".hidden", "ck-\u00e9t\u00e9", "bell\x07", "run.partial")


def _damaged(dirname: str, damage: Callable[[Path], object]) -> Callable[[Bench], str]:
    def attempt(bench: Bench) -> str:
        target = bench.checkpoint_copy(dirname)
        damage(target)
        return f"accepted as {inspect_checkpoint(target).checkpoint_id}"

    return attempt


def _age(path: Path, seconds: float = 7200) -> None:
    old = time.time() - seconds
    for f in [path, *path.iterdir()]:
        os.utime(f, (old, old))


def _sensor_tick(bench: Bench) -> Stored:
    """One tick of the checkpoint sensor over a good checkpoint, every damaged one and every unsafe directory name."""
    from dagster import DagsterInstance, SensorResult, build_sensor_context

    from assets.partitions import checkpoint_partitions
    from fixability_dag.orchestration.sensors import checkpoint_sensor
    from resources import AuditSettings, CheckpointDirectory, ResultsDatabase

    root = bench.workdir / "sensor" / "checkpoints"
    shutil.rmtree(root, ignore_errors=True)
    copy_checkpoint(root / "good")
    for _, _, dirname, damage, _ in CHECKPOINT_DAMAGE:
        damage(copy_checkpoint(root / dirname))
    for dirname in UNSAFE_DIRECTORIES:
        copy_checkpoint(root / dirname)
    for child in root.iterdir():
        _age(child)
    instance = DagsterInstance.ephemeral()
    with build_sensor_context(instance=instance, resources={
        "checkpoints": CheckpointDirectory(root=str(root), settle_seconds=60), "settings": AuditSettings(),
        "database": ResultsDatabase(url=f"sqlite:///{root.parent / 'sensor.db'}"),
    }) as context:
        result = checkpoint_sensor(context)
    added = [k for req in getattr(result, "dynamic_partitions_requests", []) or [] for k in req.partition_keys]
    runs = [r.partition_key for r in getattr(result, "run_requests", []) or []] if isinstance(result, SensorResult) else []
    skipped = len(list(root.iterdir())) - len(added)
    applied = checkpoint_partitions.get_partition_keys(dynamic_partitions_store=instance)  # requests only: none
    return Stored(f"partitions added: {added}; audits requested: {runs}; {skipped} directories not registered "
                  "(each logged with its reason)", {"added": added, "requested": runs, "applied": list(applied)})


CHECKPOINT_CASES: list[Case] = [
    *(Case(f"checkpoint: {name}", given, _damaged(dirname, damage), refused(CheckpointError, reason))
      for name, given, dirname, damage, reason in CHECKPOINT_DAMAGE),
    *(Case(f"checkpoint name: {why}", repr(name)[:40], lambda bench, name=name: f"accepted as key {partition_key(name)!r}",
           refused(CheckpointError, r"is not a safe partition key")) for name, why in UNSAFE_NAMES),
    Case("sensor over all of the above", f"{len(CHECKPOINT_DAMAGE) + len(UNSAFE_DIRECTORIES) + 1} directories, 1 complete and safe",
         _sensor_tick, handled(r"partitions added: \['good'\]; audits requested: \['good'\]", added=["good"], requested=["good"], applied=[])),
]


# -- model output ----------------------------------------------------------------------------------------------------
OUTPUT_CHECKPOINT = "bad-output"


def _output(tag: str, gold: str, completion: Completion) -> Callable[[Bench], Stored]:
    """Grade ``completion`` against ``gold``, store it as one rollout and read it back, as the rollout assets do."""

    def attempt(bench: Bench) -> Stored:
        store = bench.store
        store.register_checkpoint(OUTPUT_CHECKPOINT, f"/nowhere/{OUTPUT_CHECKPOINT}", "0" * 32)
        problem = baseline_problems(store)[0]
        target = type(problem)(problem.problem_id, problem.suite, problem.question, gold)
        request = GenerationRequest(target.problem_id, "diagnostic", tag, target.prompt, 1, 1, Decoding())
        store.replace("rollouts", OUTPUT_CHECKPOINT, grade_completions(request, target, [completion]), phase="diagnostic",
                      intervention=tag)
        back = store.read("rollouts", OUTPUT_CHECKPOINT, intervention=tag).iloc[0]
        values = {k: _plain(back[k]) for k in ("answer", "is_correct", "text", "num_tokens", "finish_reason",
                                               "cumulative_logprob", "mean_logprob")}
        answer = values["answer"]
        values.update(answer_length=0 if answer is None else len(answer), input_chars=len(completion.text))
        return Stored(f"stored: answer={answer if answer is None else repr(str(answer)[:24])} "
                      f"(len {values['answer_length']}), is_correct={bool(values['is_correct'])}, "
                      f"text len {len(values['text'])}, finish_reason={values['finish_reason']!r}, "
                      f"cumulative_logprob={values['cumulative_logprob']}", values)

    return attempt


def _nested_exponent(bench: Bench) -> Stored:
    checker, start = LatexChecker(timeout=2.0), time.perf_counter()
    try:
        equal = checker.equal("1", "9^{9^{9}}")
        seconds, timeouts = time.perf_counter() - start, checker.timeouts
        recovered = checker.equal(r"\frac{1}{2}", "0.5")  # a fresh worker takes over
    finally:
        checker.close()
    return Stored(f"not shown equal ({equal}) after {seconds:.1f}s: the math-verify worker was killed at its 2s limit; "
                  f"a fresh one then found \\frac{{1}}{{2}} = 0.5 ({recovered})",
                  {"equal": equal, "timeouts": timeouts, "under_30_seconds": seconds < 30, "recovered": recovered})


OUTPUT_CASES: list[Case] = [
    Case("output: no final answer", "steps, no '####'",
         _output("no_answer", "42", Completion("40+2=42 and so on", 9, -3.0, "length")),
         handled(r"answer=None", answer=None, is_correct=False, finish_reason="length")),
    Case("output: 200,000 characters", "200k chars, answer at the very end",
         _output("huge_text", "42", Completion("1+1=2\n" * 33_334 + "#### 42", 60_000, -900.0, "length")),
         handled(r"answer='42'", answer="42", is_correct=True, num_tokens=60_000, finish_reason="length")),
    Case("output: Arabic-Indic digits", "'#### \u0664\u0662'",
         _output("arabic_digits", "42", Completion("#### \u0664\u0662", 3, -0.5, "stop")), handled(r"is_correct=True", is_correct=True)),
    Case("output: full-width digits", "'#### \uff14\uff12'",
         _output("fullwidth_digits", "42", Completion("#### \uff14\uff12", 3, -0.5, "stop")), handled(r"is_correct=True", is_correct=True)),
    Case("output: superscript exponent", "'#### 4\u00b2' vs gold 16",
         _output("superscript", "16", Completion("#### 4\u00b2", 3, -0.5, "stop")), handled(r"is_correct=True", is_correct=True)),
    Case("output: unicode minus", "'#### \u22125' vs gold -5",
         _output("unicode_minus", "-5", Completion("#### \u22125", 3, -0.5, "stop")), handled(r"is_correct=True", is_correct=True)),
    Case("output: control characters and NUL", "'\\x00\\x07\\x1b', a tab and '\\ud800' in the text and the answer",
         _output("control_chars", "42", Completion("a\x00b\x07c\x1b[0m\td\ud800e\n#### 4\x002", 9, -0.5, "stop")),
         handled(r"is_correct=True", text="abc[0m\td\ufffde\n#### 42", answer="42", is_correct=True)),
    Case("output: lone surrogate", "'\\ud800' in the text",
         _output("surrogate", "7", Completion("x\ud800y\n#### 7", 5, -0.5, "stop")),
         handled(r"is_correct=True", text="x\ufffdy\n#### 7", answer="7")),
    Case("output: 5,000-character answer", "'#### ' + 5,000 digits",
         _output("long_answer", "1", Completion("#### " + "9" * 5000, 2000, -10.0, "length")),
         handled(r"\(len 200\)", answer_length=200, is_correct=False)),
    Case("output: -inf log-probability", "cumulative_logprob = -inf",
         _output("neg_inf_logprob", "3", Completion("#### 3", 2, float("-inf"), "stop")),
         handled(r"cumulative_logprob=None", cumulative_logprob=None, mean_logprob=None)),
    Case("output: 40-character finish reason", "finish_reason longer than its column",
         _output("long_finish", "3", Completion("#### 3", 2, -1.0, "x" * 40)),
         handled(r"finish_reason='x{16}'", finish_reason="x" * 16)),
    Case("output: nested exponent answer", "'#### 9^{9^{9}}' (sympy would compute 370M digits)", _nested_exponent,
         handled(r"not shown equal \(False\)", equal=False, timeouts=1, under_30_seconds=True, recovered=True)),
]


# -- the database -------------------------------------------------------------------------------------------------------
DOWN_URL = "postgresql+psycopg://auditor:s3cret@127.0.0.1:1/audits"
"""Nothing listens on port 1; the password must never appear in a message."""


def read_only_url(url: str) -> str:
    """The same database opened read-only: SQLite in ``mode=ro``, PostgreSQL with read-only transactions."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"sqlite:///file:{Path(parsed.database).resolve()}?mode=ro&uri=true"
    return parsed.update_query_dict({"options": "-c default_transaction_read_only=on"}).render_as_string(hide_password=False)


def _on(url_of: Callable[[Bench], str], operation: Callable[[AuditStore, Bench], str]) -> Callable[[Bench], str]:
    def attempt(bench: Bench) -> str:
        store = AuditStore(url_of(bench))
        try:
            return operation(store, bench)
        finally:
            store.dispose()

    return attempt


def _two_rows(bench: Bench):
    return bench.store.read("rollouts", BASELINE).drop(columns=["id", "checkpoint_id"]).head(2)


def _down(bench: Bench) -> str:
    return DOWN_URL


def _read_only(bench: Bench) -> str:
    return read_only_url(bench.db_url)


_WRITE = lambda s, b: f"wrote {s.replace('rollouts', BASELINE, _two_rows(b), phase='diagnostic')} rows"  # noqa: E731
_UPSERT = lambda s, b: f"upserted {s.upsert_problems(arithmetic_suite(ArithmeticSuiteSpec(chain_lengths=(3,), templates_per_length=1, variants_per_template=1)))}"  # noqa: E731,E501
_DOWN_MESSAGE = r"results database postgresql\+psycopg://auditor:\*\*\*@127\.0\.0\.1:1/audits"

DATABASE_CASES: list[Case] = [
    Case("database down: write", lambda b: redact(_down(b)), _on(_down, _WRITE),
         refused(DatabaseUnavailable, r"cannot replace rows of rollouts .*" + _DOWN_MESSAGE, absent="s3cret")),
    Case("database down: read", lambda b: redact(_down(b)), _on(_down, lambda s, b: f"read {s.count('rollouts', BASELINE)} rows"),
         refused(DatabaseUnavailable, r"cannot count rollouts: " + _DOWN_MESSAGE, absent="s3cret")),
    Case("database read-only: replace", lambda b: redact(_read_only(b)), _on(_read_only, _WRITE),
         refused(DatabaseUnavailable, r"cannot replace rows of rollouts")),
    Case("database read-only: upsert", lambda b: redact(_read_only(b)), _on(_read_only, _UPSERT),
         refused(DatabaseUnavailable, r"cannot upsert")),
    Case("database read-only: read", lambda b: redact(_read_only(b)),
         _on(_read_only, lambda s, b: f"reads still work: {s.count('rollouts', BASELINE)} baseline rollouts"),
         handled(rf"reads still work: {BASELINE_ROLLOUTS} baseline rollouts")),
]

CASES: list[Case] = PROBLEM_CASES + CHECKPOINT_CASES + OUTPUT_CASES + DATABASE_CASES
"""Every bad input but the engine's death, in the report's order."""


# -- the engine dying mid-batch ----------------------------------------------------------------------------------------
def _engine_dies_mid_batch(bench: Bench, checkpoint: Path = DEMO_CHECKPOINT) -> str:
    """Chunk 1 is generated and committed; the engine-core process is killed while chunk 2 runs.

    Refused means: ``EngineDied`` naming the checkpoint and the batch reached the caller (not a hang), the committed
    chunk-1 rows are all still there, and the next batch is refused at once. Anything else raises another error.
    """
    import psutil

    from fixability_dag.core.interventions import build_requests
    from fixability_dag.engines.inprocess import EngineOptions, VLLMEngine

    store = bench.store
    problems = baseline_problems(store)
    store.register_checkpoint("engine-died", str(checkpoint), "e" * 32)
    first = build_requests(problems[:2], "retry", "diagnostic", 2, Decoding(max_tokens=32), seed=3)
    second = build_requests(arithmetic_suite(), "retry", "diagnostic", 16, Decoding(max_tokens=128), seed=4)
    by_id = {p.problem_id: p for p in problems}
    engine = VLLMEngine(checkpoint, EngineOptions(cpu_kvcache_space_gib=int(os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"))))
    try:
        groups = engine.generate(first)
        bench.values["first_batch_groups"] = [len(g) for g in groups]
        rows = [row for r, group in zip(first, groups) for row in grade_completions(r, by_id[r.problem_id], group)]
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
        bench.values["engine_core_processes"] = len(cores)
        if not cores:
            raise RuntimeError("no VLLM::EngineCore child process found to kill")
        killed_at = time.perf_counter()
        cores[0].kill()
        worker.join(60)
        waited = time.perf_counter() - killed_at
        kept = store.count("rollouts", "engine-died")
        if worker.is_alive():
            raise RuntimeError(f"generate still blocked {waited:.0f}s after the engine process was killed")
        if "error" not in outcome:
            raise RuntimeError(f"generate returned {len(outcome['result'])} groups although its engine was killed")
        error = outcome["error"]
        if not isinstance(error, EngineDied):
            raise RuntimeError(f"not EngineDied: {type(error).__name__}: {error}") from error
        if kept != committed:
            raise RuntimeError(f"committed chunk-1 rows lost: {kept} of {committed} left")
        try:
            bench.values["next_batch"] = f"generated {len(engine.generate(second[:1]))} groups"
        except EngineDied as again:
            bench.values["next_batch"] = str(again)
        bench.note = f"{waited:.1f}s after the kill; committed chunk-1 rows kept: {kept}/{committed}"
        raise error
    finally:
        engine.close()


ENGINE_CASE = Case(
    "engine dies mid-batch", "kill -9 of VLLM::EngineCore during a 96-request batch", _engine_dies_mid_batch,
    refused(EngineDied, rf"vLLM engine for checkpoint {DEMO_CHECKPOINT.name} died while generating a batch of 96 requests",
            checkpoint=DEMO_CHECKPOINT.name, batch=re.compile(r"^a batch of 96 requests .*arith-L1-T0-V0"),
            first_batch_groups=[2, 2], engine_core_processes=1, next_batch=re.compile("already exited before this batch")),
)
"""The real vLLM engine losing its process mid-batch (~1 min): run only on request (``--engine``)."""


# -- entry points ------------------------------------------------------------------------------------------------------
def run_cases(cases: Sequence[Case], workdir: Path, db_url: str) -> list[dict]:
    """Run ``cases`` in order against a freshly populated results database at ``db_url``; one row per case."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    store = AuditStore(db_url)
    try:
        populate(store)
        bench = Bench(store, workdir, db_url)
        return [bench.run(case) for case in cases]
    finally:
        store.dispose()


def run_bad_inputs(workdir: Path, db_url: str, include_engine: bool = False) -> list[dict]:
    """Every case of :data:`CASES` (and :data:`ENGINE_CASE` with ``include_engine``, ~1 min); one row per case."""
    return run_cases(CASES + ([ENGINE_CASE] if include_engine else []), workdir, db_url)


REPORT_COLUMNS = ["case", "input", "answer", "message", "rows_before", "rows_after"]


def markdown(rows: list[dict]) -> str:
    return markdown_table([[r[c] for c in REPORT_COLUMNS] for r in rows],
                          ["case", "input", "answer", "message", "rows before", "rows after"])


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
    changed = sum(r["rows_after"] != r["rows_before"] or r["digest_after"] != r["digest_before"] for r in rows)
    print(f"\n{len(rows)} cases: {counts['refused']} refused, {counts['handled']} handled, {counts['crashed']} crashed; "
          f"{changed} changed stored rows; {time.perf_counter() - started:.1f}s")
    return 1 if counts["crashed"] or changed else 0


if __name__ == "__main__":
    sys.exit(main())
