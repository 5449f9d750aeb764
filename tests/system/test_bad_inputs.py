"""Bad input of every kind: a clear error naming file/line/field, checkpoint or database before anything is written,
or (model output) stored safely. Cases already covered by test_problems, test_answers, test_checkpoints,
test_sensors and test_store are not repeated here.

Most bad inputs are the reliability report's catalogue, ``fixability_dag.testing.reliability.bad_inputs.CASES``: each
case there says what it must answer, and ``test_each_bad_input_is_refused_or_stored_safely`` checks that, on SQLite
and PostgreSQL, for the same run the report prints. The other tests feed inputs the report does not list."""

import json
import os
import re
import shutil
import stat

import pandas as pd
import pytest

from fixability_dag.core.answers import answers_match, canonical_answer, grade
from fixability_dag.core.problems import ArithmeticSuiteSpec, arithmetic_suite
from fixability_dag.core.sampling import MAX_TEXT_CHARS, Completion, Decoding, GenerationRequest, grade_completions
from fixability_dag.inputs.checkpoints import (
    FULL_PARSE_BYTES,
    CheckpointError,
    incompleteness,
    inspect_checkpoint,
    partition_key,
    scan,
)
from fixability_dag.inputs.problem_files import (
    ColumnMapping,
    ProblemFileError,
    load_generic,
    load_gsm8k_jsonl,
    load_math_jsonl,
    load_problems,
)
from fixability_dag.pipeline.audit import snapshot_problems
from fixability_dag.pipeline.config import AuditConfig
from fixability_dag.storage.store import AuditStore, DatabaseUnavailable
from fixability_dag.testing.reliability.bad_inputs import (
    CASES,
    ENGINE_CASE,
    rewrite_header,
    run_bad_inputs,
    run_cases,
    tensors,
)
from fixability_dag.testing.scratch import reset_schema

from tests.support import REPO, age, demo_checkpoint, evaluate


def write_lines(path, *rows):
    path.write_bytes(b"".join((r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode()) + b"\n" for r in rows))
    return path


# -- the catalogue: every case of the report's table, on SQLite and PostgreSQL ----------------------------------------
@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def catalogue(request, tmp_path_factory) -> dict[str, dict]:
    """One run of every case, as the reliability report runs them against one pre-populated database: its rows by case."""
    work = tmp_path_factory.mktemp(f"bad-inputs-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{work / 'audit.db'}"
    else:
        url = request.getfixturevalue("pg_server_url")
        reset_schema(url)
    return {row["case"]: row for row in run_bad_inputs(work / "work", url)}


def check(case, row):
    """``row`` (what the case did) is what ``case.expected`` says: the answer, the error class, the message, its values;
    a refusal names the file or directory it refused; the baseline rows are all there, unchanged."""
    expected = case.expected
    assert row["answer"] == expected.answer, row["detail"]
    if expected.error is not None:
        assert isinstance(row["raised"], expected.error), row["detail"]
    assert re.search(expected.pattern, row["detail"], re.S), row["detail"]
    if expected.absent is not None:
        assert not re.search(expected.absent, row["detail"]), row["detail"]
    if expected.answer == "refused" and row["subject"] is not None:
        assert str(row["subject"]) in row["detail"], "a refusal names the file or directory"
    for name, value in expected.values.items():
        assert name in row["values"], (name, row["values"])
        if isinstance(value, re.Pattern):
            assert value.search(str(row["values"][name])), (name, row["values"][name])
        else:
            assert row["values"][name] == value, (name, row["values"][name])
    assert row["rows_before"] == row["rows_after"] > 0
    assert row["digest_before"] == row["digest_after"], "a bad input changed rows already stored"


def test_the_report_runs_every_case_of_the_table(catalogue):
    assert len(CASES) >= 55 and len({c.name for c in CASES}) == len(CASES)
    assert list(catalogue) == [c.name for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_bad_input_is_refused_or_stored_safely(catalogue, case):
    check(case, catalogue[case.name])


DAMAGED = [c for c in CASES if c.name.startswith("checkpoint: ")]


@pytest.mark.parametrize("case", DAMAGED, ids=[c.name for c in DAMAGED])
def test_a_scan_passes_over_each_damaged_checkpoint_with_the_reason(catalogue, case):
    damaged = catalogue[case.name]["subject"]
    complete, skipped = scan(damaged.parent)  # only damaged copies there; the scan never raises for one of them
    assert complete == [] and re.search(case.expected.pattern, skipped[damaged.name])


def test_enormous_output_is_capped_with_a_marker_and_still_graded(catalogue):
    stored = catalogue["output: 200,000 characters"]["values"]  # graded on the whole text: its case checks answer 42
    text = stored["text"]
    assert len(text) < MAX_TEXT_CHARS + 200 and f"{stored['input_chars'] - MAX_TEXT_CHARS} characters removed" in text
    assert text.startswith("1+1=2\n") and text.endswith("#### 42")


# -- problem files ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw", [b"Infinity", b"-Infinity", b'"nan"', b'"-inf"', b'"Infinity"'])
def test_non_finite_gold_is_refused(tmp_path, raw):
    path = write_lines(tmp_path / "n.jsonl", b'{"question": "q", "answer": ' + raw + b"}")
    with pytest.raises(ProblemFileError) as err:
        load_generic(path)
    assert (err.value.line, err.value.field) == (1, "answer")


def test_infinity_in_latex_is_a_legitimate_answer(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", {"problem": "lim?", "solution": r"so \boxed{\infty}"})
    assert load_math_jsonl(path)[0].gold_answer == r"\infty"


def test_json_numbers_keep_their_literal_text(tmp_path):
    """1e400 and a 25-digit integer: the report's cases."""
    path = write_lines(tmp_path / "g.jsonl", b'{"question": "c", "answer": 0.1000}')
    assert [p.gold_answer for p in load_generic(path)] == ["0.1000"]


def test_enormous_gold_answers_are_refused_by_the_math_loader_too(tmp_path):
    """The JSON-number and GSM8K loaders: the report's '5000-digit gold' cases."""
    path = write_lines(tmp_path / "big.jsonl", json.dumps({"problem": "q", "solution": r"\boxed{" + "7" * 300 + "}"}).encode())
    with pytest.raises(ProblemFileError, match="expected a short final answer") as err:
        load_math_jsonl(path)
    assert err.value.line == 1 and err.value.field in ("answer", "solution")


@pytest.mark.parametrize("value, expected", [(b"3", 3), (b"3.0", 3), (b'"7"', 7), (b"1e400", None), (b"2147483648", None),
                                             (b"-1", None), (b"3.5", None), (b"NaN", None), (b"1" + b"0" * 5000, None)])
def test_difficulty_must_be_a_reasonable_integer(tmp_path, value, expected):
    path = write_lines(tmp_path / "d.jsonl", b'{"question": "q", "answer": "1", "level": ' + value + b"}")
    mapping = ColumnMapping(difficulty="level")
    if expected is None:
        with pytest.raises(ProblemFileError) as err:
            load_generic(path, mapping)
        assert (err.value.line, err.value.field) == (1, "level")
    else:
        assert load_generic(path, mapping)[0].difficulty == expected


def test_long_suite_names_are_refused(tmp_path):
    """NUL characters and 201-character ids: the report's cases."""
    long_suite = write_lines(tmp_path / ("s" * 101 + ".jsonl"), {"question": "q", "answer": "#### 1"})
    with pytest.raises(ProblemFileError, match="suite name"):
        load_gsm8k_jsonl(long_suite)


def test_a_csv_row_may_span_lines(tmp_path):
    """A field over the csv module's 128 KiB limit: the report's case."""
    multi = tmp_path / "multi.csv"
    multi.write_text('question,answer\n"line one\nline two \u2028 same row",5\n', encoding="utf-8")
    [p] = load_generic(multi)
    assert p.question == "line one\nline two \u2028 same row" and p.gold_answer == "5"


def test_unreadable_path_is_a_problem_file_error(tmp_path):
    with pytest.raises(ProblemFileError, match="cannot be read"):
        load_problems("gsm8k", tmp_path)  # a directory


def test_a_bad_problem_file_writes_nothing(sqlite_store, tmp_path):
    """snapshot_problems (the problem_set asset) checks the whole file before its upsert."""
    cfg = AuditConfig(problem_format="gsm8k", problem_path=str(tmp_path / "p.jsonl"))
    write_lines(tmp_path / "p.jsonl", {"id": "ok-1", "question": "q", "answer": "#### 1"})
    snapshot_problems(sqlite_store, cfg)
    write_lines(tmp_path / "p.jsonl", {"id": "ok-1", "question": "changed", "answer": "#### 2"}, {"id": "ok-2", "question": "q2"})
    with pytest.raises(ProblemFileError, match="line 2, field 'answer': missing"):
        snapshot_problems(sqlite_store, cfg)
    assert [(p.problem_id, p.question, p.gold_answer) for p in sqlite_store.problems()] == [("ok-1", "q", "1")]


# -- checkpoints ----------------------------------------------------------------------------------------------------
def shift_offsets(entry, begin: int, end: int) -> None:
    entry["data_offsets"] = [entry["data_offsets"][0] + begin, entry["data_offsets"][1] + end]


# Zero-size, truncated or padded weights, a shape that does not match the bytes, a header entry that is not an
# object, a truncated tokenizer, a config without model_type, a temporary file left: the report's cases.
DAMAGE = {
    "overlapping tensors": (lambda d: rewrite_header(d / "model.safetensors", lambda h: shift_offsets(tensors(h)[1], -4, -4)), "overlaps"),
    "gap before the data": (lambda d: rewrite_header(d / "model.safetensors", lambda h: shift_offsets(tensors(h)[0], 2, 2)), "has a gap at byte 0"),
    "header is a list": (lambda d: rewrite_header(d / "model.safetensors", lambda h: [1, 2]), "not a JSON object"),
    "corrupt tokenizer_config": (lambda d: (d / "tokenizer_config.json").write_text("{"), "tokenizer_config.json is not valid JSON"),
    "config is a list": (lambda d: (d / "config.json").write_text("[]"), "config.json is not a JSON object"),
    "config not UTF-8": (lambda d: (d / "config.json").write_bytes(b'{"model_type": "\xff"}'), "config.json is not valid UTF-8"),
    "index weight_map list": (lambda d: (d / "model.safetensors.index.json").write_text('{"weight_map": []}'), "index.json is unreadable"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_checkpoints_are_refused_with_the_reason(checkpoint_copy, case):
    damage, reason = DAMAGE[case]
    damage(checkpoint_copy)
    with pytest.raises(CheckpointError) as err:
        inspect_checkpoint(checkpoint_copy)
    assert reason in str(err.value) and str(checkpoint_copy) in str(err.value)
    complete, skipped = scan(checkpoint_copy.parent)  # the scan never raises for one bad directory
    assert complete == [] and reason in skipped[checkpoint_copy.name]


def test_bad_metadata_file_is_a_checkpoint_error(checkpoint_copy):
    for content in (b"[1]", b"{not json"):  # not UTF-8: the report's case
        (checkpoint_copy / "fixability_checkpoint.json").write_bytes(content)
        with pytest.raises(CheckpointError, match="fixability_checkpoint.json"):
            inspect_checkpoint(checkpoint_copy)


def test_temporary_directory_name_is_not_a_checkpoint(checkpoint_copy):
    partial = checkpoint_copy.with_name(checkpoint_copy.name + ".partial")
    checkpoint_copy.rename(partial)
    assert any("temporary suffix" in r for r in incompleteness(partial))


def test_large_tokenizer_is_checked_without_parsing(checkpoint_copy):
    body = b'{"model": {"vocab": {' + b",".join(b'"t%d": %d' % (i, i) for i in range(400_000)) + b"}}}"
    assert len(body) > FULL_PARSE_BYTES
    (checkpoint_copy / "tokenizer.json").write_bytes(body)
    assert incompleteness(checkpoint_copy) == []
    (checkpoint_copy / "tokenizer.json").write_bytes(body[:-10])
    assert any("truncated or still being written" in r for r in incompleteness(checkpoint_copy))


@pytest.mark.parametrize("name", ["ck-1\n", "ck\u2215x", "\uff41bc", "ck..1"])  # and the report's nine
def test_more_unsafe_names_are_refused(name):
    with pytest.raises(CheckpointError, match="not a safe partition key"):
        partition_key(name)


def test_safe_name_boundaries():
    assert partition_key("a" * 128) == "a" * 128
    assert partition_key("run-7_step.100") == "run-7_step.100"


def test_sensor_registers_only_complete_safe_checkpoints_and_says_why(tmp_path):
    from dagster import DagsterInstance, SensorResult, SkipReason

    root = tmp_path / "ckpts"
    root.mkdir()
    for name in ("good", "half", "with space", ".hidden", "caf\u00e9", "run.partial"):
        shutil.copytree(demo_checkpoint(), root / name)
    (root / "half" / "tokenizer.json").write_bytes(b'{"trunc')
    for d in root.iterdir():
        age(d)
    instance = DagsterInstance.ephemeral()
    result = evaluate(instance, root)
    assert isinstance(result, SensorResult)
    assert [k for r in result.dynamic_partitions_requests for k in r.partition_keys] == ["good"]
    assert [r.partition_key for r in result.run_requests] == ["good"]
    shutil.rmtree(root / "good")
    skip = evaluate(instance, root)
    assert isinstance(skip, SkipReason)
    assert "5 not auditable" in skip.skip_message and "tokenizer.json is not valid JSON" in skip.skip_message


# -- model output --------------------------------------------------------------------------------------------------
PROBLEM = arithmetic_suite(ArithmeticSuiteSpec(chain_lengths=(1,), templates_per_length=1, variants_per_template=1))[0]


def graded(text, gold=None, logprob=-1.0, finish="stop", tokens=5):
    problem = PROBLEM if gold is None else type(PROBLEM)(PROBLEM.problem_id, PROBLEM.suite, PROBLEM.question, gold)
    request = GenerationRequest(problem.problem_id, "diagnostic", "retry", problem.prompt, 1, 1, Decoding())
    [row] = grade_completions(request, problem, [Completion(text, tokens, logprob, finish)])
    return row


@pytest.mark.parametrize("logprob", [float("nan"), float("inf")])  # -inf: the report's case
def test_non_finite_logprobs_are_stored_as_unknown(logprob):
    row = graded("#### 3", gold="3", logprob=logprob)
    assert row["cumulative_logprob"] is None and row["mean_logprob"] is None


@pytest.mark.parametrize("text, gold", [  # Arabic-Indic and full-width digits, U+2212, a superscript: the report's cases
    ("#### \u06f4\u06f2", "42"),          # Extended Arabic-Indic (Persian)
    ("#### \u096a\u0968", "42"),          # Devanagari
])
def test_unicode_numbers(text, gold):
    answer, correct = grade(gold, text)
    assert correct, (text, answer)


def test_superscript_is_not_read_as_a_digit():
    assert canonical_answer("4\u00b2") != "42"
    assert not answers_match("42", "4\u00b2")


def test_long_numbers_are_compared_exactly():
    """Decimal.normalize() rounds to 28 digits: two different 31-digit answers used to grade as equal."""
    a, b = "1234567890123456789012345678901", "1234567890123456789012345678902"
    assert canonical_answer(a) == a and not answers_match(a, b)
    assert canonical_answer("9" * 200) == "9" * 200


# -- the database --------------------------------------------------------------------------------------------------
def test_every_operation_on_a_down_database_names_it_and_the_operation():
    store = AuditStore("postgresql+psycopg://auditor:s3cret@127.0.0.1:1/audits")
    operations = {  # replace and count: the report's 'database down' cases
        "upsert 1 rows into problems": lambda: store.upsert_problems([PROBLEM]),
        "read": lambda: store.read("rollouts", "ck"),
        "record the start of": lambda: store.start_run("r", "ck", "base_rollouts", "v", "h", {}),
    }
    for operation, call in operations.items():
        with pytest.raises(DatabaseUnavailable) as err:
            call()
        message = str(err.value)
        assert operation in message and "127.0.0.1:1" in message and "s3cret" not in message and "***" in message


def populated(url):
    store = AuditStore(url)
    store.migrate()
    store.upsert_problems([PROBLEM])
    store.register_checkpoint("ck", "/x/ck", "f")
    store.replace("rollouts", "ck", pd.DataFrame([graded(f"#### {i}") | {"sample_index": i} for i in range(4)]), phase="diagnostic")
    store.dispose()


def assert_read_only_refused(url, intact_url):
    ro = AuditStore(url)
    try:
        assert ro.count("rollouts", "ck") == 4  # reading still works
        with pytest.raises(DatabaseUnavailable, match="cannot replace rows of rollouts"):
            ro.replace("rollouts", "ck", pd.DataFrame([graded("#### 9") | {"sample_index": 0}]), phase="diagnostic")
        with pytest.raises(DatabaseUnavailable, match="cannot upsert"):
            ro.upsert_problems(arithmetic_suite(ArithmeticSuiteSpec(chain_lengths=(2,), templates_per_length=1, variants_per_template=1)))
    finally:
        ro.dispose()
    rw = AuditStore(intact_url)
    assert rw.count("rollouts", "ck") == 4 and rw.count("problems") == 1
    assert sorted(rw.read("rollouts", "ck")["answer"]) == ["0", "1", "2", "3"]
    rw.dispose()


def test_read_only_sqlite_file_is_refused_and_left_intact(tmp_path):
    db = tmp_path / "audit.db"
    populated(f"sqlite:///{db}")
    copy = tmp_path / "ro" / "audit.db"
    copy.parent.mkdir()
    shutil.copy(db, copy)
    copy.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)  # 0444
    # root ignores file modes: open it read-only explicitly, as a read-only mount would
    url = f"sqlite:///file:{copy}?mode=ro&uri=true" if os.geteuid() == 0 else f"sqlite:///{copy}"
    assert_read_only_refused(url, f"sqlite:///{db}")
    assert not (REPO / "file:").exists() and not (tmp_path / "file:").exists()  # a URI filename is not a directory


# -- the engine dying mid-batch ---------------------------------------------------------------------------------------
@pytest.mark.vllm
def test_engine_death_mid_batch_is_a_clear_error_not_a_hang(tmp_path):
    """The report's engine case: EngineDied naming checkpoint and batch, no hang, committed rows kept, next batch refused."""
    [row] = run_cases([ENGINE_CASE], tmp_path, f"sqlite:///{tmp_path / 'audit.db'}")
    check(ENGINE_CASE, row)
