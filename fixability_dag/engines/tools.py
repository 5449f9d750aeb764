"""Tool interventions: a wrapper that lets any rollout engine's samples call a tool (the ``calculator``) mid-generation.

Why a wrapper: a tool call is a stop, a computation and a continuation, which every engine can do with what it
already has (stop strings, seeds, prompts). :class:`ToolEngine` wraps any
:class:`~fixability_dag.core.sampling.RolloutEngine` (the in-process :class:`~fixability_dag.engines.inprocess.VLLMEngine`,
the remote :class:`~fixability_dag.engines.remote.RemoteEngine`, a test's fake) and passes plain requests through
untouched; requests whose ``decoding.tool`` is set get the loop below.

The protocol is GSM8K's calculator annotation, ``23*17=<<23*17=391>>391``: the model opens ``<<``, writes an
expression and ``=``; the tool writes the result and ``>>``; the model goes on (it was trained to copy the result
after ``>>``). Per sample:

1. The first call is the request itself (its ``n`` samples, its seed) with ``=`` added to its stop strings. A
   prompt that ends at the ``=`` of an open annotation (a solution prefix ``...<<57+38=``) gets that tool call
   first, and its result opens every sample's text.
2. A sample that stops on ``=`` gets its ``=`` back (vLLM drops the stop string from the text). If the text since
   the last ``<<`` (prompt included, so a prompt may end inside an annotation; in chat mode the assistant message
   it continues, :func:`~fixability_dag.core.prompts.answer_so_far`) has no ``>>``, that text is the
   expression: the tool computes it and ``result>>`` is appended; when the tool refuses
   (:class:`~fixability_dag.core.calculator.CalculatorRefusal`), nothing is appended and the model continues by
   itself (a call with a refusal). A ``=`` outside an annotation (``23+45=``) just continues.
3. Each continuation is a request of ``n=1`` for that sample, prompt = original prompt + text so far (in chat mode:
   the text so far continues the assistant message, :func:`~fixability_dag.core.prompts.continued`), seed
   ``derive_seed(request seed, "sample<i>", "call<k>")`` (``i`` the stored sample index, ``k`` the continuation
   number), so every sample is reproducible on its own whatever else is in the batch. Its ``max_tokens`` is what
   is left of the request's: ``max_tokens`` bounds the tokens *generated* across all calls of a sample.
4. It always ends: after ``max_tool_calls`` tool calls (refusals included) or :data:`MAX_PLAIN_CONTINUATIONS`
   ``=`` outside annotations, the sample's next call runs without the ``=`` stop and is its last; a call that
   leaves no token budget ends the sample with ``finish_reason`` ``length``.

The returned :class:`~fixability_dag.core.sampling.Completion` holds the whole text (model and tool), ``num_tokens``
= every token the model generated over all calls (the tool's text is not generated, so an intervention's cost in
tokens counts exactly the model's work), ``cumulative_logprob`` summed over the calls (``None`` if any call lacks
it), the last call's ``finish_reason``, ``tool_calls`` / ``tool_refusals``, and ``prompt_tokens``: the sample's
share of the first call's prompt plus the whole prompt of every continuation, since each is a request the engine
reads anew (with prefix caching most of it comes from cache; the count is what was asked, before the cache).
Generated tokens are an intervention's cost in the rescue tables; prompt tokens are reported beside them per phase
and intervention (``audit_runs``, the asset metadata), so a long few-shot prompt or a chatty tool loop shows.

Known approximation: when the token that contained ``=`` also held characters after it, vLLM cuts them from the text
(they were generated and are counted), and the continuation regenerates from the ``=``; the prompt of a continuation
is re-tokenized from text, which may split it differently than the model's own tokens did.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from fixability_dag.core.calculator import CalculatorRefusal, calculate
from fixability_dag.core.prompts import answer_so_far, continued
from fixability_dag.core.sampling import Completion, GenerationRequest, RolloutEngine, derive_seed

TOOLS: dict[str, Callable[[str], str]] = {"calculator": calculate}
"""Tool name -> function from the expression to the text written before ``>>`` (raises CalculatorRefusal)."""

TOOL_STOP = "="
OPEN, CLOSE = "<<", ">>"
MAX_PLAIN_CONTINUATIONS = 32
"""Continuations on a ``=`` outside an annotation per sample, at most (a chain of ``a+b=c`` lines stops at each)."""


def pending_expression(context: str) -> str | None:
    """The text after the last ``<<`` of ``context`` when that annotation is still open, else ``None``."""
    start = context.rfind(OPEN)
    if start < 0:
        return None
    tail = context[start + len(OPEN):]
    return None if CLOSE in tail else tail


def check_tool_request(request: GenerationRequest) -> None:
    d = request.decoding
    if d.tool not in TOOLS:
        raise ValueError(f"request {request.problem_id}/{request.intervention} asks for unknown tool {d.tool!r}; "
                         f"known: {', '.join(TOOLS)}")
    if TOOL_STOP in d.stop:
        raise ValueError(f"request {request.problem_id}/{request.intervention}: a tool request cannot have "
                         f"{TOOL_STOP!r} among its own stop strings (the tool loop stops there)")


@dataclasses.dataclass
class _Sample:
    """One sample of a tool request, across its calls."""

    request: GenerationRequest
    index: int
    text: str = ""
    tokens: int = 0
    prompt_tokens: int | None = 0
    """The first call's share of the request's prompt (all of it on sample 0, 0 on the others, as the inner engine
    says) plus every continuation's whole prompt: each is a request of its own. ``None`` once a call did not say."""
    logprob: float | None = 0.0
    finish_reason: str | None = None
    calls: int = 0
    refusals: int = 0
    plain: int = 0
    continuations: int = 0
    last_call: bool = False
    """The next call runs without the ``=`` stop: a cap was reached."""
    done: bool = False

    def decoding(self, first: bool):
        d = self.request.decoding
        stops = d.stop if self.last_call else (*d.stop, TOOL_STOP)
        return dataclasses.replace(d, tool=None, stop=stops,
                                   max_tokens=d.max_tokens if first else d.max_tokens - self.tokens)

    def continuation(self) -> GenerationRequest:
        r = self.request
        sample_index = r.first_index + self.index
        return dataclasses.replace(
            r, prompt=continued(r.prompt, self.text), n=1, first_index=sample_index, decoding=self.decoding(first=False),
            seed=derive_seed(r.seed, f"sample{sample_index}", f"call{self.continuations}"))

    def absorb(self, completion: Completion) -> None:
        """Add one call's output; decide whether the sample goes on."""
        d = self.request.decoding
        self.text += completion.text
        self.tokens += int(completion.num_tokens)
        if self.prompt_tokens is not None and completion.prompt_tokens is not None:
            self.prompt_tokens += int(completion.prompt_tokens)
        else:
            self.prompt_tokens = None
        if self.logprob is not None and completion.cumulative_logprob is not None:
            self.logprob += float(completion.cumulative_logprob)
        else:
            self.logprob = None
        self.finish_reason = completion.finish_reason
        stopped_on_tool = (not self.last_call and completion.finish_reason == "stop"
                           and completion.stop_reason == TOOL_STOP)
        if not stopped_on_tool:
            self.done = True
            return
        expression = pending_expression(answer_so_far(self.request.prompt) + self.text)
        self.text += TOOL_STOP
        if self.tokens >= d.max_tokens:
            self.finish_reason, self.done = "length", True
            return
        if expression is None:
            self.plain += 1
            self.last_call = self.plain >= MAX_PLAIN_CONTINUATIONS
        else:
            self._call(expression)
        self.continuations += 1

    def start(self) -> None:
        """Before the first call: a prompt that ends at the ``=`` of an open annotation (``...<<57+38=``) gets its
        tool call now, as if the model had written that ``=``."""
        d = self.request.decoding
        self.last_call = d.max_tool_calls == 0
        prompt = answer_so_far(self.request.prompt)
        expression = pending_expression(prompt[: -len(TOOL_STOP)]) if prompt.endswith(TOOL_STOP) else None
        if expression is not None and not self.last_call:
            self._call(expression)

    def _call(self, expression: str) -> None:
        d = self.request.decoding
        self.calls += 1
        try:
            self.text += TOOLS[d.tool](expression) + CLOSE
        except CalculatorRefusal:
            self.refusals += 1
        self.last_call = self.last_call or self.calls >= d.max_tool_calls

    def completion(self) -> Completion:
        return Completion(text=self.text, num_tokens=self.tokens, cumulative_logprob=self.logprob,
                          finish_reason=self.finish_reason, stop_reason=None, tool_calls=self.calls,
                          tool_refusals=self.refusals, prompt_tokens=self.prompt_tokens)


class ToolEngine:
    """A :class:`~fixability_dag.core.sampling.RolloutEngine` that runs tool requests on ``inner`` (see the module
    docstring) and hands every other request to it unchanged, in one batch with the tool requests' first calls."""

    def __init__(self, inner: RolloutEngine):
        self.inner = inner

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        if not any(r.decoding.tool is not None for r in requests):
            return self.inner.generate(requests)
        groups: list[list[_Sample] | None] = []
        first: list[GenerationRequest] = []
        for r in requests:
            if r.decoding.tool is None:
                groups.append(None)
                first.append(r)
                continue
            check_tool_request(r)
            group = [_Sample(r, i) for i in range(r.n)]
            for sample in group:
                sample.start()
            groups.append(group)
            first.append(dataclasses.replace(r, prompt=continued(r.prompt, group[0].text), decoding=group[0].decoding(first=True)))
        outputs = _checked(self.inner, first)
        for group, output in zip(groups, outputs):
            for sample, completion in zip(group or (), output):
                sample.absorb(completion)
        pending = [s for g in groups if g for s in g if not s.done]
        while pending:
            for sample, output in zip(pending, _checked(self.inner, [s.continuation() for s in pending])):
                sample.absorb(output[0])
            pending = [s for s in pending if not s.done]
        return [output if group is None else [s.completion() for s in group] for group, output in zip(groups, outputs)]

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()

    def __getattr__(self, name: str):
        """Everything else (``stats()``, ``model_path``, ...) is the inner engine's."""
        if name == "inner":  # not set yet (during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


def _checked(engine: RolloutEngine, requests: list[GenerationRequest]) -> list[list[Completion]]:
    outputs = engine.generate(requests)
    if len(outputs) != len(requests) or any(len(o) != r.n for o, r in zip(outputs, requests)):
        raise RuntimeError(f"engine returned {[len(o) for o in outputs]} samples for requests of n "
                           f"{[r.n for r in requests]}")
    return outputs
