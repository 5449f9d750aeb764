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


def test_rows_join_their_own_suites_problems_when_ids_collide():
    """Two suites read from one file share problem ids: a row joins its own suite's problem, not every problem of
    that id (which would count the other suite's diagnosis and give its family)."""
    problems, diagnostic, outcomes, labels = (f.assign(suite="organism") for f in _planted())
    twin = problems.assign(suite="other", family=None)  # same ids, a suite without families
    other_diag = diagnostic.assign(suite="other", correct=16)  # solved there: must not dilute the organism's rates
    frame = gate_frame(pd.concat([problems, twin]), pd.concat([diagnostic, other_diag]), outcomes, labels).set_index("family")
    assert frame.loc["control", "pass_rate"] == 0.75 and frame.loc["numeric", "pass_rate"] == 0.0
    assert frame.loc["numeric", "problems"] == 2 and frame.loc["numeric", "failed"] == 2
    # an organism suite under another name with the same ids and other families: each keeps its own
    renamed = problems.assign(suite="organism-b", family="long")
    frame = gate_frame(pd.concat([problems, renamed]), pd.concat([diagnostic, diagnostic.assign(suite="organism-b")]),
                       outcomes, labels)
    assert frame.groupby("family")["problems"].sum().to_dict() == {"control": 2, "format": 1, "long": 6, "numeric": 2}
    assert int(frame.loc[frame["family"] == "long", "failed"].sum()) == 0  # its labels are the organism suite's
