"""Planted regimes: synthetic rollouts whose per-problem answer distributions come from known regimes.

This is the statistical test harness for the features and the clustering: if they cannot recover regimes that we
planted ourselves, no result on a real model means anything; and if they still "recover" them after the regime
signal is removed, the pipeline is leaking labels.

Generative story of one failed problem (the diagnostic rollouts never contain the gold answer, as for a real
failed problem):

* ``retry_recoverable`` - the policy wanders: answers spread over many wrong values, low confidence; a probe batch
  is just as spread, so the answer distribution moves a lot (new random values) but not in a consistent direction.
* ``steerable_hard`` - the policy is stuck on one wrong answer with high confidence, but the probe nudge moves most
  mass to other answers.
* ``structural`` - stuck on one wrong answer with high confidence, and the probe does not move it.

With ``signal=False`` every problem draws from one pooled process regardless of its label.

:func:`planted_catalog_frames` plants, for the catalog router, steerability per catalog intervention in a suite
that also holds solved problems (see its docstring).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from fixability_dag.core.interventions import DEFAULT_INTERVENTIONS, RETRY
from fixability_dag.core.regimes import REGIMES
from fixability_dag.core.sampling import ROLLOUT_COLUMNS

_PROFILES = {
    #                   p(top wrong), distinct wrong pool, mean logprob, probe keeps top answer
    "retry_recoverable": (0.15, 12, -1.6, None),
    "steerable_hard": (0.85, 3, -0.35, 0.15),
    "structural": (0.9, 3, -0.3, 0.9),
}


def _answers(rng: np.random.Generator, n: int, top_share: float, pool: int, top: str, keep: float | None) -> list[str]:
    share = top_share if keep is None else keep
    others = [f"{top}-alt{i}" for i in range(pool)]
    return [top if rng.random() < share else others[rng.integers(pool)] for _ in range(n)]


def planted_rollouts(
    per_regime: int = 30,
    n_samples: int = 16,
    probe_samples: int = 8,
    seed: int = 0,
    signal: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """Diagnostic and probe rollouts for ``3 * per_regime`` failed problems, and their planted regimes."""
    rng = np.random.default_rng(seed)
    diag_rows, probe_rows, labels = [], [], {}
    pooled = list(_PROFILES.values())
    for regime in REGIMES:
        for i in range(per_regime):
            pid = f"planted-{regime}-{i}"
            labels[pid] = regime
            profile = _PROFILES[regime] if signal else pooled[rng.integers(len(pooled))]
            top_share, pool, logprob, keep = profile
            top = f"w{rng.integers(10**6)}"
            base = _answers(rng, n_samples, top_share, pool, top, None)
            probe = _answers(rng, probe_samples, top_share, pool, top, keep)
            if keep is None:  # a wandering policy's probe draws are fresh random values
                probe = [f"{a}-p" if a != top else a for a in probe]
            for phase, answers, rows in (("diagnostic", base, diag_rows), ("probe", probe, probe_rows)):
                for j, answer in enumerate(answers):
                    tokens = int(rng.integers(20, 60))
                    lp = logprob + rng.normal(0, 0.08)
                    rows.append({
                        "problem_id": pid, "phase": phase, "intervention": "retry" if phase == "diagnostic" else "probe",
                        "sample_index": j, "seed": seed, "text": f"... #### {answer}", "answer": answer, "is_correct": False,
                        "num_tokens": tokens, "cumulative_logprob": lp * tokens, "mean_logprob": lp, "finish_reason": "stop",
                    })
    return pd.DataFrame(diag_rows, columns=ROLLOUT_COLUMNS), pd.DataFrame(probe_rows, columns=ROLLOUT_COLUMNS), labels


_FILLER = (
    "Let me work through this step by step.\n"
    "First, 17 + 25 = 42, then 42 \u00d7 3 = 126.\tCarry the 1; subtract 9: 126 - 9 = 117.\n"
    "Check: C:\\notes\\scratch says 117 / 3 = 39 \u2192 consistent. \u00bfOk? \u2713 "
) * 4


def planted_frames(
    problems: int = 10_000,
    n_samples: int = 64,
    probe_samples: int = 8,
    seed: int = 0,
    no_answer_rate: float = 0.03,
    text_chars: tuple[int, int] = (100, 300),
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """Planted-regime rollouts at benchmark scale, drawn with array operations instead of one row at a time.

    Same generative story and columns as :func:`planted_rollouts` (regimes assigned round-robin), plus what real
    frames have and the small generator lacks: a few samples with no extracted answer (truncated, ``finish_reason
    = "length"``) and texts of realistic length (``text_chars``) containing newlines, tabs, backslashes and
    non-ASCII characters, so that database writes pay for real payloads and real escaping.
    """
    rng = np.random.default_rng(seed)
    regime_of = np.arange(problems) % len(REGIMES)
    share, pool, logprob, keep = (np.array([_PROFILES[r][i] for r in REGIMES], dtype=float) for i in range(4))
    width = len(str(max(problems - 1, 0)))
    pids = np.array([f"synthetic-{i:0{width}d}" for i in range(problems)], dtype=object)
    tops = rng.integers(10**6, size=problems)

    def phase_frame(phase: str, intervention: str, per_problem: int, probe: bool) -> pd.DataFrame:
        p = np.repeat(np.arange(problems), per_problem)
        r = regime_of[p]
        wandering = np.isnan(keep[r])
        top_prob = np.where(probe & ~wandering, keep[r], share[r])
        is_top = rng.random(len(p)) < top_prob
        alt = (rng.random(len(p)) * pool[r]).astype(int)
        suffix = "-p" if probe else ""  # a wandering policy's probe draws are fresh values
        top = np.char.add("w", tops[p].astype(str))
        answers = np.where(
            is_top, top, np.char.add(np.char.add(top, "-alt"), np.char.add(alt.astype(str), np.where(wandering, suffix, ""))),
        ).astype(object)
        missing = rng.random(len(p)) < no_answer_rate
        answers[missing] = None
        tokens = rng.integers(20, 60, size=len(p))
        lp = logprob[r] + rng.normal(0, 0.08, size=len(p))
        lengths = rng.integers(text_chars[0], text_chars[1] + 1, size=len(p))
        starts = rng.integers(0, len(_FILLER) - text_chars[1], size=len(p))
        texts = [
            _FILLER[s : s + n] + (f" #### {a}" if a is not None else "")
            for s, n, a in zip(starts.tolist(), lengths.tolist(), answers.tolist())
        ]
        return pd.DataFrame({
            "problem_id": pids[p], "phase": phase, "intervention": intervention,
            "sample_index": np.tile(np.arange(per_problem), problems), "seed": seed, "text": texts, "answer": answers,
            "is_correct": False, "num_tokens": tokens, "cumulative_logprob": lp * tokens, "mean_logprob": lp,
            "finish_reason": np.where(missing, "length", "stop").astype(object),
        }, columns=ROLLOUT_COLUMNS)

    diagnostic = phase_frame("diagnostic", "retry", n_samples, probe=False)
    probe_frame = phase_frame("probe", "probe", probe_samples, probe=True)
    return diagnostic, probe_frame, {pid: REGIMES[r] for pid, r in zip(pids, regime_of)}


# -- planted steerability per catalog intervention ---------------------------------------------------------------

_WANDER = (0.15, 12, -1.6)  # top wrong share, distinct wrong answers, mean logprob: the policy wanders
_STUCK = (0.9, 3, -0.3)  # stuck on one wrong answer, confident: steerable and structural look alike at base
_WANDER_RATE = (5.0, 15.0)  # Beta of a wandering problem's base success rate: mean 0.25, 3.6% fail 16 of 16
_STEERED_KEEP, _STEERED_GOLD = 0.05, 0.45  # under the steering intervention: share left on the stuck answer, right
_SKIP, _RETRY_LABEL = "skip", "retry"


@dataclasses.dataclass(frozen=True)
class CatalogPlant:
    """Planted suite for the catalog router: rollouts, the planted action of each failed problem, the solved ones.

    ``labels`` maps each failed problem to its planted action: "retry", "skip" or the name of the one intervention
    that steers it. ``rates`` is every problem's planted base success rate (for checks of the headroom).
    """

    diagnostic: pd.DataFrame
    probe: pd.DataFrame
    labels: dict[str, str]
    solved: list[str]
    rates: dict[str, float]

    @property
    def failed(self) -> list[str]:
        return list(self.labels)


def _draw_answers(rng: np.random.Generator, n: int, rate: float, profile: tuple, top: str) -> tuple[list, list]:
    """``n`` answers of one problem: right (its gold ``top-gold``) with probability ``rate``, else a wrong answer of
    the profile (the stuck/top wrong one with its share, or one of the others)."""
    share, pool, _ = profile
    right = rng.random(n) < rate
    on_top = rng.random(n) < share
    alt = rng.integers(pool, size=n)
    answers = [f"{top}-gold" if r else top if t else f"{top}-alt{a}" for r, t, a in zip(right, on_top, alt)]
    return answers, right.tolist()


def _steered_answers(rng: np.random.Generator, n: int, top: str) -> tuple[list, list]:
    """Under the intervention that steers a stuck problem: most mass leaves the stuck answer, some lands right."""
    u = rng.random(n)
    alt = rng.integers(3, size=n)
    answers = [top if x < _STEERED_KEEP else f"{top}-gold" if x < _STEERED_KEEP + _STEERED_GOLD else f"{top}-s{a}"
               for x, a in zip(u, alt)]
    return answers, [a == f"{top}-gold" for a in answers]


def _rollout_rows(pid: str, phase: str, intervention: str, answers: list, correct: list, logprob: float,
                  rng: np.random.Generator, seed: int) -> list[dict]:
    tokens = rng.integers(20, 60, size=len(answers))
    lp = logprob + rng.normal(0, 0.08, size=len(answers))
    return [{"problem_id": pid, "phase": phase, "intervention": intervention, "sample_index": j, "seed": seed,
             "text": f"... #### {a}", "answer": a, "is_correct": bool(c), "num_tokens": int(t),
             "cumulative_logprob": float(l * t), "mean_logprob": float(l), "finish_reason": "stop"}
            for j, (a, c, t, l) in enumerate(zip(answers, correct, tokens, lp))]


def _wandering_suite(rng: np.random.Generator, failures: int, n_samples: int) -> tuple[list[float], list[float]]:
    """Base rates of a population of wandering problems, drawn until ``failures`` of them fail every sample: the
    failed ones' rates and the solved ones' rates. The solved ones stay in the suite, as they would in a real one:
    they are the evidence that dispersed problems get solved now and then."""
    failed, solved = [], []
    while len(failed) < failures:
        rate = float(rng.beta(*_WANDER_RATE))
        (failed if rng.binomial(n_samples, rate) == 0 else solved).append(rate)
    return failed, solved


def planted_catalog_frames(
    n_per_regime: int = 30,
    steering: tuple[str, ...] = ("few_shot", "solution_prefix"),
    n_samples: int = 16,
    probe_samples: int = 4,
    signal: bool = True,
    seed: int = 0,
    interventions: tuple[str, ...] | None = None,
    n_easy: int = 60,
) -> CatalogPlant:
    """A planted suite with steerability per catalog intervention, for the catalog router.

    Failed problems (no correct diagnostic sample), ``n_per_regime`` of each planted action:

    * "retry" - a wandering policy (answers spread over 13 wrong values) from a population whose base rates are
      Beta(5, 15); the failed ones are the members of that population that failed 16 of 16 (their rates then are
      Beta(5, 31): 86% of them would be rescued by 16 more retries), and every probe is drawn from the same
      distribution as the base, so it shifts by sampling noise only;
    * X, for each X in ``steering`` - stuck on one wrong answer (90% of samples); the probe of X moves the mass off
      it (5% stays, 45% lands right), the probes of every other intervention answer like the base;
    * "skip" (structural) - stuck like the steerable ones, and no probe moves it.

    Steerable and structural problems are identical at base: only the probes tell them apart, and only 4 probe
    samples per intervention do (noise: two of four probe answers off a 90% answer happen to every fourth stuck
    problem under some intervention). Solved problems: the solved rest of the wandering population (the evidence
    that dispersed problems get solved now and then) and ``n_easy`` easy ones (rate uniform in [0.3, 0.9]), which
    make the rate non-monotone in answer dispersion, as the easy problems of a real suite do. Probes
    (``probe_samples`` each, greedy included) exist for the failed problems under every intervention in
    ``interventions`` (default: every non-retry entry of the default intervention list). Problem ids do not name the label.
    With ``signal=False`` each failed problem is drawn as a kind chosen at random, whatever its label.
    """
    names = tuple(interventions) if interventions is not None else tuple(n for n in DEFAULT_INTERVENTIONS if n != RETRY)
    unknown = [x for x in steering if x not in names]
    if unknown:
        raise ValueError(f"steering interventions {unknown} have no probe among {names}")
    rng = np.random.default_rng(seed)
    kinds = [_RETRY_LABEL, *steering, _SKIP]
    failed_rates, wandering_solved = _wandering_suite(rng, n_per_regime, n_samples)
    diag_rows, probe_rows, labels, rates = [], [], {}, {}
    for i, rate in enumerate([*wandering_solved, *rng.uniform(0.3, 0.9, size=n_easy).tolist()]):
        pid, top = f"solved-{i}", f"w{rng.integers(10**6)}"
        answers, correct = _draw_answers(rng, n_samples, rate, _WANDER, top)
        while not any(correct):  # a solved problem has a correct sample (rare redraw for the easy ones)
            answers, correct = _draw_answers(rng, n_samples, rate, _WANDER, top)
        rates[pid] = rate
        diag_rows += _rollout_rows(pid, "diagnostic", RETRY, answers, correct, -0.8, rng, seed)
    for label in kinds:
        for i in range(n_per_regime):
            pid, top = f"failed-{len(labels)}", f"w{rng.integers(10**6)}"
            kind = label if signal else kinds[rng.integers(len(kinds))]
            rate = 0.0
            if kind == _RETRY_LABEL:  # a failed wanderer's rate: from the population, or the same law drawn directly
                rate = failed_rates[i] if signal else float(rng.beta(_WANDER_RATE[0], _WANDER_RATE[1] + n_samples))
            profile = _WANDER if kind == _RETRY_LABEL else _STUCK
            labels[pid], rates[pid] = label, rate
            base, _ = _draw_answers(rng, n_samples, 0.0, profile, top)  # failed: no correct base sample
            diag_rows += _rollout_rows(pid, "diagnostic", RETRY, base, [False] * n_samples, profile[2], rng, seed)
            for name in names:
                steered = name == kind and kind in steering
                drawn = _steered_answers(rng, probe_samples, top) if steered else _draw_answers(
                    rng, probe_samples, rate, profile, top)
                probe_rows += _rollout_rows(pid, "probe", name, *drawn, profile[2], rng, seed)
    diagnostic = pd.DataFrame(diag_rows, columns=ROLLOUT_COLUMNS)
    probe = pd.DataFrame(probe_rows, columns=ROLLOUT_COLUMNS)
    return CatalogPlant(diagnostic, probe, labels, [p for p in rates if p.startswith("solved-")], rates)


def planted_label_rollouts(per_regime: int = 30, budget: int = 16, seed: int = 0,
                           interventions: tuple[str, ...] = (RETRY, "few_shot", "solution_prefix")) -> pd.DataFrame:
    """Label-phase rollouts (``budget`` per problem and intervention) of planted failed problems of each regime.

    Retry-recoverable problems succeed under every intervention at a rate from Beta(2, 30) (rare successes, as at
    the edge of detection); steerable-hard ones never under retry and at 0.3 under one non-retry intervention;
    structural ones never. What a stopping rule can save depends on how early the successes come.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for regime in ("retry_recoverable", "steerable_hard", "structural"):
        for i in range(per_regime):
            pid, steered = f"planted-{regime}-{i}", interventions[1 + i % (len(interventions) - 1)]
            rate = float(rng.beta(2, 30))
            for name in interventions:
                p = rate if regime == "retry_recoverable" else 0.3 if (regime == "steerable_hard" and name == steered) else 0.0
                correct = rng.random(budget) < p
                answers = ["gold" if c else f"w{rng.integers(5)}" for c in correct]
                rows += _rollout_rows(pid, "label", name, answers, correct.tolist(), -0.8, rng, seed)
    return pd.DataFrame(rows, columns=ROLLOUT_COLUMNS)
