"""Grading for the lm-eval task: the project's own grader, so answer checking costs the same on both sides."""

from __future__ import annotations

from fixability_dag.core.answers import grade


def process_results(doc: dict, results: list) -> dict:
    """Grade every kept sample of one problem: the pass rate over the samples, and whether any sample solved it."""
    samples = results[0] if results and isinstance(results[0], list) else results
    correct = [grade(doc["gold_answer"], text)[1] for text in samples]
    return {"pass_rate": sum(correct) / len(correct) if correct else 0.0, "solved": float(any(correct))}
