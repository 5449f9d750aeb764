"""Retries, load spread, concurrency bounds and the checkpoint check of the remote engine, against small flaky HTTP
servers on 127.0.0.1 written here.

These servers fake a flaky *network* (refused connections, dropped sockets, 503, 429), not vLLM: what they answer
follows the OpenAI completion schema that ``tests/system/test_remote_engine.py`` checks against a real ``vllm serve``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fixability_dag.engines.remote import (
    RemoteEngine,
    RemoteEngineError,
    RemoteOptions,
    normalize_base_url,
    parse_completions,
    served_model_matches,
)
from fixability_dag.core.sampling import Decoding, GenerationRequest, generate_rollouts

from tests.conftest import free_port

CHECKPOINT = Path("/checkpoints/run-7/arith-sft-s0300")
FAST = RemoteOptions(max_concurrency=4, max_retries=3, backoff_seconds=0.01, max_backoff_seconds=0.05, timeout_seconds=10)


class FlakyServer(ThreadingHTTPServer):
    """Answers ``/v1/models`` and ``/v1/completions``; the first ``fail_first`` completion calls fail as ``mode``
    says. Records every payload and header and the most requests it ever held at once."""

    daemon_threads = True

    def __init__(self, fail_first: int = 0, mode: str = "503", model_id: str = str(CHECKPOINT), delay: float = 0.0,
                 drop_choice: bool = False, models_down: bool = False):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fail_first, self.mode, self.model_id, self.delay = fail_first, mode, model_id, delay
        self.drop_choice, self.models_down = drop_choice, models_down
        self.completion_calls = 0
        self.payloads: list[dict] = []
        self.headers_seen: list[dict] = []
        self.in_flight = self.peak_in_flight = 0
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> "FlakyServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: FlakyServer

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _json(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path != "/v1/models":
            return self._json(404, {"error": "not found"})
        if self.server.models_down:
            return self._json(503, {"error": "starting"})
        self._json(200, {"object": "list", "data": [{"id": self.server.model_id, "root": self.server.model_id}]})

    def do_POST(self) -> None:
        s = self.server
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with s.lock:
            s.completion_calls += 1
            call = s.completion_calls
            s.payloads.append(payload)
            s.headers_seen.append(dict(self.headers))
            s.in_flight += 1
            s.peak_in_flight = max(s.peak_in_flight, s.in_flight)
        time.sleep(s.delay)
        with s.lock:  # done "computing": leave the count before answering, or the client's next request (sent the
            s.in_flight -= 1  # moment it reads this answer) could be counted beside this one
        if call <= s.fail_first:
            if s.mode == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if s.mode == "429":
                return self._json(429, {"error": "busy"}, {"Retry-After": "0.3"})
            return self._json(int(s.mode), {"error": f"injected {s.mode}"})
        n = payload["n"] - (1 if s.drop_choice else 0)
        choices = [{"index": i, "text": f"{payload['prompt']}|seed={payload['seed']}|i={i}", "finish_reason": "stop",
                    "token_ids": [5] * (i + 2), "logprobs": {"token_logprobs": [-0.25] * (i + 2)}} for i in range(n)]
        self._json(200, {"choices": list(reversed(choices))})  # out of order on purpose: the engine sorts


def requests(count: int, n: int = 3, temperature: float = 1.0) -> list[GenerationRequest]:
    return [GenerationRequest(f"p{i}", "diagnostic", "retry", f"Q{i}", n, 1000 + i, Decoding(temperature=temperature))
            for i in range(count)]


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there: connections are refused


def test_completions_come_back_in_request_and_index_order_with_the_request_fields():
    with FlakyServer() as server:
        engine = RemoteEngine([server.url], CHECKPOINT, FAST)
        reqs = requests(7) + requests(1, n=1, temperature=0.0)
        out = engine.generate(reqs)
    assert [len(c) for c in out] == [r.n for r in reqs]
    for r, completions in zip(reqs[:-1], out):
        assert [c.text for c in completions] == [f"{r.prompt}|seed={r.seed}|i={i}" for i in range(r.n)]
        assert [c.num_tokens for c in completions] == [i + 2 for i in range(r.n)]
        assert [c.cumulative_logprob for c in completions] == [-0.25 * (i + 2) for i in range(r.n)]
    payload = next(p for p in server.payloads if p["prompt"] == "Q0")
    assert payload["model"] == str(CHECKPOINT) and payload["n"] == 3 and payload["seed"] == 1000
    assert payload["logprobs"] == 0 and payload["return_token_ids"] is True and payload["stop"] == ["\n\n"]
    assert payload["top_k"] == 0 and payload["repetition_penalty"] == 1.0 and payload["max_tokens"] == 128
    greedy = [p for p in server.payloads if p["temperature"] == 0.0]
    assert len(greedy) == 1 and greedy[0]["seed"] is None  # as the in-process engine: no seed for greedy decoding


@pytest.mark.parametrize("mode", ["503", "500", "drop"])
def test_transient_failures_are_retried_until_they_pass(mode):
    with FlakyServer(fail_first=2, mode=mode) as server:
        engine = RemoteEngine([server.url], CHECKPOINT, FAST)
        [completions] = engine.generate(requests(1))
    assert len(completions) == 3
    assert server.completion_calls == 3
    assert engine.stats()[server.url]["failed"] == 2 and engine.stats()[server.url]["succeeded"] == 1


def test_429_waits_at_least_the_servers_retry_after():
    with FlakyServer(fail_first=1, mode="429") as server:
        engine = RemoteEngine([server.url], CHECKPOINT, RemoteOptions(backoff_seconds=0.01, max_backoff_seconds=5))
        start = time.monotonic()
        engine.generate(requests(1))
        elapsed = time.monotonic() - start
    assert server.completion_calls == 2
    assert elapsed >= 0.3


def test_after_the_last_retry_the_error_names_the_request_and_the_server():
    with FlakyServer(fail_first=100, mode="502") as server:
        engine = RemoteEngine([server.url], CHECKPOINT, FAST)
        with pytest.raises(RemoteEngineError) as err:
            engine.generate(requests(1))
    message = str(err.value)
    assert "p0/diagnostic/retry (seed 1000, n 3)" in message and "after 4 attempts" in message
    assert message.count(server.url) == 4 and "HTTP 502" in message
    assert server.completion_calls == 4


def test_client_errors_are_not_retried():
    with FlakyServer(fail_first=100, mode="400") as server:
        engine = RemoteEngine([server.url], CHECKPOINT, FAST)
        with pytest.raises(RemoteEngineError, match=r"refused request p0/.*HTTP 400.*injected 400"):
            engine.generate(requests(1))
    assert server.completion_calls == 1


def test_one_failed_request_fails_the_batch_without_running_the_rest():
    with FlakyServer(fail_first=100, mode="400", delay=0.05) as server:
        engine = RemoteEngine([server.url], CHECKPOINT, RemoteOptions(max_concurrency=1, backoff_seconds=0.01))
        with pytest.raises(RemoteEngineError, match="HTTP 400"):
            engine.generate(requests(20))
        time.sleep(0.2)
    assert server.completion_calls <= 2  # the queued requests were cancelled


def test_load_goes_to_the_least_busy_server_even_below_the_bound():
    with FlakyServer(delay=0.2) as a, FlakyServer(delay=0.2) as b:
        engine = RemoteEngine([a.url, b.url], CHECKPOINT, RemoteOptions(max_concurrency=8))
        engine.generate(requests(8))  # fits on one server, but two servers halve the wait
    assert a.completion_calls + b.completion_calls == 8
    assert min(a.completion_calls, b.completion_calls) >= 3


def test_load_is_spread_and_concurrency_bounded_per_server():
    with FlakyServer(delay=0.05) as a, FlakyServer(delay=0.05) as b:
        engine = RemoteEngine([a.url, b.url], CHECKPOINT, RemoteOptions(max_concurrency=3))
        reqs = requests(40)
        out = engine.generate(reqs)
    assert [c[0].text for c in out] == [f"{r.prompt}|seed={r.seed}|i=0" for r in reqs]
    assert a.completion_calls + b.completion_calls == 40
    assert min(a.completion_calls, b.completion_calls) >= 10
    assert a.peak_in_flight <= 3 and b.peak_in_flight <= 3
    assert max(a.peak_in_flight, b.peak_in_flight) == 3  # the bound is reached, so requests really overlap


def test_a_server_that_is_down_is_skipped_and_the_others_serve_within_their_bound():
    dead = closed_port_url()
    with FlakyServer(delay=0.05) as alive:
        engine = RemoteEngine([dead, alive.url], CHECKPOINT, RemoteOptions(max_concurrency=2, backoff_seconds=0.01))
        out = engine.generate(requests(10))
    assert len(out) == 10 and alive.completion_calls == 10
    assert alive.peak_in_flight == 2  # the dead server's share of threads did not pile onto the live one
    assert engine.stats()[dead]["model"] is None and "ConnectError" in engine.stats()[dead]["last_error"]


def test_a_server_failing_mid_run_is_failed_over_and_rested():
    with FlakyServer(fail_first=10_000, mode="503") as sick, FlakyServer() as healthy:
        engine = RemoteEngine([sick.url, healthy.url], CHECKPOINT,
                              RemoteOptions(max_concurrency=2, max_retries=3, backoff_seconds=0.2, max_backoff_seconds=1))
        out = engine.generate(requests(20))
    assert len(out) == 20 and healthy.completion_calls == 20
    assert sick.completion_calls <= 4  # it was rested after failing instead of taking half of the load


def test_no_reachable_server_fails_with_every_server_named():
    dead = [closed_port_url(), closed_port_url()]
    with pytest.raises(RemoteEngineError, match="no vLLM server reachable") as err:
        RemoteEngine(dead, CHECKPOINT, FAST)
    assert all(url in str(err.value) for url in dead)


def test_a_server_still_loading_is_checked_again_later():
    with FlakyServer(models_down=True) as loading, FlakyServer() as ready:
        engine = RemoteEngine([loading.url, ready.url], CHECKPOINT, FAST)
        assert engine.stats()[loading.url]["model"] is None
        loading.models_down = False
        for _ in range(50):  # the ready server may absorb a whole batch on a loaded machine: ask until it is used
            time.sleep(0.1)  # past its rest
            engine.generate(requests(12))
            if loading.completion_calls:
                break
    assert engine.stats()[loading.url]["model"] == str(CHECKPOINT) and loading.completion_calls > 0


def test_a_server_serving_another_checkpoint_is_refused():
    with FlakyServer(model_id="/models/arith-sft-s1000") as wrong, FlakyServer() as right:
        with pytest.raises(RemoteEngineError) as err:
            RemoteEngine([right.url, wrong.url], CHECKPOINT, FAST)
    message = str(err.value)
    assert wrong.url in message and "arith-sft-s1000" in message and "arith-sft-s0300" in message
    assert wrong.completion_calls == right.completion_calls == 0


def test_served_model_name_and_api_key():
    with FlakyServer(model_id="nightly") as server:
        with pytest.raises(RemoteEngineError, match="nightly"):
            RemoteEngine([server.url], CHECKPOINT, FAST)  # an alias is not accepted by itself
        options = RemoteOptions(served_model_name="nightly", api_key="s3cret", backoff_seconds=0.01)
        RemoteEngine([server.url], CHECKPOINT, options).generate(requests(1))
    assert server.payloads[0]["model"] == "nightly"
    assert server.headers_seen[0]["Authorization"] == "Bearer s3cret"


def test_a_response_with_missing_samples_is_refused():
    with FlakyServer(drop_choice=True) as server:
        engine = RemoteEngine([server.url], CHECKPOINT, FAST)
        with pytest.raises(RemoteEngineError, match=r"choice indices \[0, 1\], expected 0..2"):
            engine.generate(requests(1))


def test_generate_rollouts_grades_remote_completions():
    from fixability_dag.core.problems import Problem

    with FlakyServer() as server:
        engine = RemoteEngine([server.url], CHECKPOINT, FAST)
        reqs = requests(2)
        problems = {r.problem_id: Problem(r.problem_id, "test", r.prompt, "7") for r in reqs}
        frame = generate_rollouts(engine, reqs, problems)
    assert len(frame) == 6 and frame["mean_logprob"].eq(-0.25).all() and frame["seed"].tolist() == [1000] * 3 + [1001] * 3


def test_urls_models_and_responses_are_validated():
    assert normalize_base_url(" http://h:8000/v1/ ") == "http://h:8000"
    with pytest.raises(ValueError, match="'h:8000' is not an http"):
        normalize_base_url("h:8000")
    with pytest.raises(ValueError, match="listed twice"):
        RemoteEngine(["http://h:1", "http://h:1/v1"], CHECKPOINT)
    assert served_model_matches({"id": "x", "root": "/srv/arith-sft-s0300/"}, CHECKPOINT)
    assert served_model_matches({"id": "arith-sft-s0300", "root": "/other/place"}, CHECKPOINT)
    assert not served_model_matches({"id": "arith-sft-s03000", "root": "/srv/arith-sft-s1000"}, CHECKPOINT)
    with pytest.raises(RemoteEngineError, match="neither token_ids nor logprobs"):
        parse_completions({"choices": [{"index": 0, "text": "x"}]}, requests(1, n=1)[0])
