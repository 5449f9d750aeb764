"""The command line."""

import json
import os
import re
import shutil
import subprocess
import sys

import yaml

from assets import CHECKPOINT_ASSETS
from fixability_dag.cli import main as cli_main
from fixability_dag.storage.store import AuditStore
from resources import AuditSettings

from tests.support import (
    REPO,
    TINY,
    FakeEngine,
    behaviour,
    check_invariants,
    demo_checkpoint,
    evaluate,
    record_audit,
    run_audit,
    write_jsonl,
)


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


def test_the_progress_bar_says_step_phase_requests_rate_and_time_left():
    from fixability_dag.cli import progress_bar
    from fixability_dag.orchestration.launch import RunState
    from fixability_dag.pipeline.progress import Update

    state = RunState(steps_total=9, started=100.0)
    assert progress_bar("ck", state, 103.0, 80) == "[ck] step 1/9 starting steps [" + "." * 30 + "] 0m03s"
    state.steps_done, state.step = 2, "rescue_rollouts"
    state.update = Update("label", 40, 160, 320, 850.0, 95.0)
    line = progress_bar("ck", state, 165.0, 120)
    assert line == "[ck] step 3/9 rescue_rollouts label 40/160 [" + "#" * 8 + "." * 22 + "]  25% 850 tok/s ~95 s left 1m05s"
    state.update = Update("label", 70, 160, final=True)
    assert progress_bar("ck", state, 165.0, 120).endswith("[" + "#" * 30 + "] 100% done 1m05s")
    narrow = progress_bar("a-long-checkpoint-name", state, 165.0, 40)
    assert len(narrow) == 39 and "[" not in narrow[25:]  # no room for a bar: the line is cut, never wrapped
    for width in range(1, 120):
        assert len(progress_bar("ck", state, 165.0, width)) <= max(width - 1, 0)


def test_audit_refuses_bad_settings_before_any_run(tmp_path):
    bad = tmp_path / "audit.yaml"
    bad.write_text("n_samples: 0\n")
    done = subprocess.run([sys.executable, "-m", "fixability_dag.cli", "audit", str(demo_checkpoint()), "--config", str(bad)],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DAGSTER_HOME": str(tmp_path / "home")})
    assert done.returncode == 2 and f"invalid settings: {bad}: n_samples must be >= 1" in done.stderr
    assert not (tmp_path / "home").exists()  # refused before the instance was touched


def run_on_a_terminal(argv: list[str], env: dict, columns: int = 120, timeout: float = 1800):
    """Run ``argv`` with its stdout on a pseudo-terminal ``columns`` wide, as a user's shell would: its exit code,
    the lines it left on the screen, the progress-bar frames it drew in place (each ``\\r`` redraw), and stderr."""
    import fcntl
    import pty
    import struct
    import termios
    import threading

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    chunks = []

    def read():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        _, stderr = process.communicate(timeout=timeout)
    finally:
        process.kill()
        reader.join(timeout=30)
        os.close(master)
    screen = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n").replace("\x1b[K", "")
    lines = [line.split("\r")[-1] for line in screen.split("\n")]
    frames = [frame for line in screen.split("\n") for frame in line.split("\r")[:-1] if frame]
    return process.returncode, "\n".join(lines), frames, stderr.decode(errors="replace")


def test_audit_runs_the_job_through_the_instance_with_the_settings_file(tmp_path):
    """A real small audit (vLLM on a demo checkpoint) launched by ``fixability audit``: the run is in the instance
    with the code location's origin (the UI's timeline shows it; its job re-executes from the workspace the UI
    loads), carries the file's settings, prints each generating phase's progress, and stamps the file in
    audit_runs; the sensor, reading the same file, finds nothing left to audit."""
    from dagster import DagsterInstance, DagsterRunStatus
    from dagster._core.execution.plan.resume_retry import ReexecutionStrategy

    from fixability_dag.orchestration.launch import code_location, follow

    home, ckpts = tmp_path / "home", tmp_path / "ckpts"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    checkpoint = shutil.copytree(demo_checkpoint(), ckpts / demo_checkpoint().name)
    config = tmp_path / "audit.yaml"
    config.write_text(yaml.safe_dump(TINY))
    db_url = f"sqlite:///{tmp_path / 'audit.db'}"
    env = {**os.environ, "DAGSTER_HOME": str(home), "FIXABILITY_DB_URL": db_url, "VLLM_CPU_KVCACHE_SPACE": "2"}
    env.pop("FIXABILITY_SETTINGS", None)
    env.pop("COLUMNS", None)
    returncode, stdout, frames, stderr = run_on_a_terminal(
        [sys.executable, "-m", "fixability_dag.cli", "audit", str(checkpoint), "--config", str(config)], env)
    assert returncode == 0, stdout[-3000:] + stderr[-3000:]
    key = checkpoint.name
    assert f"settings {config}" in stdout
    for phase in ("base_rollouts: diagnostic", "probe_rollouts: probe", "rescue_rollouts: label", "rescue_evaluation: eval"):
        assert re.search(rf"\[{key}\] {phase}: \d+(/| of at most )\d+ requests", stdout), phase  # each phase's last
    assert f"[{key}] rescue_evaluation: done" in stdout and "Traceback" not in stdout + stderr
    # the bar, redrawn in place on the terminal's last line: the run's steps, and a generating phase's requests
    steps = {int(m[1]) for f in frames if (m := re.match(rf"\[{key}\] step \d+/(\d+) ", f))}
    assert steps == {len(CHECKPOINT_ASSETS)}, frames[:5]
    generating = [f for f in frames if re.match(rf"\[{key}\] step \d+/\d+ \w+_rollouts \w+ \d+/\d+ \[[#.]{{5,}}\]", f)]
    assert generating, frames
    assert all(len(f) < 120 for f in frames)  # fits the terminal's width: redrawn, never wrapped

    with DagsterInstance.from_config(str(home)) as instance:
        [report, run] = instance.get_runs()  # newest first
        assert run.job_name == "audit_checkpoint" and run.status == DagsterRunStatus.SUCCESS
        assert run.tags["dagster/partition"] == key and run.tags["fixability/trigger"] == "cli"
        assert report.job_name == "failure_topography_report" and report.status == DagsterRunStatus.SUCCESS
        settings = run.run_config["resources"]["settings"]["config"]
        assert settings["settings_file"] == str(config) and settings["n_samples"] == TINY["n_samples"]
        origin = run.remote_job_origin
        assert origin is not None and run.job_code_origin is not None
        with code_location(instance) as workspace:  # what the UI's re-execute button does
            location = workspace.get_code_location(origin.repository_origin.code_location_origin.location_name)
            repository = location.get_repository(origin.repository_origin.repository_name)
            assert repository.has_job(run.job_name)
            again = instance.create_reexecuted_run(
                request_context=workspace, parent_run=run, code_location=location,
                remote_job=repository.get_full_job(run.job_name), strategy=ReexecutionStrategy.ALL_STEPS,
                use_parent_run_tags=True)  # as the UI's "Re-execute all" does
            assert again.parent_run_id == run.run_id and again.tags["dagster/partition"] == key
            assert again.run_config == run.run_config and again.remote_job_origin == origin
            # the report's re-execution is cheap (no engine): launch it for real
            rerun = instance.create_reexecuted_run(
                request_context=workspace, parent_run=report, code_location=location,
                remote_job=repository.get_full_job(report.job_name), strategy=ReexecutionStrategy.ALL_STEPS)
            instance.launch_run(rerun.run_id, workspace)
            assert follow(instance, rerun.run_id, lambda line: None) == DagsterRunStatus.SUCCESS

    store = AuditStore(db_url)
    runs = store.read("audit_runs", key)
    file_settings = AuditSettings.from_file(config)
    assert set(runs["settings_file"]) == {str(config)} and (runs["status"] == "success").all()
    assert set(runs["config_hash"]) == {file_settings.config().config_hash()}
    check_invariants(store, key, file_settings.config())
    result = evaluate(DagsterInstance.ephemeral(), ckpts, settle=0, db=db_url, settings=file_settings)
    assert result.run_requests == []  # the sensor, on the same file, sees the CLI's audit as current


def test_the_demo_set_is_two_organism_checkpoints_in_production_mode(monkeypatch):
    """``make demo`` audits the demo set with the demo settings: the organism run's SFT save and its RFT save, in
    the science run's settings but for the nightly mode's stopping and subsample (so its plan is the full one's)."""
    import dataclasses

    from fixability_dag.cli import DEMO_SET, DEMO_SETTINGS, _checkpoints_at, demo_target
    from fixability_dag.pipeline.settings import SETTINGS_ENV, read_settings_file
    from resources.checkpoints import CHECKPOINT_DIR_ENV

    monkeypatch.delenv(CHECKPOINT_DIR_ENV, raising=False)
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    assert demo_target(None, None) == (str(DEMO_SET), str(DEMO_SETTINGS))
    assert demo_target("elsewhere", "mine.yaml") == ("elsewhere", "mine.yaml")
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, "/ckpts")
    monkeypatch.setenv(SETTINGS_ENV, "/nightly.yaml")
    assert demo_target(None, None) == ("/ckpts", None)  # None: the environment's settings file is read
    _, found, skipped = _checkpoints_at(DEMO_SET)
    assert not skipped and [c.checkpoint_id for c in found] == ["org-llama-seed7-sft-s1500", "org-llama-seed7-rft-s1700"]
    assert all(c.path.parent == REPO / "demo" / "organism" for c in found)  # links to the committed checkpoints
    assert len({c.fingerprint for c in found}) == 2
    demo, science = read_settings_file(DEMO_SETTINGS), read_settings_file(REPO / "demo" / "organism" / "audit.yaml")
    mode = {"label_replicate": False, "diagnostic_block": 4, "diagnostic_early_stop": True, "label_subsample": 0.25}
    assert {k: getattr(demo, k) for k in mode} == mode
    assert dataclasses.replace(demo, **{k: getattr(science, k) for k in mode}) == science
