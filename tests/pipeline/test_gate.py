"""The organism's gate table on planted frames: each family's measured rates and labels land in its row."""

from __future__ import annotations

import pandas as pd

from fixability_dag.pipeline.gate import gate_frame, gate_markdown


def _planted():
    problems = pd.DataFrame({"problem_id": ["c1", "c2", "n1", "n2", "f1", "x1"],
                             "family": ["control", "control", "numeric", "numeric", "format", None]})
    diagnostic = pd.DataFrame({"checkpoint_id": "ck", "problem_id": ["c1", "c2", "n1", "n2", "f1", "x1"],
                               "samples": 16, "correct": [16, 8, 0, 0, 0, 0]})
    outcomes = pd.DataFrame([
        {"checkpoint_id": "ck", "problem_id": p, "intervention": i, "rescued": r, "first_block_samples": 4,
         "first_block_correct": c}
        for p, i, r, c in [("n1", "retry", False, 0), ("n1", "calculator", True, 4), ("n2", "retry", False, 0),
                           ("n2", "calculator", True, 2), ("f1", "retry", False, 0), ("f1", "calculator", False, 0),
                           ("x1", "retry", True, 1)]])
    labels = pd.DataFrame({"checkpoint_id": "ck", "problem_id": ["n1", "n2", "f1", "x1"],
                           "true_regime": ["steerable_hard", "steerable_hard", "structural", "retry_recoverable"]})
    return problems, diagnostic, outcomes, labels


def test_each_family_row_reads_its_own_problems_only():
    frame = gate_frame(*_planted()).set_index("family")
    assert list(frame.index) == ["control", "numeric", "format"]  # generator order; the family-less problem is out
    assert frame.loc["control", "pass_rate"] == 0.75 and frame.loc["control", "failed"] == 0
    numeric = frame.loc["numeric"]
    assert numeric["failed"] == 2 and numeric["steerable_hard"] == 2 and numeric["landed_as_designed"] == 1.0
    assert numeric["rescued_calculator"] == 1.0 and numeric["rate_calculator"] == 0.75 and numeric["rescued_retry"] == 0.0
    fmt = frame.loc["format"]
    assert fmt["structural"] == 1 and fmt["landed_as_designed"] == 0.0 and fmt["landed_ci"].startswith("[0.00") and fmt["expected_rescuer"] == "few_shot"
    assert "| numeric" in gate_markdown(frame.reset_index())


def test_without_families_there_is_no_gate():
    problems, diagnostic, outcomes, labels = _planted()
    assert gate_frame(problems.assign(family=None), diagnostic, outcomes, labels).empty
    assert "needs problems with a stored family" in gate_markdown(pd.DataFrame())
