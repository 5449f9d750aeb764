"""Retries, load spread, concurrency bounds and the checkpoint check of the remote engine, against small flaky HTTP
servers on 127.0.0.1 written here.

These servers fake a flaky *network* (refused connections, dropped sockets, 503, 429), not vLLM: what they answer
follows the OpenAI completion schema that ``tests/system/test_remote_engine.py`` checks against a real ``vllm serve``.
"""

from __future__ import annotations

import time

import pytest

from fixability_dag.core.sampling import generate_rollouts
from fixability_dag.engines.remote import (
    RemoteEngine,
    RemoteEngineError,
    RemoteOptions,
    normalize_base_url,
    parse_completions,
    served_model_matches,
)

from tests.support import SERVED_CHECKPOINT, FlakyServer, free_port, requests

FAST = RemoteOptions(max_concurrency=4, max_retries=3, backoff_seconds=0.01, max_backoff_seconds=0.05, timeout_seconds=10)


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there: connections are refused


def test_completions_come_back_in_request_and_index_order_with_the_request_fields():
    with FlakyServer() as server:
        engine = RemoteEngine([server.url], SERVED_CHECKPOINT, FAST)
        reqs = requests(7) + requests(1, n=1, temperature=0.0)
        out = engine.generate(reqs)
    assert [len(c) for c in out] == [r.n for r in reqs]
    for r, completions in zip(reqs[:-1], out):
        assert [c.text for c in completions] == [f"{r.prompt}|seed={r.seed}|i={i}" for i in range(r.n)]
        assert [c.num_tokens for c in completions] == [i + 2 for i in range(r.n)]
        assert [c.cumulative_logprob for c in completions] == [-0.25 * (i + 2) for i in range(r.n)]
    payload = next(p for p in server.payloads if p["prompt"] == "Q0")
    assert payload["model"] == str(SERVED_CHECKPOINT) and payload["n"] == 3 and payload["seed"] == 1000
    assert payload["logprobs"] == 0 and payload["return_token_ids"] is True and payload["stop"] == ["\n\n"]
    assert payload["top_k"] == 0 and payload["repetition_penalty"] == 1.0 and payload["max_tokens"] == 128
    greedy = [p for p in server.payloads if p["temperature"] == 0.0]
    assert len(greedy) == 1 and greedy[0]["seed"] is None  # as the in-process engine: no seed for greedy decoding


@pytest.mark.parametrize("mode", ["503", "500", "drop"])
def test_transient_failures_are_retried_until_they_pass(mode):
    with FlakyServer(fail_first=2, mode=mode) as server:
        engine = RemoteEngine([server.url], SERVED_CHECKPOINT, FAST)
        [completions] = engine.generate(requests(1))
    assert len(completions) == 3
    assert server.completion_calls == 3
    assert engine.stats()[server.url]["failed"] == 2 and engine.stats()[server.url]["succeeded"] == 1


def test_429_waits_at_least_the_servers_retry_after():
    with FlakyServer(fail_first=1, mode="429") as server:
        engine = RemoteEngine([server.url], SERVED_CHECKPOINT, RemoteOptions(backoff_seconds=0.01, max_backoff_seconds=5))
        start = time.monotonic()
        engine.generate(requests(1))
        elapsed = time.monotonic() - start
    assert server.completion_calls == 2
    assert elapsed >= 0.3


def test_after_the_last_retry_the_error_names_the_request_and_the_server():
    with FlakyServer(fail_first=100, mode="502") as server:
        engine = RemoteEngine([server.url], SERVED_CHECKPOINT, FAST)
        with pytest.raises(RemoteEngineError) as err:
            engine.generate(requests(1))
    message = str(err.value)
    assert "p0/diagnostic/retry (seed 1000, n 3)" in message and "after 4 attempts" in message
    assert message.count(server.url) == 4 and "HTTP 502" in message
    assert server.completion_calls == 4


def test_client_errors_are_not_retried():
    with FlakyServer(fail_first=100, mode="400") as server:
        engine = RemoteEngine([server.url], SERVED_CHECKPOINT, FAST)
        with pytest.raises(RemoteEngineError, match=r"refused request p0/.*HTTP 400.*injected 400"):
            engine.generate(requests(1))
    assert server.completion_calls == 1


def test_one_failed_request_fails_the_batch_without_running_the_rest():
    with FlakyServer(fail_first=100, mode="400", delay=0.05) as server:
        engine = RemoteEngine([server.url], SERVED_CHECKPOINT, RemoteOptions(max_concurrency=1, backoff_seconds=0.01))
        with pytest.raises(RemoteEngineError, match="HTTP 400"):
            engine.generate(requests(20))
        time.sleep(0.2)
    assert server.completion_calls <= 2  # the queued requests were cancelled


def test_load_goes_to_the_least_busy_server_even_below_the_bound():
    with FlakyServer(delay=0.2) as a, FlakyServer(delay=0.2) as b:
        engine = RemoteEngine([a.url, b.url], SERVED_CHECKPOINT, RemoteOptions(max_concurrency=8))
        engine.generate(requests(8))  # fits on one server, but two servers halve the wait
    assert a.completion_calls + b.completion_calls == 8
    assert min(a.completion_calls, b.completion_calls) >= 3


def test_load_is_spread_and_concurrency_bounded_per_server():
    with FlakyServer(delay=0.05) as a, FlakyServer(delay=0.05) as b:
        engine = RemoteEngine([a.url, b.url], SERVED_CHECKPOINT, RemoteOptions(max_concurrency=3))
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
        engine = RemoteEngine([dead, alive.url], SERVED_CHECKPOINT, RemoteOptions(max_concurrency=2, backoff_seconds=0.01))
        out = engine.generate(requests(10))
    assert len(out) == 10 and alive.completion_calls == 10
    assert alive.peak_in_flight == 2  # the dead server's share of threads did not pile onto the live one
    assert engine.stats()[dead]["model"] is None and "ConnectError" in engine.stats()[dead]["last_error"]


def test_a_server_failing_mid_run_is_failed_over_and_rested():
    with FlakyServer(fail_first=10_000, mode="503") as sick, FlakyServer() as healthy:
        engine = RemoteEngine([sick.url, healthy.url], SERVED_CHECKPOINT,
                              RemoteOptions(max_concurrency=2, max_retries=3, backoff_seconds=0.2, max_backoff_seconds=1))
        out = engine.generate(requests(20))
    assert len(out) == 20 and healthy.completion_calls == 20
    assert sick.completion_calls <= 4  # it was rested after failing instead of taking half of the load


def test_no_reachable_server_fails_with_every_server_named():
    dead = [closed_port_url(), closed_port_url()]
    with pytest.raises(RemoteEngineError, match="no vLLM server reachable") as err:
        RemoteEngine(dead, SERVED_CHECKPOINT, FAST)
    assert all(url in str(err.value) for url in dead)


def test_a_server_still_loading_is_checked_again_later():
    with FlakyServer(models_down=True) as loading, FlakyServer() as ready:
        engine = RemoteEngine([loading.url, ready.url], SERVED_CHECKPOINT, FAST)
        assert engine.stats()[loading.url]["model"] is None
        loading.models_down = False
        for _ in range(50):  # the ready server may absorb a whole batch on a loaded machine: ask until it is used
            time.sleep(0.1)  # past its rest
            engine.generate(requests(12))
            if loading.completion_calls:
                break
    assert engine.stats()[loading.url]["model"] == str(SERVED_CHECKPOINT) and loading.completion_calls > 0


def test_a_server_serving_another_checkpoint_is_refused():
    with FlakyServer(model_id="/models/arith-sft-s1000") as wrong, FlakyServer() as right:
        with pytest.raises(RemoteEngineError) as err:
            RemoteEngine([right.url, wrong.url], SERVED_CHECKPOINT, FAST)
    message = str(err.value)
    assert wrong.url in message and "arith-sft-s1000" in message and "arith-sft-s0300" in message
    assert wrong.completion_calls == right.completion_calls == 0


def test_served_model_name_and_api_key():
    with FlakyServer(model_id="nightly") as server:
        with pytest.raises(RemoteEngineError, match="nightly"):
            RemoteEngine([server.url], SERVED_CHECKPOINT, FAST)  # an alias is not accepted by itself
        options = RemoteOptions(served_model_name="nightly", api_key="s3cret", backoff_seconds=0.01)
        RemoteEngine([server.url], SERVED_CHECKPOINT, options).generate(requests(1))
    assert server.payloads[0]["model"] == "nightly"
    assert server.headers_seen[0]["Authorization"] == "Bearer s3cret"


def test_a_response_with_missing_samples_is_refused():
    with FlakyServer(drop_choice=True) as server:
        engine = RemoteEngine([server.url], SERVED_CHECKPOINT, FAST)
        with pytest.raises(RemoteEngineError, match=r"choice indices \[0, 1\], expected 0..2"):
            engine.generate(requests(1))


def test_generate_rollouts_grades_remote_completions():
    from fixability_dag.core.problems import Problem

    with FlakyServer() as server:
        engine = RemoteEngine([server.url], SERVED_CHECKPOINT, FAST)
        reqs = requests(2)
        problems = {r.problem_id: Problem(r.problem_id, "test", r.prompt, "7") for r in reqs}
        frame = generate_rollouts(engine, reqs, problems)
    assert len(frame) == 6 and frame["mean_logprob"].eq(-0.25).all() and frame["seed"].tolist() == [1000] * 3 + [1001] * 3


def test_urls_models_and_responses_are_validated():
    assert normalize_base_url(" http://h:8000/v1/ ") == "http://h:8000"
    with pytest.raises(ValueError, match="'h:8000' is not an http"):
        normalize_base_url("h:8000")
    with pytest.raises(ValueError, match="listed twice"):
        RemoteEngine(["http://h:1", "http://h:1/v1"], SERVED_CHECKPOINT)
    assert served_model_matches({"id": "x", "root": "/srv/arith-sft-s0300/"}, SERVED_CHECKPOINT)
    assert served_model_matches({"id": "arith-sft-s0300", "root": "/other/place"}, SERVED_CHECKPOINT)
    assert not served_model_matches({"id": "arith-sft-s03000", "root": "/srv/arith-sft-s1000"}, SERVED_CHECKPOINT)
    with pytest.raises(RemoteEngineError, match="neither token_ids nor logprobs"):
        parse_completions({"choices": [{"index": 0, "text": "x"}]}, requests(1, n=1)[0])


def test_chat_completion_choices_are_parsed_with_the_servers_reasoning_kept():
    """``/v1/chat/completions`` answers carry ``message`` and ``logprobs.content``; a server-side reasoning parser's
    ``reasoning`` goes back inside ``<think>`` so the grader reads the answer after it, as for an unparsed reply."""
    [request] = requests(1, n=2)
    body = {"choices": [
        {"index": 1, "message": {"content": "The answer is 7."}, "token_ids": [1, 2, 3], "finish_reason": "stop",
         "logprobs": {"content": [{"logprob": -0.5}, {"logprob": -0.25}, {"logprob": -0.25}]}},
        {"index": 0, "message": {"content": "#### 7", "reasoning": "3 + 4 = 7"}, "finish_reason": "length",
         "logprobs": {"content": [{"logprob": -1.0}, {"logprob": -1.0}]}},
    ]}
    first, second = parse_completions(body, request)
    assert (first.text, first.num_tokens, first.cumulative_logprob) == ("<think>3 + 4 = 7</think>#### 7", 2, -2.0)
    assert (second.text, second.num_tokens, second.cumulative_logprob, second.finish_reason) == ("The answer is 7.", 3, -1.0, "stop")
    assert first.prompt_tokens is None and second.prompt_tokens is None  # no usage: unknown, not 0
    counted = parse_completions({**body, "usage": {"prompt_tokens": 31, "completion_tokens": 5}}, request)
    assert [c.prompt_tokens for c in counted] == [31, 0]  # the prompt is prefilled once for the n choices
