"""Distributional features of a failed problem, computed from many rollouts without reading any trace.

Inputs are only extracted answers, token counts, log-probabilities and finish reasons, of the base rollouts and of
a small probe batch under the cheapest bounded intervention. The three headline features:

* ``answer_dispersion`` - normalized entropy of the base answer distribution, "no answer" being a category.
  Unlucky sampling looks dispersed (the model wanders); a systematic error looks concentrated.
* ``policy_confidence`` - mean per-token log-probability of the failed base rollouts. A confident wrong policy
  is unlikely to be fixed by more samples.
* ``probe_shift`` - total-variation distance between the base and the probe answer distributions. It measures how
  much the policy *moves* under a nudge, without using correctness, so it can route before any rescue is known.

Other candidates are stored beside them so that the ablation can ask which triple separates regimes best.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from collections.abc import Callable

import numpy as np
import pandas as pd

from fixability_dag.core.stats import normalized_entropy, total_variation
from fixability_dag.core.stopping import first_seeded_block

NO_ANSWER = "\x00no answer"
"""The category of rollouts with no answer. Its NUL can never be in an extracted answer (``answers.clean_text``
strips control characters), so a model that literally writes "#### <no answer>" is not counted as silent."""


@dataclasses.dataclass
class RolloutGroup:
    """The rollouts of one failed problem that features may look at: base samples and (maybe) a probe batch."""

    base: pd.DataFrame
    probe: pd.DataFrame | None

    @functools.cached_property
    def counts(self) -> Counter:
        return answer_counts(self.base["answer"])

    @functools.cached_property
    def probe_counts(self) -> Counter | None:
        return answer_counts(self.probe["answer"]) if self.probe is not None and not self.probe.empty else None

    @functools.cached_property
    def tokens(self) -> pd.Series:
        return self.base["num_tokens"].astype(float)


FeatureFunction = Callable[[RolloutGroup], float]
FEATURE_FUNCTIONS: dict[str, FeatureFunction] = {}


def feature(name: str) -> Callable[[FeatureFunction], FeatureFunction]:
    """Register a feature. To store a new one, also add its column to ``problem_features`` (schema + migration);
    the ablation then ranks it with the others automatically."""

    def register(fn: FeatureFunction) -> FeatureFunction:
        FEATURE_FUNCTIONS[name] = fn
        return fn

    return register


@feature("answer_dispersion")
def _answer_dispersion(g: RolloutGroup) -> float:
    return normalized_entropy(g.counts)


@feature("policy_confidence")
def _policy_confidence(g: RolloutGroup) -> float:
    failed = g.base[~g.base["is_correct"].astype(bool)]
    values = (failed if not failed.empty else g.base)["mean_logprob"].dropna()
    return float(values.mean()) if len(values) else float("nan")


@feature("probe_shift")
def _probe_shift(g: RolloutGroup) -> float:
    return total_variation(g.counts, g.probe_counts) if g.probe_counts else float("nan")


@feature("top_wrong_share")
def _top_wrong_share(g: RolloutGroup) -> float:
    wrong = Counter({k: v for k, v in g.counts.items() if k != NO_ANSWER})
    return wrong.most_common(1)[0][1] / len(g.base) if wrong else 0.0


@feature("no_answer_rate")
def _no_answer_rate(g: RolloutGroup) -> float:
    return g.counts.get(NO_ANSWER, 0) / len(g.base)


@feature("truncation_rate")
def _truncation_rate(g: RolloutGroup) -> float:
    return float((g.base["finish_reason"] == "length").mean())


@feature("mean_tokens")
def _mean_tokens(g: RolloutGroup) -> float:
    return float(g.tokens.mean())


@feature("tokens_cv")
def _tokens_cv(g: RolloutGroup) -> float:
    mean = g.tokens.mean()
    return float(g.tokens.std(ddof=0) / mean) if mean > 0 else 0.0


@feature("distinct_answers")
def _distinct_answers(g: RolloutGroup) -> float:
    return float(len(g.counts))


@feature("probe_dispersion")
def _probe_dispersion(g: RolloutGroup) -> float:
    return normalized_entropy(g.probe_counts) if g.probe_counts else float("nan")


FEATURES = ("answer_dispersion", "policy_confidence", "probe_shift")
ALL_FEATURES = tuple(FEATURE_FUNCTIONS)
CANDIDATE_FEATURES = tuple(f for f in ALL_FEATURES if f not in FEATURES)


def answer_counts(answers: pd.Series) -> Counter:
    return Counter(NO_ANSWER if a is None or (isinstance(a, float) and np.isnan(a)) else str(a) for a in answers)


def problem_features(base: pd.DataFrame, probe: pd.DataFrame | None) -> dict[str, float]:
    """Every registered feature of one problem, from its base rollouts and (optionally) its probe rollouts."""
    if base.empty:
        raise ValueError("a problem needs base rollouts to have features")
    group = RolloutGroup(base, probe)
    return {name: fn(group) for name, fn in FEATURE_FUNCTIONS.items()}


def pass_rates(rollouts: pd.DataFrame) -> pd.DataFrame:
    """Per-problem samples, correct samples and pass rate of one phase's rollouts."""
    grouped = rollouts.groupby("problem_id")["is_correct"].agg(["size", "sum"]).rename(columns={"size": "n", "sum": "correct"})
    grouped["pass_rate"] = grouped["correct"] / grouped["n"]
    return grouped.reset_index()


def first_block_pass_rates(diagnostic: pd.DataFrame) -> pd.DataFrame:
    """:func:`pass_rates` of each problem's first block (:func:`~fixability_dag.core.stopping.first_seeded_block`):
    all of its samples when the phase was drawn in one request per problem, the first ``diagnostic_block`` when it
    was drawn in blocks. Unbiased under the diagnostic stopping rule, which the rate over the drawn samples is not
    (a problem stops *because* it succeeded often early). Every pass rate read from diagnostic rollouts is this one;
    the failed set alone reads every drawn sample (it is exact under the rule)."""
    return pass_rates(first_seeded_block(diagnostic, ["problem_id"]))


def failed_problem_ids(diagnostic: pd.DataFrame, max_pass_rate: float = 0.0) -> list[str]:
    """Problems whose base pass rate is at most ``max_pass_rate`` (0: no correct sample, the zero-signal group)."""
    rates = pass_rates(diagnostic)
    return sorted(rates.loc[rates["pass_rate"] <= max_pass_rate, "problem_id"])


def compute_features(diagnostic: pd.DataFrame, probe: pd.DataFrame, problem_ids: list[str]) -> pd.DataFrame:
    """One row of features per failed problem, in ``problem_ids`` order.

    The built-in features are computed for all problems at once from per-(problem, answer) counts (array
    operations: ~80x faster than one pandas group per problem at 10,000 problems x 64 samples). A registered
    feature without a vectorised twin falls back to its per-problem function, so adding a feature still needs
    only ``@feature``. ``tests/core/test_features_vectorised.py`` checks both agree with the per-problem definition.
    """
    ids = pd.Index(problem_ids)
    unique_ids = ids.unique()
    counts = _AnswerCounts.build(diagnostic, probe, unique_ids)
    absent = np.flatnonzero(counts.n == 0)
    if len(absent):
        raise ValueError(f"no diagnostic rollouts for failed problem {unique_ids[absent[0]]!r}")
    columns = {name: VECTORISED[name](counts) for name in ALL_FEATURES if name in VECTORISED}
    slow = [name for name in ALL_FEATURES if name not in VECTORISED]
    if slow:
        base_groups = dict(tuple(diagnostic[counts.rows].groupby("problem_id")))
        probe_groups = {} if probe.empty else dict(tuple(probe[counts.probe_rows].groupby("problem_id")))
        for name in slow:
            fn = FEATURE_FUNCTIONS[name]
            columns[name] = np.array([fn(RolloutGroup(base_groups[pid], probe_groups.get(pid))) for pid in unique_ids], dtype=float)
    frame = pd.DataFrame({
        "problem_id": unique_ids.to_numpy(dtype=object),
        "base_samples": counts.n.astype(np.int64),
        "base_pass_rate": counts.sum_by_problem(counts.correct_share) / counts.n,
        **{name: columns[name] for name in ALL_FEATURES},
    })
    if len(unique_ids) != len(ids):  # a repeated id keeps one row per occurrence, as the per-problem loop did
        frame = frame.set_index("problem_id").loc[ids].reset_index()
    return frame


def compute_features_per_problem(diagnostic: pd.DataFrame, probe: pd.DataFrame, problem_ids: list[str]) -> pd.DataFrame:
    """:func:`compute_features` one pandas group at a time through :func:`problem_features`: the definition the
    vectorised path is tested against, and the baseline of ``benchmarks/post_generation.py``."""
    base_groups = dict(tuple(diagnostic.groupby("problem_id")))
    probe_groups = dict(tuple(probe.groupby("problem_id"))) if not probe.empty else {}
    rows = []
    for pid in problem_ids:
        row = problem_features(base_groups[pid], probe_groups.get(pid))
        row["problem_id"] = pid
        row["base_samples"] = len(base_groups[pid])
        row["base_pass_rate"] = float(base_groups[pid]["is_correct"].mean())
        rows.append(row)
    return pd.DataFrame(rows, columns=["problem_id", "base_samples", "base_pass_rate", *ALL_FEATURES])


# -- vectorised twins of the built-in features -------------------------------------------------------------------


@dataclasses.dataclass
class _AnswerCounts:
    """What the built-in features need, as arrays over the base rollouts of the requested problems.

    ``code`` is each such rollout's problem position (``P`` problems); ``pair_*`` are the distinct (problem, answer)
    pairs with their counts. Answers are coded over base and probe together, so the two distributions share
    categories. Only the needed columns are touched: the frame (and its long ``text``) is never copied.
    """

    rows: np.ndarray  # mask over the diagnostic frame: rollouts of requested problems
    probe_rows: np.ndarray
    code: np.ndarray
    n: np.ndarray  # base rollouts per problem
    failed: np.ndarray  # ``~is_correct.astype(bool)``, as the per-problem feature reads it
    correct_share: np.ndarray  # ``is_correct`` as float, for the pass rate
    logprob: np.ndarray
    tokens: np.ndarray
    truncated: np.ndarray
    pair_problem: np.ndarray
    pair_answer: np.ndarray
    pair_count: np.ndarray
    probe_n: np.ndarray
    probe_pair_problem: np.ndarray
    probe_pair_answer: np.ndarray
    probe_pair_count: np.ndarray
    no_answer: int  # answer code of NO_ANSWER
    answers: int  # number of answer codes

    @classmethod
    def build(cls, diagnostic: pd.DataFrame, probe: pd.DataFrame, ids: pd.Index) -> "_AnswerCounts":
        if probe.empty:  # may even lack columns, as the per-problem path allowed
            probe = pd.DataFrame({"problem_id": pd.Series([], dtype=object), "answer": pd.Series([], dtype=object)})
        code = _positions(diagnostic["problem_id"], ids)
        rows = code >= 0
        probe_code = _positions(probe["problem_id"], ids)
        probe_rows = probe_code >= 0
        answer_code, no_answer, size = _answer_codes(diagnostic["answer"], probe["answer"])
        code, probe_code = code[rows], probe_code[probe_rows]
        probe_answer = answer_code[len(diagnostic):][probe_rows]

        def column(name: str, dtype) -> np.ndarray:
            return diagnostic[name].astype(dtype).to_numpy()[rows]

        return cls(
            rows, probe_rows, code, np.bincount(code, minlength=len(ids)),
            ~column("is_correct", bool), column("is_correct", float), column("mean_logprob", float),
            column("num_tokens", float), (diagnostic["finish_reason"] == "length").to_numpy(dtype=float)[rows],
            *_pairs(code, answer_code[: len(diagnostic)][rows], size),
            np.bincount(probe_code, minlength=len(ids)), *_pairs(probe_code, probe_answer, size),
            no_answer, size,
        )

    @property
    def problems(self) -> int:
        return len(self.n)

    def sum_by_problem(self, values: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        if rows is None:
            return np.bincount(self.code, weights=values, minlength=self.problems)
        return np.bincount(self.code[rows], weights=values[rows], minlength=self.problems)

    def count_by_problem(self, rows: np.ndarray) -> np.ndarray:
        return np.bincount(self.code[rows], minlength=self.problems)

    @functools.cached_property
    def token_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and population std of token counts per problem, skipping missing values as pandas does."""
        valid = ~np.isnan(self.tokens)
        count = self.count_by_problem(valid)
        mean = _rate(self.sum_by_problem(self.tokens, valid), count)
        deviation = np.where(valid, self.tokens - mean[self.code], 0.0)
        return mean, np.sqrt(_rate(self.sum_by_problem(deviation**2, valid), count))


def _positions(problem_id: pd.Series, ids: pd.Index) -> np.ndarray:
    """Position in ``ids`` of every row's problem, -1 for problems not asked for (hashing each id once)."""
    codes, uniques = pd.factorize(problem_id)
    position = ids.get_indexer(uniques)
    return np.where(codes >= 0, position[codes], -1)


def _answer_codes(*columns: pd.Series) -> tuple[np.ndarray, int, int]:
    """One integer per answer (rows of each column in turn) such that equal codes mean equal :func:`answer_counts`
    categories: ``str`` of the answer, NO_ANSWER when missing. Returns the codes, NO_ANSWER's code and the number
    of codes. Each column is hashed in its own dtype and only its distinct values are turned into strings."""
    parts, keys = [], []
    for answers in columns:
        codes, uniques = pd.factorize(answers)  # missing -> -1
        uniques = np.asarray(uniques, dtype=object)
        if not all(isinstance(u, str) for u in uniques.tolist()):
            # values that hash alike but print differently (1 and True) must not share a category: str() first
            missing = answers.isna().to_numpy()
            text = answers.to_numpy(dtype=object).copy()
            text[~missing] = [str(a) for a in text[~missing]]
            text[missing] = None
            codes, uniques = pd.factorize(pd.Series(text, dtype=object))
            uniques = np.asarray(uniques, dtype=object)
        parts.append((codes, len(keys)))
        keys += [str(u) for u in uniques.tolist()]
    merged, _ = pd.factorize(pd.Series([*keys, NO_ANSWER], dtype=object))
    no_answer = int(merged[-1])
    out = [np.where(codes >= 0, merged[np.maximum(codes, 0) + offset], no_answer) for codes, offset in parts]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64), no_answer, int(merged.max()) + 1


def _pairs(problem: np.ndarray, answer: np.ndarray, answers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    unique, count = np.unique(problem.astype(np.int64) * answers + answer, return_counts=True)
    return unique // answers, unique % answers, count


def _entropy(pair_problem: np.ndarray, pair_count: np.ndarray, n: np.ndarray) -> np.ndarray:
    """:func:`normalized_entropy` of every problem's counts (0 for at most one draw)."""
    p = pair_count / n[pair_problem]
    h = np.bincount(pair_problem, weights=-p * np.log(p), minlength=len(n))
    log_n = np.log(np.maximum(n, 1))
    return np.divide(h, log_n, out=np.zeros(len(n)), where=n > 1)


def _rate(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.full(len(denominator), np.nan), where=denominator > 0)


VECTORISED: dict[str, Callable[[_AnswerCounts], np.ndarray]] = {}


def _vectorised(name: str):
    def register(fn):
        VECTORISED[name] = fn
        return fn

    return register


@_vectorised("answer_dispersion")
def _v_answer_dispersion(c: _AnswerCounts) -> np.ndarray:
    return _entropy(c.pair_problem, c.pair_count, c.n)


@_vectorised("policy_confidence")
def _v_policy_confidence(c: _AnswerCounts) -> np.ndarray:
    has_failed = c.count_by_problem(c.failed) > 0
    rows = np.where(has_failed[c.code], c.failed, True) & ~np.isnan(c.logprob)
    return _rate(c.sum_by_problem(c.logprob, rows), c.count_by_problem(rows))


@_vectorised("probe_shift")
def _v_probe_shift(c: _AnswerCounts) -> np.ndarray:
    keys = np.concatenate([c.pair_problem * c.answers + c.pair_answer, c.probe_pair_problem * c.answers + c.probe_pair_answer])
    share = np.concatenate([c.pair_count / c.n[c.pair_problem], -c.probe_pair_count / c.probe_n[c.probe_pair_problem]])
    unique, inverse = np.unique(keys, return_inverse=True)
    diff = np.abs(np.bincount(inverse, weights=share, minlength=len(unique)))
    tv = 0.5 * np.bincount(unique // c.answers, weights=diff, minlength=c.problems)
    return np.where(c.probe_n > 0, tv, np.nan)


@_vectorised("top_wrong_share")
def _v_top_wrong_share(c: _AnswerCounts) -> np.ndarray:
    wrong = c.pair_answer != c.no_answer
    top = np.zeros(c.problems)
    np.maximum.at(top, c.pair_problem[wrong], c.pair_count[wrong])
    return top / c.n


@_vectorised("no_answer_rate")
def _v_no_answer_rate(c: _AnswerCounts) -> np.ndarray:
    none = c.pair_answer == c.no_answer
    return np.bincount(c.pair_problem[none], weights=c.pair_count[none], minlength=c.problems) / c.n


@_vectorised("truncation_rate")
def _v_truncation_rate(c: _AnswerCounts) -> np.ndarray:
    return c.sum_by_problem(c.truncated) / c.n


@_vectorised("mean_tokens")
def _v_mean_tokens(c: _AnswerCounts) -> np.ndarray:
    return c.token_moments[0]


@_vectorised("tokens_cv")
def _v_tokens_cv(c: _AnswerCounts) -> np.ndarray:
    mean, std = c.token_moments
    return np.divide(std, mean, out=np.zeros(c.problems), where=mean > 0)


@_vectorised("distinct_answers")
def _v_distinct_answers(c: _AnswerCounts) -> np.ndarray:
    return np.bincount(c.pair_problem, minlength=c.problems).astype(float)


@_vectorised("probe_dispersion")
def _v_probe_dispersion(c: _AnswerCounts) -> np.ndarray:
    return np.where(c.probe_n > 0, _entropy(c.probe_pair_problem, c.probe_pair_count, c.probe_n), np.nan)
