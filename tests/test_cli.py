"""The command line."""

import json

from fixability_dag.cli import main as cli_main

from tests.support import FakeEngine, behaviour, record_audit, run_audit, write_jsonl


def test_validate_command_reports_without_running(tmp_path, capsys):
    good = write_jsonl(tmp_path / "good.jsonl", [{"question": "q", "answer": "a\n#### 3"}])
    assert cli_main(["validate", "gsm8k", str(good)]) == 0
    assert "1 problems" in capsys.readouterr().out
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": "#### 3"}, {"question": "q"}])
    assert cli_main(["validate", "gsm8k", str(bad)]) == 2
    assert "line 2, field 'answer'" in capsys.readouterr().err


def test_grade_command_grades_each_pair(tmp_path, capsys):
    path = write_jsonl(tmp_path / "pairs.jsonl", [
        {"gold": "7.5", "completion": "The answer is 7.5."},
        {"gold": "18", "completion": "<think>maybe 20</think>\n**Final Answer:** 18"},
        {"gold": "18", "completion": "#### 20\n\nQ: next?\nA: #### 18"},
    ])
    assert cli_main(["grade", str(path)]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["line"], r["answer"], r["correct"]) for r in rows] == [(1, "7.5", True), (2, "18", True), (3, "20", False)]
    assert "graded 3 rows" in err and "2 correct" in err


def test_grade_command_refuses_bad_rows_with_line_and_field(tmp_path, capsys):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"gold": "1", "completion": "#### 1"}, {"gold": "2", "text": "#### 2"}])
    assert cli_main(["grade", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and f"{path}, line 2, field 'completion': missing" in err
    assert cli_main(["grade", str(path), "--completion-field", "text"]) == 2  # line 1 has no 'text'
    assert "line 1, field 'text'" in capsys.readouterr().err


def test_regrade_command_recomputes_a_stored_audit(sqlite_store, capsys):
    run_audit(sqlite_store, FakeEngine(behaviour))
    record_audit(sqlite_store)
    assert cli_main(["regrade", "ck", "--db", sqlite_store.url]) == 0
    out = capsys.readouterr().out
    assert "diagnostic 0" in out and "recomputed without generating: probe_rollouts, failure_features" in out
    assert cli_main(["regrade", "nowhere", "--db", sqlite_store.url]) == 2
    assert "no successful audit step" in capsys.readouterr().err
