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

from fixability_dag.regimes import REGIMES
from fixability_dag.sampling import ROLLOUT_COLUMNS

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
