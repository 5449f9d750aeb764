"""The real vLLM engine (CPU build here, same code on GPU) on a committed demo checkpoint."""

import pytest

from fixability_dag.core.interventions import build_requests
from fixability_dag.core.problems import ArithmeticSuiteSpec, arithmetic_suite, problems_by_id
from fixability_dag.core.sampling import Decoding, generate_rollouts
from fixability_dag.engines.inprocess import EngineOptions, RolloutEngineError, VLLMEngine, safe_max_num_seqs

from tests.support import demo_checkpoint

pytestmark = pytest.mark.vllm

PROBLEMS = arithmetic_suite(ArithmeticSuiteSpec(chain_lengths=(1, 2, 5), templates_per_length=1, variants_per_template=2))


@pytest.fixture(scope="module")
def engine():
    e = VLLMEngine(demo_checkpoint(), EngineOptions())
    yield e
    e.close()


def test_kv_sizing_prevents_preemption_by_construction():
    ck = demo_checkpoint()
    seqs = safe_max_num_seqs(ck, EngineOptions(cpu_kvcache_space_gib=4))
    assert 1 <= seqs <= 256
    with pytest.raises(RolloutEngineError, match="cannot hold one sequence"):
        safe_max_num_seqs(ck, EngineOptions(cpu_kvcache_space_gib=0))


def test_n_samples_per_request_with_logprobs_and_finish_reasons(engine):
    requests = build_requests(PROBLEMS, "retry", "diagnostic", 6, Decoding(max_tokens=64), seed=3)
    frame = generate_rollouts(engine, requests, problems_by_id(PROBLEMS))
    assert len(frame) == len(PROBLEMS) * 6
    assert frame.groupby("problem_id")["sample_index"].apply(sorted).map(lambda s: s == list(range(6))).all()
    assert frame["num_tokens"].between(1, 64).all()
    assert frame["cumulative_logprob"].le(0).all() and frame["mean_logprob"].notna().all()
    assert set(frame["finish_reason"]) <= {"stop", "length"}
    # the demo model writes step-by-step answers that the checker can read
    assert frame["answer"].notna().mean() > 0.5
    # vLLM's own prompt length on each request's first sample (prefilled once for the n), 0 on the other five
    prompts = dict(zip([r.problem_id for r in requests], engine.prompt_tokens(requests)))
    first = frame["sample_index"] == 0
    assert (frame.loc[first, "prompt_tokens"] == frame.loc[first, "problem_id"].map(prompts)).all()
    assert frame.loc[first, "prompt_tokens"].gt(10).all() and frame.loc[~first, "prompt_tokens"].eq(0).all()


def test_per_request_seeds_make_samples_reproducible(engine):
    decoding = Decoding(max_tokens=48)
    first = engine.generate(build_requests(PROBLEMS, "retry", "diagnostic", 4, decoding, seed=11))
    again = engine.generate(build_requests(PROBLEMS, "retry", "diagnostic", 4, decoding, seed=11))
    other = engine.generate(build_requests(PROBLEMS, "retry", "diagnostic", 4, decoding, seed=12))
    texts = lambda out: [[c.text for c in group] for group in out]  # noqa: E731
    assert texts(first) == texts(again)
    assert texts(first) != texts(other)


def test_long_few_shot_prompts_in_one_large_batch(engine):
    """Many long prompts at once: the batch that used to split prompts (chunked prefill) and kill a seeded engine."""
    problems = arithmetic_suite(ArithmeticSuiteSpec(chain_lengths=(5, 6), templates_per_length=4, variants_per_template=4))
    requests = build_requests(problems, "few_shot", "label", 8, Decoding(max_tokens=96), seed=5, exemplar_pool=problems)
    assert min(len(r.prompt) for r in requests) > 150
    out = engine.generate(requests)
    assert [len(group) for group in out] == [8] * len(problems)


def test_a_lazy_engine_counts_prompts_and_knows_its_context_without_starting(engine):
    """What the audit asks before generating (prompt lengths for fit_context, max_model_len) comes from the
    checkpoint's tokenizer and config: the same numbers vLLM's own tokenizer and config give the running engine."""
    requests = build_requests(PROBLEMS, "few_shot", "label", 2, Decoding(max_tokens=48), seed=3, exemplar_pool=PROBLEMS)
    lazy = VLLMEngine(demo_checkpoint(), EngineOptions(), start=False)
    started = []
    lazy.on_start = started.append
    counts = lazy.prompt_tokens(requests)
    assert counts == [len(engine.llm.get_tokenizer().encode(r.prompt)) for r in requests]
    assert lazy.max_model_len == engine.max_model_len
    assert lazy.generate([]) == [] and not lazy.started and started == []
    lazy.close()  # nothing to shut down
    assert not lazy.started


def test_greedy_is_one_deterministic_sample(engine):
    [request] = build_requests(PROBLEMS[:1], "greedy", "label", 8, Decoding(max_tokens=48), seed=1)
    assert request.n == 1
    assert engine.generate([request])[0][0].text == engine.generate([request])[0][0].text


@pytest.mark.parametrize("verbosity", ["", "INFO"])
def test_missing_checkpoint_is_a_clear_error_reported_once(tmp_path, monkeypatch, verbosity):
    """The cause's type and text are in the message; its 100-line vLLM traceback is attached only when asked."""
    monkeypatch.setenv("FIXABILITY_LOG_LEVEL", verbosity)
    (tmp_path / "config.json").write_text('{"model_type": "llama", "num_hidden_layers": 1, "num_attention_heads": 1, "hidden_size": 8, "max_position_embeddings": 64}')
    with pytest.raises(RolloutEngineError, match="could not load checkpoint") as err:
        VLLMEngine(tmp_path, EngineOptions())
    assert "Error: " in str(err.value)  # "...: OSError: ..." names the cause
    if verbosity:
        assert err.value.__cause__ is not None
    else:
        assert err.value.__cause__ is None and err.value.__suppress_context__


def test_kv_sizing_reads_each_family_s_own_config_keys():
    """GPT-2 names its sizes n_layer / n_head / n_embd / n_positions: the KV estimate must see all four layers."""
    from fixability_dag.engines.inprocess import _model_config, kv_bytes_per_token

    from tests.support import ORGANISM_CHECKPOINTS

    gpt2, llama = (ORGANISM_CHECKPOINTS / f"org-{f}-seed7-rft-s1700" for f in ("gpt2", "llama"))
    assert kv_bytes_per_token(gpt2) == kv_bytes_per_token(llama) == 2 * 4 * 4 * 32 * 4  # both: 4 layers, 4 heads of 32
    assert _model_config(gpt2)["max_position_embeddings"] == 512  # n_positions, not the 4096 fallback
