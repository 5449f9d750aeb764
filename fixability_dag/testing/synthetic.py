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
"""

from __future__ import annotations

import numpy as np
import pandas as pd

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
