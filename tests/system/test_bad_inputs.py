"""Bad input of every kind: a clear error naming file/line/field, checkpoint or database before anything is written,
or (model output) stored safely. Cases already covered by test_problems, test_answers, test_checkpoints,
test_sensors and test_store are not repeated here."""

import json
import os
import shutil
import stat
import threading
import time

import pandas as pd
import pytest

from fixability_dag.core.answers import LatexChecker, answers_match, canonical_answer, grade
from fixability_dag.pipeline.audit import snapshot_problems
from fixability_dag.inputs.checkpoints import CheckpointError, FULL_PARSE_BYTES, incompleteness, inspect_checkpoint, partition_key, scan
from fixability_dag.pipeline.config import AuditConfig
from fixability_dag.core.problems import ArithmeticSuiteSpec, arithmetic_suite
from fixability_dag.inputs.problem_files import ColumnMapping, ProblemFileError, load_generic, load_gsm8k_jsonl, load_math_jsonl, load_problems
from fixability_dag.core.sampling import MAX_TEXT_CHARS, Completion, Decoding, GenerationRequest, grade_completions
from fixability_dag.storage.store import AuditStore, DatabaseUnavailable
from scripts.reliability import bad_inputs as script
from scripts.reliability.bad_inputs import rewrite_header, tensors

from tests.support import REPO, demo_checkpoint
from tests.support import age, evaluate


def write_lines(path, *rows):
    path.write_bytes(b"".join((r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode()) + b"\n" for r in rows))
    return path


# -- problem files ------------------------------------------------------------------------------------------------
def test_non_utf8_jsonl_names_line_and_byte_offset(tmp_path):
    first = json.dumps({"question": "q", "answer": "#### 1"}).encode()
    path = write_lines(tmp_path / "p.jsonl", first, b'{"question": "caf\xe9", "answer": "#### 2"}')
    with pytest.raises(ProblemFileError) as err:
        load_gsm8k_jsonl(path)
    assert err.value.line == 2
    offset = len(first) + 1 + len(b'{"question": "caf')
    assert f"byte offset {offset} of the file" in str(err.value) and str(path) in str(err.value)


def test_non_utf8_csv_names_line_and_byte_offset(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(b"question,answer\nq1,1\nq\xff,2\n")
    with pytest.raises(ProblemFileError, match=r"line 3: not valid UTF-8 .*byte offset 22"):
        load_generic(path)


def test_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"question": "q", "answer": "#### 3"}\n')
    assert [p.gold_answer for p in load_gsm8k_jsonl(path)] == ["3"]


def test_duplicate_ids_are_listed_with_their_lines(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", *({"id": i, "question": f"q{n}", "answer": "#### 1"} for n, i in enumerate("abacbb")))
    with pytest.raises(ProblemFileError) as err:
        load_gsm8k_jsonl(path)
    assert (err.value.line, err.value.field) == (3, "id")
    assert "2 duplicated: 'a' (lines 1, 3), 'b' (lines 2, 5, 6)" in str(err.value)


def test_duplicate_questions_without_ids_name_the_question_field(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text("prompt,gold\nwhat?,1\nelse?,2\nwhat?,1\n")
    with pytest.raises(ProblemFileError) as err:
        load_generic(path, ColumnMapping(question="prompt", answer="gold"))
    assert (err.value.line, err.value.field) == (4, "prompt") and "same question appears twice" in str(err.value)


@pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity", b'"nan"', b'"-inf"', b'"Infinity"'])
def test_non_finite_gold_is_refused(tmp_path, raw):
    path = write_lines(tmp_path / "n.jsonl", b'{"question": "q", "answer": ' + raw + b"}")
    with pytest.raises(ProblemFileError) as err:
        load_generic(path)
    assert (err.value.line, err.value.field) == (1, "answer")


def test_infinity_in_latex_is_a_legitimate_answer(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", {"problem": "lim?", "solution": r"so \boxed{\infty}"})
    assert load_math_jsonl(path)[0].gold_answer == r"\infty"


def test_json_numbers_keep_their_literal_text(tmp_path):
    path = write_lines(tmp_path / "g.jsonl", b'{"question": "a", "answer": 1e400}', b'{"question": "b", "answer": 1234567890123456789012345}',
                       b'{"question": "c", "answer": 0.1000}')
    assert [p.gold_answer for p in load_generic(path)] == ["1e400", "1234567890123456789012345", "0.1000"]


@pytest.mark.parametrize("loader, row", [
    (load_generic, b'{"question": "q", "answer": ' + b"9" * 5000 + b"}"),  # past Python's 4300-digit int parsing limit
    (load_gsm8k_jsonl, json.dumps({"question": "q", "answer": "#### " + "7" * 5000}).encode()),
    (load_math_jsonl, json.dumps({"problem": "q", "solution": r"\boxed{" + "7" * 300 + "}"}).encode()),
])
def test_enormous_gold_answers_are_refused_by_every_loader(tmp_path, loader, row):
    path = write_lines(tmp_path / "big.jsonl", row)
    with pytest.raises(ProblemFileError, match="expected a short final answer") as err:
        loader(path)
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


def test_nul_characters_long_ids_and_long_suite_names_are_refused(tmp_path):
    nul = write_lines(tmp_path / "nul.jsonl", {"question": "a\u0000b", "answer": "#### 1"})
    with pytest.raises(ProblemFileError, match=r"line 1, field 'question': contains a NUL"):
        load_gsm8k_jsonl(nul)
    long_id = write_lines(tmp_path / "id.jsonl", {"id": "x" * 201, "question": "q", "answer": "#### 1"})
    with pytest.raises(ProblemFileError, match=r"line 1, field 'id': problem id is 201 characters"):
        load_gsm8k_jsonl(long_id)
    long_suite = write_lines(tmp_path / ("s" * 101 + ".jsonl"), {"question": "q", "answer": "#### 1"})
    with pytest.raises(ProblemFileError, match="suite name"):
        load_gsm8k_jsonl(long_suite)


def test_csv_edge_cases(tmp_path):
    huge = tmp_path / "huge.csv"
    huge.write_text('question,answer\n"' + "x" * 200_000 + '",1\n')
    with pytest.raises(ProblemFileError, match="not valid CSV"):
        load_generic(huge)
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


DAMAGE = {
    "zero-size weights": (lambda d: (d / "model.safetensors").write_bytes(b""), "shorter than a safetensors header"),
    "trailing bytes": (lambda d: (d / "model.safetensors").open("ab").write(b"\0" * 64), "64 bytes after its last tensor"),
    "shape vs bytes": (lambda d: rewrite_header(d / "model.safetensors", lambda h: tensors(h)[0].update(shape=[1])), "needs 2 bytes"),
    "overlapping tensors": (lambda d: rewrite_header(d / "model.safetensors", lambda h: shift_offsets(tensors(h)[1], -4, -4)), "overlaps"),
    "gap before the data": (lambda d: rewrite_header(d / "model.safetensors", lambda h: shift_offsets(tensors(h)[0], 2, 2)), "has a gap at byte 0"),
    "header is a list": (lambda d: rewrite_header(d / "model.safetensors", lambda h: [1, 2]), "not a JSON object"),
    "header entry not an object": (lambda d: rewrite_header(d / "model.safetensors", lambda h: {"t": [1]}), "entry 't' is not an object"),
    "truncated tokenizer": (lambda d: (d / "tokenizer.json").write_bytes((d / "tokenizer.json").read_bytes()[:500]), "tokenizer.json is not valid JSON"),
    "corrupt tokenizer_config": (lambda d: (d / "tokenizer_config.json").write_text("{"), "tokenizer_config.json is not valid JSON"),
    "config is a list": (lambda d: (d / "config.json").write_text("[]"), "config.json is not a JSON object"),
    "config without model_type": (lambda d: (d / "config.json").write_text('{"hidden_size": 8}'), "config.json has no model_type"),
    "config not UTF-8": (lambda d: (d / "config.json").write_bytes(b'{"model_type": "\xff"}'), "config.json is not valid UTF-8"),
    "index weight_map list": (lambda d: (d / "model.safetensors.index.json").write_text('{"weight_map": []}'), "index.json is unreadable"),
    "partial weights file": (lambda d: (d / "model-00002.safetensors.partial").write_bytes(b"x"), "temporary files present"),
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
    for content in (b"\xff\xfe{", b"[1]", b"{not json"):
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


@pytest.mark.parametrize("name", ["ck\n", "ck-1\n", ".hidden", "..", "ck-\u00e9", "ck\x07", "ck\u2215x", "\uff41bc", "ck..1"])
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


def test_no_answer_is_null_and_incorrect():
    row = graded("40+2=42 and then I ran out of", gold="42", finish="length")
    assert row["answer"] is None and row["is_correct"] is False and row["finish_reason"] == "length"


def test_enormous_output_is_capped_with_a_marker_and_still_graded():
    text = "1+1=2\n" * 40_000 + "#### 42"
    row = graded(text, gold="42", tokens=80_000, finish="length")
    assert row["is_correct"] is True and row["answer"] == "42"  # graded on the whole text
    assert len(row["text"]) < MAX_TEXT_CHARS + 200 and f"{len(text) - MAX_TEXT_CHARS} characters removed" in row["text"]
    assert row["text"].startswith("1+1=2\n") and row["text"].endswith("#### 42")
    assert row["num_tokens"] == 80_000 and row["finish_reason"] == "length"


def test_control_characters_and_surrogates_never_reach_the_database():
    row = graded("a\x00b\x07c\x1b[0m\td\ud800e\n#### 4\x002", gold="42")
    assert row["text"] == "abc[0m\td\ufffde\n#### 42" and row["is_correct"] is True


@pytest.mark.parametrize("logprob", [float("-inf"), float("nan"), float("inf")])
def test_non_finite_logprobs_are_stored_as_unknown(logprob):
    row = graded("#### 3", gold="3", logprob=logprob)
    assert row["cumulative_logprob"] is None and row["mean_logprob"] is None


def test_long_answers_and_finish_reasons_fit_their_columns():
    row = graded("#### " + "x" * 5000, finish="y" * 40)
    assert len(row["answer"]) == 200 and len(row["finish_reason"]) == 16


@pytest.mark.parametrize("text, gold", [
    ("#### \u0664\u0662", "42"),          # Arabic-Indic digits count as the number they spell
    ("#### \u06f4\u06f2", "42"),          # Extended Arabic-Indic (Persian)
    ("#### \u096a\u0968", "42"),          # Devanagari
    ("#### \uff14\uff12", "42"),          # full-width (NFKC)
    ("#### \u22125", "-5"),               # U+2212 MINUS SIGN
    ("#### 4\u00b2", "16"),               # a superscript is an exponent, not a digit
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


def test_pathological_latex_is_cut_off_and_the_checker_recovers():
    checker = LatexChecker(timeout=1.0)
    try:
        start = time.perf_counter()
        assert checker.equal("1", "9^{9^{9}}") is False
        assert time.perf_counter() - start < 30 and checker.timeouts == 1
        assert checker.equal(r"\frac{1}{2}", "0.5") is True  # a fresh worker took over
    finally:
        checker.close()


@pytest.mark.postgres
def test_hostile_rollouts_round_trip_through_the_database(store):
    store.upsert_problems([PROBLEM])
    store.register_checkpoint("ck", "/x/ck", "f")
    texts = ["nul\x00inside\n#### 4\x002", "x\ud800y\n#### 7", "9" * 200_000 + "\n#### 1", "#### " + "8" * 5000, "no answer at all"]
    rows = [graded(t, gold="42") | {"sample_index": i} for i, t in enumerate(texts)]
    assert store.replace("rollouts", "ck", pd.DataFrame(rows), phase="diagnostic") == len(texts)
    back = store.read("rollouts", "ck").sort_values("sample_index").reset_index(drop=True)
    assert back.loc[0, "text"] == "nulinside\n#### 42" and back.loc[0, "answer"] == "42" and bool(back.loc[0, "is_correct"])
    assert back.loc[1, "text"] == "x\ufffdy\n#### 7"
    assert len(back.loc[2, "text"]) < MAX_TEXT_CHARS + 200 and back.loc[2, "answer"] == "1"
    assert len(back.loc[3, "answer"]) == 200
    assert pd.isna(back.loc[4, "answer"]) and not back.loc[4, "is_correct"]


# -- the database --------------------------------------------------------------------------------------------------
def test_every_operation_on_a_down_database_names_it_and_the_operation():
    store = AuditStore("postgresql+psycopg://auditor:s3cret@127.0.0.1:1/audits")
    operations = {
        "replace rows of rollouts": lambda: store.replace("rollouts", "ck", [], phase="diagnostic"),
        "upsert 1 rows into problems": lambda: store.upsert_problems([PROBLEM]),
        "read": lambda: store.read("rollouts", "ck"),
        "count rollouts": lambda: store.count("rollouts"),
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


@pytest.mark.postgres
def test_read_only_postgresql_session_is_refused_and_left_intact(pg_server_url):
    from fixability_dag.testing.scratch import reset_schema

    reset_schema(pg_server_url)
    populated(pg_server_url)
    assert_read_only_refused(script.read_only_url(pg_server_url), pg_server_url)


# -- the whole catalogue, as the reliability report runs it -----------------------------------------------------------
@pytest.mark.postgres
def test_reliability_script_refuses_or_handles_every_case_and_loses_nothing(tmp_path, db_url):
    rows = script.run_bad_inputs(tmp_path / "work", db_url)
    assert len(rows) >= 55
    assert [r["case"] for r in rows if r["answer"] == "crashed"] == []
    assert all(r["rows_before"] == r["rows_after"] > 0 for r in rows)
    handled = {c[0] for c in script.PROBLEM_FILES_HANDLED} | {c[0] for c in script.MODEL_OUTPUTS} | {
        "sensor over all of the above", "output: nested exponent answer", "database read-only: read"}
    assert {r["case"] for r in rows if r["answer"] == "handled"} == handled
    assert "partitions added: ['good']" in next(r["message"] for r in rows if r["case"].startswith("sensor"))


# -- the engine dying mid-batch ---------------------------------------------------------------------------------------
@pytest.mark.vllm
def test_engine_death_mid_batch_is_a_clear_error_not_a_hang():
    import psutil

    from fixability_dag.engines.inprocess import EngineDied, EngineOptions, VLLMEngine
    from fixability_dag.core.interventions import build_requests

    ck = demo_checkpoint("arith-sft-s0300")
    engine = VLLMEngine(ck, EngineOptions())
    try:
        problems = arithmetic_suite()
        warm = engine.generate(build_requests(problems[:2], "retry", "diagnostic", 2, Decoding(max_tokens=16), seed=1))
        assert [len(g) for g in warm] == [2, 2]
        requests = build_requests(problems, "retry", "diagnostic", 16, Decoding(max_tokens=128), seed=2)
        outcome = {}
        worker = threading.Thread(target=lambda: outcome.update(result=_capture(engine.generate, requests)), daemon=True)
        worker.start()
        time.sleep(1.5)
        [core] = [c for c in psutil.Process().children(recursive=True) if "EngineCore" in c.name()]
        core.kill()
        worker.join(60)
        assert not worker.is_alive(), "generate hung after the engine process died"
        error = outcome["result"]
        assert isinstance(error, EngineDied), error
        assert ck.name in str(error) and f"a batch of {len(requests)} requests" in str(error)
        assert error.checkpoint == ck.name and problems[0].problem_id in error.batch
        with pytest.raises(EngineDied, match="already exited before this batch"):
            engine.generate(requests[:1])
    finally:
        engine.close()


def _capture(fn, *args):
    try:
        return fn(*args)
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        return exc
