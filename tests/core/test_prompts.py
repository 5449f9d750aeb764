"""Prompt formats: completion mode is exactly what the pipeline always sent; chat mode composes every intervention."""

import pytest

from fixability_dag.core.interventions import build_requests, choose_exemplars, solution_prefix_text
from fixability_dag.core.problems import arithmetic_suite
from fixability_dag.core.prompts import ChatMessage, ChatPrompt, PromptFormat
from fixability_dag.core.sampling import Decoding, split_by_context
from fixability_dag.pipeline.config import AuditConfig
from fixability_dag.pipeline.resume import request_hash

PROBLEMS = arithmetic_suite()
TARGET = PROBLEMS[20]  # a two-step chain: the prefix is its first step
CHAT = PromptFormat(chat=True, system_prompt="Solve it.")

# request_hash values computed with the code before prompt formats existed (main at 8403c6b): stored rows resume.
# few_shot: recomputed after e77eb41 ranked exemplars by shared rare symbols (other exemplars, so other prompts, by
# design; CODE_VERSION 0.6.0 marks the change), still with the completion frame of 8403c6b.
LEGACY_HASHES = {
    "retry": ["1f8cbd39fe6f0e5f1ce27ab61336ffb2", "235ce13e91066ae3124df91c4c250ac1"],
    "few_shot": ["5442517bb33d8352968311979e5a66d5", "e34c1ddfdc42da3e8a09de2751c1cefa"],
    "solution_prefix": ["479986fa9be0f7bd49ccd0c4cbbc1183", "5d278805a260764296981f81d1ac6edb"],
    "greedy": ["1540e121fcd6997f12454ec7ead1fa60"],
}


def _requests(name, fmt=PromptFormat()):
    return build_requests([TARGET], name, "label", 8, Decoding(max_tokens=64), seed=3, exemplar_pool=PROBLEMS,
                          block=None if name == "greedy" else 4, prompt_format=fmt)


@pytest.mark.parametrize("name", sorted(LEGACY_HASHES))
def test_completion_mode_requests_keep_their_hashes(name):
    assert [request_hash(r, "fp") for r in _requests(name)] == LEGACY_HASHES[name]


def test_default_settings_keep_the_config_hash_and_chat_changes_it():
    assert AuditConfig().config_hash() == "de951b0d4b2a924b"  # main at 8403c6b, before the prompt settings
    assert AuditConfig(n_samples=4).config_hash() == "6d4244e4536b31f1"
    assert AuditConfig(chat=True).config_hash() != AuditConfig().config_hash()
    assert AuditConfig(stop=("\n\n",)).config_hash() != AuditConfig().config_hash()  # explicit: hashed


def test_chat_mode_composes_every_intervention():
    [retry] = _requests("greedy", CHAT)
    assert retry.prompt == ChatPrompt((ChatMessage("system", "Solve it."), ChatMessage("user", TARGET.question)))
    assert retry.prompt.add_generation_prompt and not retry.prompt.continue_final_message

    prefix = _requests("solution_prefix", CHAT)[0].prompt
    assert prefix.messages[-1] == ChatMessage("assistant", solution_prefix_text(TARGET))
    assert prefix.continue_final_message and not prefix.add_generation_prompt

    shots = _requests("few_shot", CHAT)[0].prompt.messages
    exemplars = choose_exemplars(TARGET, PROBLEMS)
    assert [m.role for m in shots] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert [m.content for m in shots[1:5]] == [exemplars[0].question, exemplars[0].reference_solution,
                                              exemplars[1].question, exemplars[1].reference_solution]
    assert _requests("temp_high", CHAT)[0].decoding.temperature == 1.3  # decoding changes as they are


def test_a_template_frames_the_question_literally_and_stops_follow_the_mode():
    fmt = PromptFormat(chat=True, template="{question}\nPut your final answer within \\boxed{}.")
    assert fmt.render(TARGET).messages[-1].content == TARGET.question + "\nPut your final answer within \\boxed{}."
    assert PromptFormat().stops == ("\n\n",) and PromptFormat(chat=True).stops == ()
    assert AuditConfig(chat=True).decoding.stop == () and AuditConfig().decoding.stop == ("\n\n",)
    assert AuditConfig(chat=True, stop=("</answer>",)).decoding.stop == ("</answer>",)
    completion = PromptFormat(template="Question: {question}\nAnswer:")
    assert completion.render(TARGET) == f"Question: {TARGET.question}\nAnswer:"


@pytest.mark.parametrize("settings, key", [
    ({"prompt_template": "Q: {q}"}, "prompt_template"),
    ({"system_prompt": "Be brief."}, "system_prompt"),
    ({"chat": True, "stop": [""]}, "stop"),
])
def test_bad_prompt_settings_are_refused_by_name(settings, key):
    with pytest.raises(ValueError, match=key):
        AuditConfig.from_mapping(settings)


def test_requests_that_do_not_fit_the_context_are_split_off_once_per_group():
    requests = _requests("few_shot") + _requests("retry")
    lengths = [600, 600, 20, 20]  # few_shot's two blocks share its prompt
    fitting, skipped = split_by_context(requests, lengths, max_model_len=512)
    assert fitting == requests[2:]
    assert len(skipped) == 1 and skipped[0]["intervention"] == "few_shot" and skipped[0]["prompt_tokens"] == 600
    assert "600 tokens + max_tokens 64 = 664 exceeds the context of 512" in skipped[0]["reason"]
    # the whole max_tokens must fit, not only one generated token
    assert split_by_context(requests[2:], [449, 449], 512)[1] and not split_by_context(requests[2:], [448, 448], 512)[1]


def test_the_prompt_variant_is_the_system_turn_in_chat_and_a_leading_line_in_completion_mode():
    from fixability_dag.core.interventions import DEFAULT_INTERVENTIONS, STEPWISE_INSTRUCTION

    [text] = build_requests([TARGET], "stepwise_prompt", "label", 1, Decoding(), seed=3)
    assert text.prompt == STEPWISE_INSTRUCTION + "\n" + PromptFormat().render(TARGET)
    [chat] = build_requests([TARGET], "stepwise_prompt", "label", 1, Decoding(), seed=3, prompt_format=CHAT)
    assert chat.prompt.messages[0] == ChatMessage("system", "Solve it.\n\n" + STEPWISE_INSTRUCTION)
    assert chat.prompt.messages[1:] == CHAT.render(TARGET).messages[1:]
    assert "stepwise_prompt" not in DEFAULT_INTERVENTIONS  # opt-in: default configs keep their hashes
