"""A deterministic stand-in engine for fast unit tests of the statistics (never the only test of a path:
the same paths run on the real vLLM engine in test_engine.py and test_end_to_end.py)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from fixability_dag.core.sampling import Completion, GenerationRequest

AnswerSampler = Callable[[GenerationRequest, random.Random], str | None]


class FakeEngine:
    """Draws each sample's final answer from ``sampler(request, rng)``; ``None`` means a rollout with no answer."""

    def __init__(self, sampler: AnswerSampler, logprob: Callable[[GenerationRequest], float] = lambda r: -0.5):
        self.sampler, self.logprob = sampler, logprob
        self.calls: list[Sequence[GenerationRequest]] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        self.calls.append(requests)
        out = []
        for r in requests:
            rng = random.Random(r.seed)
            samples = []
            for _ in range(r.n):
                answer = self.sampler(r, rng)
                body = "1+1=2\n" + (f"#### {answer}" if answer is not None else "and so on")
                tokens = len(body)
                samples.append(Completion(body, tokens, self.logprob(r) * tokens, "stop"))
            out.append(samples)
        return out
