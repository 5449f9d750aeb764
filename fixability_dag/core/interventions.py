"""The intervention catalog: bounded ways to change how a problem is attempted.

Each intervention is a pure function from (problem, base decoding, exemplar pool, prompt format) to a prompt and a
decoding; the prompt format (:mod:`fixability_dag.core.prompts`) decides whether that prompt is a text or a chat
conversation, so every intervention works in both modes. Its
budget (how many samples) is decided by the caller, and its compute is counted afterwards in generated tokens, so
policies are compared at matched compute rather than matched request counts.

A *tool* intervention (kind ``tool``: the ``calculator``) only marks its decoding with the tool's name; the engine
wrapper :class:`fixability_dag.engines.tools.ToolEngine` runs the tool loop, and every token the model generates
across the loop is in the rollout's ``num_tokens``, so its cost is counted like any other intervention's. It is in
the catalog but not in :data:`DEFAULT_INTERVENTIONS`: a model that never writes ``<<expr=`` annotations gains nothing
from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence

from fixability_dag.core.problems import Problem
from fixability_dag.core.prompts import Prompt, PromptFormat
from fixability_dag.core.sampling import Decoding, GenerationRequest, derive_seed
from fixability_dag.core.stopping import blocks

RETRY = "retry"


@dataclasses.dataclass(frozen=True)
class Attempt:
    """What an intervention asks the engine for: a prompt, a decoding, and a cap on useful samples."""

    prompt: Prompt
    decoding: Decoding
    max_useful_samples: int | None = None  # greedy decoding gives the same answer every time


@dataclasses.dataclass(frozen=True)
class Intervention:
    name: str
    kind: str  # retry | decoding | prefix | prompt | tool
    description: str
    build: Callable[[Problem, Decoding, Sequence[Problem], PromptFormat], Attempt]
    deterministic: bool = False
    """One useful sample (greedy): measured once in the label phase, never redrawn as if it were fresh."""
    opt_in: bool = False
    """Measured only when the settings name it (not in :data:`DEFAULT_INTERVENTIONS`)."""


def _retry(problem: Problem, base: Decoding, exemplars: Sequence[Problem], fmt: PromptFormat) -> Attempt:
    return Attempt(fmt.render(problem), base)


def _temperature(t: float) -> Callable[[Problem, Decoding, Sequence[Problem], PromptFormat], Attempt]:
    def build(problem: Problem, base: Decoding, exemplars: Sequence[Problem], fmt: PromptFormat) -> Attempt:
        return Attempt(fmt.render(problem), dataclasses.replace(base, temperature=t), 1 if t == 0.0 else None)

    return build


def solution_prefix_text(problem: Problem) -> str:
    """The first half of the reference steps (at least one, never all of them).

    For a one-step solution, giving the step would give the answer away; we give its left-hand side only
    (``23+45=``), which still tells the model what to compute.
    """
    steps = problem.reference_steps
    if not steps:
        return ""
    if len(steps) == 1:
        head, sep, _ = steps[0].partition("=")
        return head + sep if sep else ""
    return "".join(step + "\n" for step in steps[: max(1, len(steps) // 2)])


def _calculator(problem: Problem, base: Decoding, exemplars: Sequence[Problem], fmt: PromptFormat) -> Attempt:
    return Attempt(fmt.render(problem), dataclasses.replace(base, tool="calculator"))


def _solution_prefix(problem: Problem, base: Decoding, exemplars: Sequence[Problem], fmt: PromptFormat) -> Attempt:
    """The frame followed by the prefix; in chat mode the prefix is an assistant message the model continues."""
    return Attempt(fmt.render(problem, prefix=solution_prefix_text(problem)), base)


def _exemplar_key(problem_id: str, other_id: str) -> str:
    return hashlib.blake2b(f"{problem_id}|{other_id}".encode(), digest_size=8).hexdigest()


def _symbols(question: str) -> set[str]:
    return {c for c in question if not (c.isalnum() or c.isspace())}


def choose_exemplars(problem: Problem, pool: Sequence[Problem], k: int = 2) -> list[Problem]:
    """Deterministic few-shot exemplars: same difficulty, another template, never the problem itself; among those,
    the ones that share the question's *rarest* symbols first.

    The symbol overlap is weighted by inverse frequency in the pool (an IDF score), so an exemplar that shares a
    rare operator (or ``%``, ``$`` in a word problem) outranks one that shares only ``+``: what a retriever of
    similar solved problems would pick. It reads the question text only, never a problem's family or label.
    """
    candidates = [p for p in pool if p.problem_id != problem.problem_id and (p.template_id is None or p.template_id != problem.template_id)]
    same = [p for p in candidates if p.difficulty == problem.difficulty] or candidates
    frequency: dict[str, int] = {}
    for p in same:
        for s in _symbols(p.question):
            frequency[s] = frequency.get(s, 0) + 1
    mine = _symbols(problem.question)

    def overlap(p: Problem) -> float:
        return sum(1.0 / frequency[s] for s in mine & _symbols(p.question))

    ranked = sorted(same, key=lambda p: (-round(overlap(p), 9), _exemplar_key(problem.problem_id, p.problem_id)))
    return ranked[:k]


STEPWISE_INSTRUCTION = "Solve the problem step by step. Check each calculation before you write the final answer."


def _stepwise(problem: Problem, base: Decoding, exemplars: Sequence[Problem], fmt: PromptFormat) -> Attempt:
    """A prompt variant: an instruction as the system turn (chat) or a line before the frame (completion)."""
    return Attempt(fmt.render(problem, instruction=STEPWISE_INSTRUCTION), base)


def _few_shot(problem: Problem, base: Decoding, exemplars: Sequence[Problem], fmt: PromptFormat) -> Attempt:
    """Solved exemplars before the question; in chat mode each is an earlier user/assistant exchange."""
    return Attempt(fmt.render(problem, exemplars=choose_exemplars(problem, exemplars)), base)


CATALOG: dict[str, Intervention] = {
    i.name: i
    for i in (
        Intervention(RETRY, "retry", "base prompt and decoding, fresh seeds", _retry),
        Intervention("temp_low", "decoding", "temperature 0.5", _temperature(0.5)),
        Intervention("temp_high", "decoding", "temperature 1.3", _temperature(1.3)),
        Intervention("greedy", "decoding", "greedy decoding (one sample: it is deterministic)", _temperature(0.0), True),
        Intervention("solution_prefix", "prefix", "first half of the reference steps appended to the prompt", _solution_prefix),
        Intervention("few_shot", "prompt", "two solved exemplars of the same difficulty before the question", _few_shot),
        Intervention("stepwise_prompt", "prompt", "a step-by-step instruction: the system turn in chat mode, a line before "
                     "the question in completion mode", _stepwise, opt_in=True),
        Intervention("calculator", "tool", "base prompt and decoding; each <<expr= the model writes is computed by an "
                     "exact arithmetic parser, which appends result>> (at most max_tool_calls per sample)", _calculator),
    )
}

DEFAULT_INTERVENTIONS: tuple[str, ...] = tuple(name for name, i in CATALOG.items() if i.kind != "tool" and not i.opt_in)
"""What an audit measures unless its settings name others: the catalog without tool interventions and opt-in prompt
variants (a setting that lists ``calculator`` or ``stepwise_prompt`` selects it)."""


def get_intervention(name: str) -> Intervention:
    try:
        return CATALOG[name]
    except KeyError:
        raise ValueError(f"unknown intervention '{name}'; known: {', '.join(CATALOG)}") from None


def build_requests(
    problems: Sequence[Problem],
    intervention: str,
    phase: str,
    budget: int,
    base: Decoding,
    seed: int,
    exemplar_pool: Sequence[Problem] = (),
    block: int | None = None,
    prompt_format: PromptFormat = PromptFormat(),
) -> list[GenerationRequest]:
    """One request per problem for ``intervention`` at ``budget`` samples, each with its own derived seed; with
    ``block``, one request per block of ``block`` samples instead, each block with a seed of its own (so a run
    that stops after some blocks draws exactly the first blocks of the full run). ``prompt_format`` frames every
    prompt (text or chat)."""
    spec = get_intervention(intervention)
    requests = []
    for problem in problems:
        attempt = spec.build(problem, base, exemplar_pool, prompt_format)
        n = min(budget, attempt.max_useful_samples or budget)
        parts = (problem.problem_id, phase, intervention)
        drawn = [(0, n, derive_seed(seed, *parts))] if block is None else [
            (b.first_sample, b.n, derive_seed(seed, *parts, f"block{b.index}")) for b in blocks(n, block)]
        requests += [GenerationRequest(problem_id=problem.problem_id, phase=phase, intervention=intervention,
                                       prompt=attempt.prompt, n=size, seed=block_seed, decoding=attempt.decoding,
                                       first_index=first)
                     for first, size, block_seed in drawn]
    return requests
