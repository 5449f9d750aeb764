"""The tool loop's logic on a scripted character-level engine (stops, budgets and seeds as vLLM handles them); the
real engines are in test_tools_vllm.py and tests/system/test_remote_engine.py."""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Callable, Sequence

import pytest

from fixability_dag.core.calculator import calculate
from fixability_dag.core.interventions import CATALOG, DEFAULT_INTERVENTIONS, build_requests
from fixability_dag.core.problems import Problem
from fixability_dag.core.prompts import ChatMessage, ChatPrompt
from fixability_dag.core.sampling import Completion, Decoding, GenerationRequest, derive_seed, prompt_share, refuse_tool_requests
from fixability_dag.engines.tools import MAX_PLAIN_CONTINUATIONS, ToolEngine, pending_expression

from tests.support import GSM8K_ROWS

Writer = Callable[[str, int], str | None]
"""Next character after ``prompt`` (the prompt plus what the call wrote so far) for a sample seeded with the int,
or None for end of sequence."""


class CharEngine:
    """One character = one token. Stop strings as vLLM applies them: the text ends before the stop string, whose
    characters are counted as generated, and ``stop_reason`` names it. Samples are seeded by (seed, index)."""

    def __init__(self, writer: Writer):
        self.writer = writer
        self.calls: list[list[GenerationRequest]] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        """The prompt's characters are its tokens, reported on each request's first sample (vLLM prefills once)."""
        self.calls.append(list(requests))
        return [[dataclasses.replace(self._sample(r, r.seed * 1000 + i), prompt_tokens=prompt_share(_length(r.prompt), i))
                 for i in range(r.n)] for r in requests]

    def _sample(self, r: GenerationRequest, seed: int) -> Completion:
        out, logprob = "", 0.0
        while len(out) < r.decoding.max_tokens:
            char = self.writer(r.prompt + out, seed)
            if char is None:
                return Completion(out, len(out) + 1, logprob - 0.1, "stop")  # the EOS token is generated too
            out += char
            logprob -= 0.1
            stop = next((s for s in r.decoding.stop if out.endswith(s)), None)
            if stop is not None:
                return Completion(out[: -len(stop)], len(out), logprob, "stop", stop_reason=stop)
        return Completion(out, len(out), logprob, "length")


def _length(prompt) -> int:
    return len(prompt) if isinstance(prompt, str) else len(repr(prompt))  # a chat prompt: any fixed count will do


def scripted(plan: Callable[[str, random.Random], str]) -> Writer:
    """A writer that follows ``plan(body, rng)``, the whole intended body after ``A: `` given what is written; the
    plan's draws are the same for every character of one call (its rng is seeded by the sample's seed)."""
    def write(prompt: str, seed: int) -> str | None:
        body = prompt.split("A: ", 1)[1]
        target = plan(body, random.Random(seed))
        return target[len(body)] if len(body) < len(target) and target.startswith(body) else None
    return write


def product_plan(a: int, b: int, wrong: int) -> Callable[[str, random.Random], str]:
    """Writes ``<<a*b=R>>R`` then ``#### R``; R is what the tool wrote after ``=``, else ``wrong``."""
    head = f"<<{a}*{b}="

    def plan(body: str, rng: random.Random) -> str:
        told = re.match(re.escape(head) + r"([^>]*)>>", body)
        r = told.group(1) if told else str(wrong)
        return f"{head}{r}>>{r}\n#### {r}"
    return plan


def request(prompt: str = "Q: 23*17\nA: ", n: int = 1, tool: str | None = "calculator", seed: int = 7,
            max_tokens: int = 64, max_tool_calls: int = 8, first_index: int = 0) -> GenerationRequest:
    decoding = Decoding(max_tokens=max_tokens, tool=tool, max_tool_calls=max_tool_calls)
    return GenerationRequest("p1", "label", "calculator" if tool else "retry", prompt, n, seed, decoding, first_index)


def test_the_tool_result_replaces_what_the_model_would_have_computed():
    engine = CharEngine(scripted(product_plan(23, 17, wrong=392)))
    [[plain]] = engine.generate([request(tool=None)])
    assert plain.text == "<<23*17=392>>392\n#### 392" and plain.tool_calls == 0
    [[tooled]] = ToolEngine(engine).generate([request()])
    assert tooled.text == "<<23*17=391>>391\n#### 391"
    assert (tooled.tool_calls, tooled.tool_refusals, tooled.finish_reason) == (1, 0, "stop")
    tool_text = "391>>"  # written by the tool, not generated
    assert tooled.num_tokens == len(tooled.text) - len(tool_text) + 1  # + the EOS token
    assert tooled.cumulative_logprob == pytest.approx(-0.1 * tooled.num_tokens)
    first, second = engine.calls[1], engine.calls[2]
    assert first[0].decoding.stop == ("\n\n", "=") and first[0].decoding.tool is None and first[0].seed == 7
    assert second[0].prompt == "Q: 23*17\nA: <<23*17=391>>" and second[0].decoding.max_tokens == 64 - len("<<23*17=")
    # every prompt the engine was asked to read: the request's, then the continuation's (prompt + text so far)
    assert tooled.prompt_tokens == len(first[0].prompt) + len(second[0].prompt)


def test_prompt_tokens_count_the_shared_prompt_once_and_each_continuation_per_sample():
    engine = CharEngine(scripted(product_plan(23, 17, wrong=392)))
    [samples] = ToolEngine(engine).generate([request(n=3)])
    prompt, continuation = len("Q: 23*17\nA: "), len("Q: 23*17\nA: <<23*17=391>>")
    assert [c.prompt_tokens for c in samples] == [prompt + continuation, continuation, continuation]
    assert len(engine.calls[0]) == 1 and engine.calls[0][0].n == 3  # the first call: one request for all three
    [plain] = ToolEngine(engine).generate([request(n=3, tool=None)])  # no tool: the inner engine's counts as they are
    assert [c.prompt_tokens for c in plain] == [prompt, 0, 0]


def test_a_call_without_a_prompt_count_makes_the_samples_count_unknown():
    class Silent(CharEngine):
        def generate(self, requests):
            out = super().generate(requests)
            return [[dataclasses.replace(c, prompt_tokens=None) for c in o] for o in out] if len(self.calls) > 1 else out
    [[c]] = ToolEngine(Silent(scripted(product_plan(23, 17, wrong=392)))).generate([request()])
    assert c.tool_calls == 1 and c.prompt_tokens is None  # the continuation did not say: the sum is unknown, not low


def test_a_refused_expression_gives_the_equals_back_and_the_model_goes_on():
    engine = CharEngine(scripted(lambda body, rng: "<<23*x=391>>391\n#### 391"))
    [[c]] = ToolEngine(engine).generate([request()])
    assert c.text == "<<23*x=391>>391\n#### 391" and (c.tool_calls, c.tool_refusals) == (1, 1)
    assert c.num_tokens == len(c.text) + 1  # every character generated by the model


def test_an_equals_outside_an_annotation_just_continues():
    engine = CharEngine(scripted(lambda body, rng: "23+45=68\n68-12=56\n#### 56"))
    [[c]] = ToolEngine(engine).generate([request()])
    assert c.text == "23+45=68\n68-12=56\n#### 56" and c.tool_calls == 0 and c.num_tokens == len(c.text) + 1
    assert len(engine.calls) == 3  # two stops on '=', each continued


def test_a_prompt_that_ends_inside_an_annotation_is_computed():
    engine = CharEngine(scripted(lambda body, rng: "<<12*12=" + ("144>>144" if "144>>" in body else "140>>140")))
    [[c]] = ToolEngine(engine).generate([request(prompt="Q: 12*12\nA: <<12*")])
    assert c.text == "12=144>>144" and c.tool_calls == 1


def test_a_prompt_that_ends_at_the_equals_of_an_annotation_gets_its_call_first():
    engine = CharEngine(scripted(product_plan(23, 17, wrong=392)))
    [samples] = ToolEngine(engine).generate([request(prompt="Q: 23*17\nA: <<23*17=", n=2)])
    assert [c.text for c in samples] == ["391>>391\n#### 391"] * 2 and all(c.tool_calls == 1 for c in samples)
    assert engine.calls[0][0].prompt == "Q: 23*17\nA: <<23*17=391>>" and engine.calls[0][0].n == 2
    assert samples[0].num_tokens == len("391\n#### 391") + 1
    [[capped]] = ToolEngine(engine).generate([request(prompt="Q: 23*17\nA: <<23*17=", max_tool_calls=0)])
    assert capped.text == "392>>392\n#### 392" and capped.tool_calls == 0


ANNOTATION = re.compile(r"<<([^=<>]*)=([^<>]*)>>")


def test_gsm8k_solutions_get_every_annotation_computed():
    """Real GSM8K rows through the GSM8K loader: a model that writes each reference solution but cannot compute
    (every annotation's result 7777) gets every annotation right from the tool, none refused."""
    for problem in GSM8K_ROWS[:12]:
        solution = problem.reference_solution

        def plan(body: str, rng: random.Random, solution=solution) -> str:
            out, pos = "", 0
            for m in ANNOTATION.finditer(solution):
                out += solution[pos:m.start()] + f"<<{m.group(1)}="
                told = re.match(re.escape(out) + r"([^<>]*)>>", body)
                out += (told.group(1) if told else "7777") + ">>"
                pos = m.end()
            return out + solution[pos:]

        engine = CharEngine(scripted(plan))
        [[plain]] = engine.generate([request(prompt=problem.prompt, tool=None, max_tokens=2000)])
        [[c]] = ToolEngine(engine).generate([request(prompt=problem.prompt, max_tokens=2000)])
        expected = ANNOTATION.findall(solution)
        assert [r for _, r in ANNOTATION.findall(plain.text)] == ["7777"] * len(expected)
        assert [(e, r) for e, r in ANNOTATION.findall(c.text)] == [(e, calculate(e)) for e, _ in expected]
        assert (c.tool_calls, c.tool_refusals) == (len(expected), 0) and c.text.endswith(f"#### {problem.gold_answer}")


def test_tool_calls_stop_at_the_cap_and_the_model_computes_the_rest():
    steps = [(11, 12), (13, 14), (15, 16)]

    def plan(body: str, rng: random.Random) -> str:
        out = ""
        for a, b in steps:
            head = f"<<{a}*{b}="
            told = re.match(re.escape(out + head) + r"(\d+)>>", body)
            r = told.group(1) if told else str(a * b + 1)
            out += f"{head}{r}>>{r}\n"
        return out + "#### done"

    [[c]] = ToolEngine(CharEngine(scripted(plan))).generate([request(max_tool_calls=2, max_tokens=200)])
    assert c.text.splitlines()[:3] == ["<<11*12=132>>132", "<<13*14=182>>182", "<<15*16=241>>241"]
    assert c.tool_calls == 2
    [[none]] = ToolEngine(CharEngine(scripted(plan))).generate([request(max_tool_calls=0, max_tokens=200)])
    assert none.tool_calls == 0 and none.text.startswith("<<11*12=133>>133")


def test_endless_equals_end_after_the_continuation_cap():
    engine = CharEngine(scripted(lambda body, rng: "1=" * 500))
    [[c]] = ToolEngine(engine).generate([request(max_tokens=400)])
    assert len(engine.calls) == MAX_PLAIN_CONTINUATIONS + 1  # 32 calls end on '=', then one without it
    assert c.num_tokens == 400 and c.finish_reason == "length" and c.text == ("1=" * 200)


def test_max_tokens_bounds_the_generated_tokens_of_all_calls_together():
    engine = CharEngine(scripted(lambda body, rng: "<<2*3=6>>6 " * 50))
    for budget in (1, 7, 8, 9, 30):
        [[c]] = ToolEngine(engine).generate([request(max_tokens=budget)])
        assert c.num_tokens == budget and c.finish_reason == "length"
    [[c]] = ToolEngine(engine).generate([request(max_tokens=6)])
    assert c.text == "<<2*3=" and c.tool_calls == 0  # stopped on '=' with nothing left: no call, cut by length


def noisy_plan(body: str, rng: random.Random) -> str:
    """Products whose wrong answers depend on the seed: every sample differs, each is reproducible."""
    heads = ["<<23*17=", "<<19*29="]
    out = ""
    for head in heads:
        told = re.match(re.escape(out + head) + r"(\d+)>>", body)
        r = told.group(1) if told else str(rng.randint(0, 999))
        out += f"{head}{r}>>{r} "
    return out + f"tail{rng.randint(0, 9)}"


def test_each_sample_is_reproducible_whatever_else_is_in_the_batch():
    alone = ToolEngine(CharEngine(scripted(noisy_plan))).generate([request(n=4, seed=11)])[0]
    other = request(prompt="Q: other\nA: ", n=3, seed=5)
    engine = CharEngine(scripted(noisy_plan))
    mixed = ToolEngine(engine).generate([other, request(tool=None, seed=3), request(n=4, seed=11)])
    assert [c.text for c in mixed[2]] == [c.text for c in alone]
    assert len({c.text for c in alone}) > 1  # the samples differ: their continuations are seeded per sample
    assert all(c.tool_calls == 2 for c in alone)
    seeds = {r.seed for call in engine.calls[1:] for r in call if r.prompt.startswith("Q: 23*17")}
    assert seeds == {derive_seed(11, f"sample{i}", f"call{k}") for i in range(4) for k in (1, 2)}
    # a block that starts at sample 4 seeds its continuations by the stored sample index
    engine = CharEngine(scripted(noisy_plan))
    ToolEngine(engine).generate([request(n=2, seed=11, first_index=4)])
    assert {r.seed for r in engine.calls[1]} == {derive_seed(11, f"sample{i}", "call1") for i in (4, 5)}


def test_plain_requests_pass_through_untouched():
    engine = CharEngine(scripted(product_plan(23, 17, wrong=392)))
    plain = [request(tool=None, n=2), request(tool=None, seed=8)]
    assert ToolEngine(engine).generate(plain) == CharEngine(engine.writer).generate(plain)
    assert engine.calls == [plain]


def test_bad_tool_requests_are_refused_with_the_reason():
    engine = ToolEngine(CharEngine(scripted(product_plan(2, 3, 7))))
    with pytest.raises(ValueError, match="unknown tool 'abacus'"):
        engine.generate([request(tool="abacus")])
    bad = dataclasses.replace(request(), decoding=Decoding(stop=("=",), tool="calculator"))
    with pytest.raises(ValueError, match="cannot have '=' among its own stop strings"):
        engine.generate([bad])
    with pytest.raises(ValueError, match="wrap it in fixability_dag.engines.tools.ToolEngine"):
        refuse_tool_requests([request()], "VLLMEngine")


def test_pending_expression_reads_only_an_open_annotation():
    assert pending_expression("x <<2*3") == "2*3"
    assert pending_expression("<<2*3=6>>6 then 4+4") is None
    assert pending_expression("no annotation") is None
    assert pending_expression("<<1+1=2>>2 <<(3+4)*2") == "(3+4)*2"


def test_the_calculator_is_in_the_catalog_but_not_in_the_defaults():
    spec = CATALOG["calculator"]
    assert spec.kind == "tool" and "calculator" not in DEFAULT_INTERVENTIONS
    problem = Problem("p", "s", "23*17", "391", ("23*17=391",))
    [r] = build_requests([problem], "calculator", "label", 4, Decoding(max_tool_calls=3), seed=1)
    assert r.decoding.tool == "calculator" and r.decoding.max_tool_calls == 3 and r.prompt == problem.prompt


class ChatCharEngine(CharEngine):
    """CharEngine over chat prompts: a conversation reads as the demo frame (user turn as ``Q:``, the assistant
    message it continues after ``A: ``), as the demo checkpoint's chat template renders it."""

    def _sample(self, r: GenerationRequest, seed: int) -> Completion:
        assert isinstance(r.prompt, ChatPrompt), "a chat request stays a chat request through the tool loop"
        user = next(m.content for m in reversed(r.prompt.messages) if m.role == "user")
        flat = f"Q: {user}\nA: " + (r.prompt.messages[-1].content if r.prompt.continue_final_message else "")
        return super()._sample(dataclasses.replace(r, prompt=flat), seed)


def test_chat_prompts_run_the_tool_loop_in_the_assistant_message():
    """In chat mode the tool's result and the model's text so far continue the assistant message (never a new
    turn), and the samples equal the completion-mode ones of the same frame."""
    plan = product_plan(23, 17, wrong=392)
    text = ToolEngine(CharEngine(scripted(plan))).generate([request(n=3)])
    chat_engine = ChatCharEngine(scripted(plan))
    chat = ToolEngine(chat_engine).generate([request(ChatPrompt((ChatMessage("user", "23*17"),)), n=3)])
    assert [(c.text, c.num_tokens, c.tool_calls) for c in chat[0]] == [(c.text, c.num_tokens, c.tool_calls) for c in text[0]]
    assert chat[0][0].text == "<<23*17=391>>391\n#### 391"
    continuations = [r.prompt for call in chat_engine.calls[1:] for r in call]
    assert continuations and all(p.continue_final_message and len(p.messages) == 2 for p in continuations)
    assert continuations[0].messages[-1].content == "<<23*17=391>>"


def test_a_chat_prefix_that_ends_in_an_open_annotation_gets_its_call_first():
    prefix = ChatPrompt((ChatMessage("user", "23*17"), ChatMessage("assistant", "<<23*17=")))
    out = ToolEngine(ChatCharEngine(scripted(product_plan(23, 17, wrong=392)))).generate([request(prefix)])
    assert out[0][0].text.startswith("391>>") and out[0][0].tool_calls == 1
