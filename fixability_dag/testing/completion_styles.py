"""How real models write a final answer: completion templates for testing and measuring the grader.

Each style is one way a post-trained model states its result (GSM8K's ``####``, MATH's ``\\boxed{}``, chat
models' ``**Final Answer:**`` or bold number, Minerva's "I hope it is correct", units after the number, an
assignment, a reasoning model's ``<think>`` block, a few-shot model running on into a new question). A template
has an ``{answer}`` slot and, for the two styles whose point is that a *decoy* elsewhere in the text must be
ignored (inside the think block; in the invented next question), a ``{decoy}`` slot.

``tests/core/test_answers.py`` renders every style with real GSM8K and MATH gold answers (``tests/data/``) and
``scripts/grader_accuracy.py`` measures the grader's accuracy over styles x golds with the same table, so the
number quoted and the number tested are one.
"""

from __future__ import annotations

import re
from decimal import Decimal

LEAD = "Adding the amounts step by step gives the total."

STYLES: dict[str, str] = {
    "gsm8k_marker": LEAD + "\n#### {answer}",
    "answer_is": LEAD + " The answer is {answer}.",
    "boxed": LEAD + " So the final answer is $\\boxed{{{answer}}}$.",
    "answer_colon": LEAD + "\n\nAnswer: {answer}",
    "bold_final_answer": LEAD + "\n\n**Final Answer:** {answer}",
    "bold_number": LEAD + " The total is:\n\n**{answer}**",
    "unit_after_answer_is": LEAD + " The answer is {answer} dollars.",
    "unit_after_marker": LEAD + "\n#### {answer} apples",
    "assignment": "Let x be the total. " + LEAD + "\nThe answer is x = {answer}.",
    "math_delimited": LEAD + " The answer is ${answer}$.",
    "minerva": LEAD + "\nFinal Answer: The final answer is {answer}. I hope it is correct.",
    "run_on_question": LEAD + "\n#### {answer}\n\nQ: Tom has 3 apples and buys 4 more. How many apples does he have?\n"
                       "A: 3 + 4 = 7\n#### {decoy}",
    "think_block": "<think>\nLet me add these up. Maybe the answer is {decoy}? No: recount the second group.\n</think>\n\n"
                   "The answer is {answer}.",
}
"""The 13 styles, by name. Those in :data:`NUMERIC_ONLY` only make sense when the answer is a plain number."""

NUMERIC_ONLY = frozenset({"bold_number", "unit_after_answer_is", "unit_after_marker", "assignment"})
"""Styles that wrap the answer in something only a number takes (units, ``x = ``, a bare bold value)."""

_PLAIN_NUMBER = re.compile(r"-?\d[\d,]*(\.\d+)?|-?\\frac\{\d+\}\{\d+\}")
_DECIMAL = re.compile(r"-?\d[\d,]*(\.\d+)?")


def is_plain_number(gold: str) -> bool:
    """An integer, decimal or ``\\frac{a}{b}``, judged by its spelling alone (not by the grader under test)."""
    return bool(_PLAIN_NUMBER.fullmatch(gold.strip()))


def styles_for(gold: str) -> dict[str, str]:
    """The styles that apply to ``gold``."""
    return {name: t for name, t in STYLES.items() if name not in NUMERIC_ONLY or is_plain_number(gold)}


def wrong_answer(gold: str) -> str:
    """An answer that differs from ``gold`` in value, made without the grader: a number plus one (``\\frac{a}{b}``:
    ``\\frac{a+b}{b}``), anything else with ``+ 1`` appended."""
    gold = gold.strip()
    if _DECIMAL.fullmatch(gold):
        return str(Decimal(gold.replace(",", "")) + 1)
    if fraction := re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", gold):
        sign, numerator, denominator = fraction.groups()
        return f"{sign}\\frac{{{int(numerator) + int(denominator)}}}{{{denominator}}}"
    return f"{gold} + 1"


def render(style: str, answer: str, decoy: str) -> str:
    """One completion in ``style`` stating ``answer`` (with ``decoy`` where the style has a distractor)."""
    return STYLES[style].format(answer=answer, decoy=decoy)
