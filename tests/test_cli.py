"""The command line."""

import json

from fixability_dag.cli import main as cli_main


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_validate_command_reports_without_running(tmp_path, capsys):
    good = write_jsonl(tmp_path / "good.jsonl", [{"question": "q", "answer": "a\n#### 3"}])
    assert cli_main(["validate", "gsm8k", str(good)]) == 0
    assert "1 problems" in capsys.readouterr().out
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": "#### 3"}, {"question": "q"}])
    assert cli_main(["validate", "gsm8k", str(bad)]) == 2
    assert "line 2, field 'answer'" in capsys.readouterr().err
