"""Chat mode and the context check on the real vLLM engine, over a demo checkpoint whose tokenizer has a chat template.

The template (tests.support.DEMO_CHAT_TEMPLATE) renders a conversation in the frame the demo model was trained on,
so the same seed must give the same samples in chat and completion mode: the chat path is then shown to reach the
model token for token, few-shot turns and a continued assistant prefix included.
"""

import pytest

from fixability_dag.core.interventions import build_requests
from fixability_dag.core.problems import ArithmeticSuiteSpec, arithmetic_suite, problems_by_id
from fixability_dag.core.prompts import PromptFormat
from fixability_dag.core.sampling import Decoding, generate_rollouts
from fixability_dag.engines.inprocess import EngineOptions, RolloutEngineError, VLLMEngine
from fixability_dag.pipeline import audit
from fixability_dag.pipeline.config import AuditConfig

from tests.support import chat_checkpoint

pytestmark = pytest.mark.vllm

PROBLEMS = arithmetic_suite(ArithmeticSuiteSpec(chain_lengths=(1, 2), templates_per_length=2, variants_per_template=2))
LONG = arithmetic_suite(ArithmeticSuiteSpec(chain_lengths=(1, 20), templates_per_length=2, variants_per_template=2,
                                            name="long"))
"""Few-shot prompts of the 20-step chains (two exemplars of 20 worked steps each) exceed the 512-token context."""
SAME_STOP = Decoding(max_tokens=48, stop=("\n\n",))


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    e = VLLMEngine(chat_checkpoint(tmp_path_factory.mktemp("chat") / "arith-sft-s2000"), EngineOptions())
    yield e
    e.close()


def _pair(name, decoding=SAME_STOP, problems=PROBLEMS, **fmt):
    """The same requests (same seeds) in completion mode and in chat mode."""
    return [build_requests(problems, name, "label", 3, decoding, seed=7, exemplar_pool=problems,
                           prompt_format=PromptFormat(**f)) for f in ({}, {"chat": True, **fmt})]


def _texts(out):
    return [[c.text for c in group] for group in out]


def test_the_real_engine_answers_in_chat_mode(engine):
    completion, chat = _pair("retry")
    assert engine.prompt_tokens(chat) == engine.prompt_tokens(completion)
    assert _texts(engine.generate(chat)) == _texts(engine.generate(completion))
    # graded as the audit grades: the demo model never learnt EOS, so it is given its blank-line stop as a setting
    cfg = AuditConfig(chat=True, stop=("\n\n",), max_tokens=64)
    requests = build_requests(PROBLEMS, "retry", "diagnostic", 4, cfg.decoding, seed=3, prompt_format=cfg.prompt_format)
    frame = generate_rollouts(engine, requests, problems_by_id(PROBLEMS))
    assert len(frame) == 4 * len(PROBLEMS) and frame["answer"].notna().mean() > 0.5


def test_few_shot_turns_a_continued_prefix_and_the_system_turn_reach_the_model(engine):
    [retry] = [engine.prompt_tokens(r) for r in _pair("retry")[1:]]
    completion, chat = _pair("few_shot")
    assert engine.prompt_tokens(chat) == engine.prompt_tokens(completion)
    assert all(shots > base + 20 for shots, base in zip(engine.prompt_tokens(chat), retry))
    assert _texts(engine.generate(chat)) == _texts(engine.generate(completion))

    completion, chat = _pair("solution_prefix")
    assert chat[0].prompt.continue_final_message
    assert all(p > base for p, base in zip(engine.prompt_tokens(chat), retry))  # the prefix is in the prompt ...
    assert _texts(engine.generate(chat)) == _texts(engine.generate(completion))  # ... and is continued, not re-opened

    [with_system] = [engine.prompt_tokens(r) for r in _pair("retry", system_prompt="Add and subtract.")[1:]]
    assert all(s > base for s, base in zip(with_system, retry))


def test_prompts_longer_than_the_context_are_skipped_and_stored_with_their_reason(engine, sqlite_store):
    assert engine.max_model_len == 512
    sqlite_store.register_checkpoint("ck", "/nowhere", "fp")
    sqlite_store.upsert_problems(LONG)
    requests = build_requests(LONG, "few_shot", "probe", 2, Decoding(max_tokens=32), seed=1, exemplar_pool=LONG)
    long_ids = {p.problem_id for p in LONG if p.difficulty == 20}
    frame = audit.sample_phase(sqlite_store, engine, "ck", "probe", requests, LONG, run_id="run")
    assert set(frame["problem_id"]) == {p.problem_id for p in LONG} - long_ids  # the rest of the step proceeds
    assert frame.attrs["skipped_requests"] == len(long_ids) == 4
    skipped = sqlite_store.read("skipped_requests", "ck")
    assert set(skipped["problem_id"]) == long_ids and set(skipped["intervention"]) == {"few_shot"}
    assert (skipped["prompt_tokens"] + 32 > 512).all() and skipped["reason"].str.contains("exceeds the context").all()

    # called directly, the engine refuses such a prompt naming the problem and the intervention
    too_long = next(r for r in requests if r.problem_id in long_ids)
    with pytest.raises(RolloutEngineError, match=f"problem {too_long.problem_id}, intervention few_shot"):
        engine.generate([too_long])
