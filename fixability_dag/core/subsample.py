"""The label subsample of production mode, and the survey estimators that carry it back to every failed problem.

A nightly audit does not need every failed problem's full label phase (every catalog intervention at full budget,
most of an audit's tokens) to answer its questions: the routing plan and the rescue evaluation of routed and
uniform retry need no label, and the regime shares and accuracies can be *estimated* from a random subsample with
an interval. ``label_subsample`` (a fraction or a count) says how many failed problems get the label phase.

The draw is a simple random sample without replacement, made by ordering the failed problems by a seeded hash of
``(seed, problem id)`` and keeping the first n (a "permanent random number" sample). Why a hash and not an RNG
over the list: the order of a problem depends on the seed and its own id only, so the sample is the same on every
re-run and for the same failed set whatever order the rows came in, and two checkpoints that fail overlapping sets
label overlapping subsamples (their shares differ less by chance). Every failed problem has the same inclusion
probability n / N.

Estimators are written for any inclusion probabilities (Horvitz-Thompson totals, Hajek ratios), so a later unequal-
probability design (stratified, say) needs no new formulas; with the simple random sample every weight is N / n.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from fixability_dag.core.sampling import derive_seed

SUBSAMPLE_STREAM = "label_subsample"
"""The name that enters every problem's sampling hash (so it shares no stream with any request seed)."""


def check_setting(value) -> float | None:
    """``label_subsample`` as stored: None (every failed problem), a fraction in (0, 1), or a whole count >= 1
    (as a float, so a count written 50 or 50.0 is one setting with one config hash). Refuses anything else, naming
    the setting."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"label_subsample must be null (every failed problem), a fraction in (0, 1) or a count >= 1, "
                         f"got {value!r}")
    if 0 < value < 1:
        return float(value)
    if value >= 1 and float(value).is_integer():
        return float(value)
    raise ValueError(f"label_subsample must be null (every failed problem), a fraction in (0, 1) or a whole count "
                     f">= 1, got {value!r}" + (" (a count must be a whole number)" if value > 1 else ""))


def sample_size(failed: int, setting: float | None) -> int:
    """How many of ``failed`` problems the label phase covers: all of them (None); a fraction rounded up, at least
    one; a count capped at ``failed``."""
    setting = check_setting(setting)
    if failed <= 0:
        return 0
    if setting is None:
        return failed
    if setting < 1:
        return min(failed, max(1, math.ceil(setting * failed - 1e-9)))  # 0.1 * 30 is 3.0000000000000004
    return min(failed, int(setting))


@dataclasses.dataclass(frozen=True)
class Subsample:
    """Which failed problems were drawn, and each failed problem's inclusion probability."""

    population: tuple[str, ...]
    drawn: frozenset[str]
    probability: Mapping[str, float]

    @property
    def complete(self) -> bool:
        """Every failed problem is in the sample (no subsampling: today's full audit)."""
        return len(self.drawn) == len(self.population)

    def weight(self, problem_id: str) -> float:
        """The Horvitz-Thompson weight 1 / pi of a drawn problem."""
        return 1.0 / self.probability[problem_id]

    def describe(self) -> str:
        """'n of N failed problems (label subsample)', or 'all N failed problems'."""
        if self.complete:
            return f"all {len(self.population)} failed problems"
        return f"{len(self.drawn)} of {len(self.population)} failed problems (label subsample)"


def draw_subsample(problem_ids: Iterable[str], setting: float | None, seed: int) -> Subsample:
    """The seeded simple random sample without replacement of ``problem_ids`` that ``setting`` asks for.

    A pure function of the set of ids, ``setting`` and ``seed``: the order ids come in does not matter."""
    population = tuple(sorted(set(problem_ids)))
    n = sample_size(len(population), setting)
    ranked = sorted(population, key=lambda pid: (derive_seed(seed, SUBSAMPLE_STREAM, pid), pid))
    pi = n / len(population) if population else 1.0
    return Subsample(population, frozenset(ranked[:n]), {pid: pi for pid in population})


def horvitz_thompson_total(values: Sequence[float], probabilities: Sequence[float]) -> float:
    """``sum y_i / pi_i`` over the drawn units: unbiased for the population total of y under any design whose
    inclusion probabilities are ``pi_i`` > 0."""
    y, pi = _checked(values, probabilities)
    return float(np.sum(y / pi))


def hajek_mean(values: Sequence[float], probabilities: Sequence[float]) -> float:
    """``sum(y_i / pi_i) / sum(1 / pi_i)``: the Horvitz-Thompson total over the estimated population size, the
    usual estimator of a population mean or share (a share: y is 0/1). Nearly unbiased, and exactly the sample
    mean under equal probabilities."""
    y, pi = _checked(values, probabilities)
    if len(y) == 0:
        return float("nan")
    return float(np.sum(y / pi) / np.sum(1 / pi))


def weighted_share(indicator: Sequence[bool], probabilities: Sequence[float], population: int,
                   z: float = 1.96) -> tuple[float, float, float]:
    """A population share estimated from the drawn units: ``(Hajek estimate, low, high)``.

    The interval is Wilson's score interval at the design's effective sample size: Kish's ``n_eff = (sum w)^2 /
    sum w^2`` (w = 1 / pi; n itself under equal weights), divided by the finite-population correction ``1 - n/N``
    (a sample that is most of the population knows its share nearly exactly). Wilson rather than the Wald interval
    for the reason it is used everywhere here: shares near 0 or 1 at small n. A census (every unit drawn) returns a
    zero-width interval: the share is known. Approximate for unequal weights (Kish's n_eff assumes weights unrelated
    to y); exact in the equal-weight case, where it is Wilson at n with the finite-population correction.
    """
    y, pi = _checked([float(v) for v in indicator], probabilities)
    n = len(y)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    estimate = hajek_mean(y, pi)
    fraction = n / population if population else 1.0
    if fraction >= 1 - 1e-12:
        return estimate, estimate, estimate
    w = 1 / pi
    n_eff = float(w.sum() ** 2 / np.sum(w ** 2)) / (1 - fraction)
    lo, hi = _wilson(estimate, n_eff, z)
    return estimate, lo, hi


def _wilson(p: float, n: float, z: float) -> tuple[float, float]:
    """Wilson's score interval (as :func:`~fixability_dag.core.stats.wilson_interval`) for a proportion ``p`` at a
    possibly fractional effective ``n``."""
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def regime_shares(regimes: Sequence[str], probabilities: Sequence[float], population: int,
                  names: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """Per regime name, its weighted share of the population with its interval (:func:`weighted_share`)."""
    return {name: weighted_share([r == name for r in regimes], probabilities, population) for name in names}


def _checked(values, probabilities) -> tuple[np.ndarray, np.ndarray]:
    y, pi = np.asarray(values, dtype=float), np.asarray(probabilities, dtype=float)
    if y.shape != pi.shape or y.ndim != 1:
        raise ValueError(f"need one inclusion probability per value, got {y.shape} values and {pi.shape} probabilities")
    if np.any(~(pi > 0)) or np.any(pi > 1):
        raise ValueError("inclusion probabilities must be in (0, 1]")
    return y, pi
