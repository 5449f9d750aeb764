"""Quiet by default: a real engine run prints no vLLM chatter, library warnings or NUMA notices unless asked."""

import logging
import os
import subprocess
import sys

import pytest

from fixability_dag.engines.quiet import QUIET_WARNINGS, VERBOSITY_ENV, quiet_engine

from tests.support import REPO, demo_checkpoint

ENGINE_RUN = f"""
from fixability_dag.core.sampling import Decoding, GenerationRequest
from fixability_dag.engines.inprocess import VLLMEngine

if __name__ == "__main__":
    engine = VLLMEngine({str(demo_checkpoint())!r})
    [samples] = engine.generate([GenerationRequest("p", "diagnostic", "retry", "Q: 12+30\\nA: ", 2, 1, Decoding(max_tokens=16))])
    print("generated", len(samples))
    engine.close()
"""
LOUD = ("VLLM_LOGGING_LEVEL", "TORCH_CPP_LOG_LEVEL", "PYTHONWARNINGS", VERBOSITY_ENV)


@pytest.fixture
def clean_env(monkeypatch):
    """No logging variable set, and every one put back as it was after the test (quiet_engine writes os.environ)."""
    for name in LOUD:
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    level = logging.getLogger("vllm").level
    yield monkeypatch
    logging.getLogger("vllm").setLevel(level)


@pytest.mark.vllm
def test_a_real_engine_run_prints_nothing_but_its_result(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(ENGINE_RUN)
    env = {k: v for k, v in os.environ.items() if k not in LOUD}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = (done.stdout + done.stderr).splitlines()
    assert "generated 2" in lines
    for noise in (" INFO ", "FutureWarning", "NUMA", "Loading safetensors", "leaked shared_memory"):
        assert not [line for line in lines if noise in line], noise
    # what is left: vLLM's import-time Triton notice, printed once per engine process before its logging is set up
    assert len([line for line in lines if "Triton" not in line]) <= 2, lines


def test_quiet_settings_reach_spawned_processes_and_yield_to_the_user(clean_env):
    clean_env.setenv("PYTHONWARNINGS", "error::RuntimeWarning")
    clean_env.setenv("TORCH_CPP_LOG_LEVEL", "WARNING")
    quiet_engine()
    assert os.environ["VLLM_LOGGING_LEVEL"] == "ERROR" and os.environ["TORCH_CPP_LOG_LEVEL"] == "WARNING"
    assert os.environ["PYTHONWARNINGS"] == ",".join([*QUIET_WARNINGS, "error::RuntimeWarning"])  # the user's last: it wins
    quiet_engine()
    assert os.environ["PYTHONWARNINGS"].count("FutureWarning") == 1  # idempotent
    assert logging.getLogger("vllm").level == logging.ERROR


def test_a_verbosity_setting_brings_the_logs_back(clean_env):
    clean_env.setenv(VERBOSITY_ENV, "info")
    quiet_engine()
    assert os.environ["VLLM_LOGGING_LEVEL"] == "INFO"
    assert "PYTHONWARNINGS" not in os.environ and "TORCH_CPP_LOG_LEVEL" not in os.environ
