"""Problem file loaders: every format read right, every bad row refused with file, line and field."""

import json

import pytest

from fixability_dag.core.answers import last_boxed
from fixability_dag.inputs.problem_files import (
    ColumnMapping,
    ProblemFileError,
    load_generic,
    load_grading_pairs,
    load_gsm8k_jsonl,
    load_math_jsonl,
    load_problems,
)

from tests.support import write_jsonl


def test_gsm8k_loader_reads_answer_and_steps(tmp_path):
    path = write_jsonl(tmp_path / "gsm.jsonl", [
        {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3+4 = <<3+4=7>>7\n#### 7"},
        {"question": "Big", "answer": "#### 1,000"},
    ])
    problems = load_gsm8k_jsonl(path)
    assert [p.gold_answer for p in problems] == ["7", "1,000"]
    assert problems[0].reference_steps == ("3+4 = <<3+4=7>>7",)
    assert problems[0].problem_id.startswith("gsm-")


@pytest.mark.parametrize(
    "rows, line, field, reason",
    [
        ([{"question": "q", "answer": "#### 1"}, "{not json"], 2, None, "not valid JSON"),
        ([{"question": "q", "answer": "#### 1"}, {"question": "q2"}], 2, "answer", "missing"),
        ([{"question": "q", "answer": "no marker here"}], 1, "answer", "####"),
        ([{"question": "", "answer": "#### 1"}], 1, "question", "empty"),
        ([{"question": ["a"], "answer": "#### 1"}], 1, "question", "expected text"),
        ([{"id": 1, "question": "q", "answer": "#### 1"}, {"id": 1, "question": "r", "answer": "#### 2"}], 2, "id", "duplicate"),
        (["[1, 2]"], 1, None, "JSON object"),
    ],
)
def test_gsm8k_loader_names_file_line_and_field(tmp_path, rows, line, field, reason):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ProblemFileError) as err:
        load_gsm8k_jsonl(path)
    assert err.value.line == line
    assert err.value.field == field
    assert reason in str(err.value)
    assert str(path) in str(err.value)


def test_non_utf8_file_names_the_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps({"question": "q", "answer": "#### 1"}).encode() + b"\n" + '{"question": "caf\xe9"}'.encode("latin-1") + b"\n")
    with pytest.raises(ProblemFileError, match="line 2.*UTF-8"):
        load_gsm8k_jsonl(path)


def test_math_loader_and_nested_boxed(tmp_path):
    assert last_boxed(r"so \boxed{\frac{1}{2}} and later \boxed{x^{2}}") == "x^{2}"
    assert last_boxed(r"\boxed{unclosed") is None
    path = write_jsonl(tmp_path / "math.jsonl", [
        {"problem": "Half of one?", "solution": r"One half. So \boxed{\frac{1}{2}}.", "level": "Level 2"},
    ])
    [p] = load_math_jsonl(path)
    assert p.gold_answer == r"\frac{1}{2}" and p.difficulty == 2
    bad = write_jsonl(tmp_path / "bad_math.jsonl", [{"problem": "x", "solution": "no box"}])
    with pytest.raises(ProblemFileError, match=r"line 1, field 'solution'"):
        load_math_jsonl(bad)


def test_generic_csv_with_column_mapping(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("qid,prompt,gold,level\na1,What is 2+2?,4,1\na2,What is 3*3?,9,x\n", encoding="utf-8")
    mapping = ColumnMapping(question="prompt", answer="gold", id="qid", difficulty="level")
    with pytest.raises(ProblemFileError) as err:
        load_generic(path, mapping)
    assert (err.value.line, err.value.field) == (3, "level")
    path.write_text("qid,prompt,gold,level\na1,What is 2+2?,4,1\na2,What is 3*3?,9,2\n", encoding="utf-8")
    problems = load_generic(path, mapping)
    assert [(p.problem_id, p.gold_answer, p.difficulty) for p in problems] == [("a1", "4", 1), ("a2", "9", 2)]


def test_generic_jsonl_missing_mapped_column(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [{"prompt": "x", "gold": "1"}, {"prompt": "y"}])
    with pytest.raises(ProblemFileError, match=r"line 2, field 'gold': missing"):
        load_generic(path, ColumnMapping(question="prompt", answer="gold"))


def test_load_problems_dispatch_and_empty_file(tmp_path):
    assert len(load_problems("arith")) == 96
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ProblemFileError, match="contains no problems"):
        load_problems("gsm8k", empty)
    with pytest.raises(ValueError, match="unknown problem format"):
        load_problems("parquet", empty)


def test_grading_pairs_keep_lines_and_allow_empty_completions(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"gold": 18, "completion": "#### 18"}, "", {"gold": "3/4", "completion": ""}])
    pairs = load_grading_pairs(path)
    assert [(p.line, p.gold, p.completion) for p in pairs] == [(1, "18", "#### 18"), (3, "3/4", "")]


@pytest.mark.parametrize(
    "row, field, reason",
    [({"completion": "x"}, "gold", "missing"), ({"gold": "", "completion": "x"}, "gold", "empty"),
     ({"gold": "1"}, "completion", "missing"), ({"gold": "1", "completion": 18}, "completion", "expected text, got a JSON number"),
     ({"gold": "1", "completion": ["a"]}, "completion", "expected text"), ({"gold": "NaN", "completion": "x"}, "gold", "finite")],
)
def test_bad_grading_pairs_name_file_line_and_field(tmp_path, row, field, reason):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"gold": "1", "completion": "#### 1"}, row])
    with pytest.raises(ProblemFileError) as err:
        load_grading_pairs(path)
    assert (err.value.line, err.value.field) == (2, field) and reason in err.value.reason
    assert str(path) in str(err.value)
