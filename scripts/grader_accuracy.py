"""The grader's accuracy on real gold answers written in every completion style (issue 13's measurement).

    .venv/bin/python -m scripts.grader_accuracy /work/shared/data/gsm8k_train_300.jsonl
    .venv/bin/python -m scripts.grader_accuracy tests/data/math500_first60.jsonl --format math
    .venv/bin/python -m scripts.grader_accuracy FILE --grader /tmp/old/answers.py   # another grader module

For every gold answer of the file and every style of :mod:`fixability_dag.testing.completion_styles` that applies
to it: is the gold, written in that style, graded right (recall), and is a wrong answer in the same style graded
wrong (the false-positive rate, which a grader that says "yes" to everything would fail)? ``--grader`` loads
``grade(gold, completion)`` from another file, e.g. an older ``answers.py``, to measure before and after.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pandas as pd

from fixability_dag.inputs.problem_files import load_gsm8k_jsonl, load_math_jsonl
from fixability_dag.testing.completion_styles import render, styles_for, wrong_answer


def load_grader(path: str | None):
    if path is None:
        from fixability_dag.core.answers import grade

        return grade
    spec = importlib.util.spec_from_file_location("grader_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.grade


def measure(golds: list[str], grade) -> pd.DataFrame:
    rows = []
    for gold in golds:
        wrong = wrong_answer(gold)
        for style in styles_for(gold):
            rows.append({"style": style, "right": bool(grade(gold, render(style, gold, wrong))[1]),
                         "false_positive": bool(grade(gold, render(style, wrong, gold))[1])})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path")
    parser.add_argument("--format", choices=["gsm8k", "math"], default="gsm8k")
    parser.add_argument("--grader", help="a Python file defining grade(gold, completion) (default: the project's)")
    args = parser.parse_args(argv)
    problems = (load_gsm8k_jsonl if args.format == "gsm8k" else load_math_jsonl)(args.path)
    frame = measure([p.gold_answer for p in problems], load_grader(args.grader))
    table = frame.groupby("style", sort=False).agg(cases=("right", "size"), accuracy=("right", "mean"),
                                                   false_positive_rate=("false_positive", "mean"))
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"\n{Path(args.path).name}: {len(problems)} golds x {table.shape[0]} styles = {len(frame)} cases; "
          f"accuracy {frame['right'].mean():.1%}, false positives {frame['false_positive'].mean():.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
