"""The calculator behind the ``calculator`` tool intervention: exact arithmetic on what a model wrote, never ``eval``.

A model that writes GSM8K-style annotations (``23*17=<<23*17=391>>391``) asks for a computation each time it writes
``<<expr=``. The expression is model output, so it is parsed here by a small recursive-descent parser that knows
only what GSM8K's own annotations use (checked on the annotations of ``tests/data/gsm8k_train_first40.jsonl``):

* numbers: integers and decimals (``12``, ``2.50``, ``.4``), with commas as thousands separators (``1,750``: a
  comma must be followed by exactly three digits, and the first group has one to three digits);
* the binary operators ``+ - * /`` with the usual precedence, left-associative; unary ``-`` and ``+``
  (``+30+46`` opens an annotation in GSM8K's training set);
* parentheses and spaces.

Anything else (letters, ``**``, ``%``, ``^``, ``=``, newlines) is refused. Arithmetic is exact
(:class:`fractions.Fraction`), so ``0.1+0.2`` is ``0.3`` and ``16*1/2`` is ``8``.

Every refusal is a :class:`CalculatorRefusal` whose ``reason`` is one of :data:`REASONS` and whose message says
what was wrong; nothing else escapes :func:`evaluate` for any input string (the tests feed it garbage). Limits keep
the work bounded whatever the model writes: at most :data:`MAX_EXPRESSION_CHARS` characters, :data:`MAX_DEPTH`
nested parentheses, operands of at most :data:`MAX_INTEGER_DIGITS` integer and :data:`MAX_DECIMAL_DIGITS` decimal
digits, and every intermediate and final value below :data:`MAX_MAGNITUDE` in absolute value with a denominator
below :data:`MAX_DENOMINATOR` (so ``999999999*999999999`` or a hundred divisions by 7 are refused, not computed).
"""

from __future__ import annotations

from fractions import Fraction

MAX_EXPRESSION_CHARS = 200
MAX_DEPTH = 16
MAX_INTEGER_DIGITS = 15
MAX_DECIMAL_DIGITS = 10
MAX_MAGNITUDE = 10**15
MAX_DENOMINATOR = 10**15
RESULT_DECIMALS = 6
"""Non-integer results are written with at most this many decimal places (see :func:`format_number`)."""

REASONS = ("empty", "too_long", "too_deep", "malformed", "too_large", "division_by_zero")


class CalculatorRefusal(ValueError):
    """The calculator will not compute this expression; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str):
        assert reason in REASONS, reason
        self.reason = reason
        super().__init__(f"{reason}: {message}")


_DIGITS = frozenset("0123456789")
_OPERATORS = frozenset("+-*/")


class _Parser:
    """expr := term (('+'|'-') term)* ; term := unary (('*'|'/') unary)* ; unary := ('+'|'-')* atom ;
    atom := number | '(' expr ')'. Spaces are skipped between tokens; unary signs are read in a loop, so only
    parentheses add recursion depth (capped by :data:`MAX_DEPTH`)."""

    def __init__(self, text: str):
        self.text, self.pos, self.depth = text, 0, 0

    def fail(self, reason: str, message: str) -> CalculatorRefusal:
        return CalculatorRefusal(reason, f"{message} at character {self.pos + 1} of {self.text!r}")

    def peek(self) -> str:
        while self.pos < len(self.text) and self.text[self.pos] == " ":
            self.pos += 1
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def parse(self) -> Fraction:
        value = self.expr()
        if self.peek():
            char = self.peek()
            what = "unbalanced ')'" if char == ")" else f"unexpected {char!r}"
            raise self.fail("malformed", what)
        return value

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.text[self.pos]
            self.pos += 1
            right = self.term()
            value = _checked(value + right if op == "+" else value - right, self)
        return value

    def term(self) -> Fraction:
        value = self.unary()
        while self.peek() in ("*", "/"):
            op = self.text[self.pos]
            self.pos += 1
            right = self.unary()
            if op == "*":
                value = _checked(value * right, self)
            elif right == 0:
                raise self.fail("division_by_zero", "division by zero")
            else:
                value = _checked(value / right, self)
        return value

    def unary(self) -> Fraction:
        negative = False
        while self.peek() in ("+", "-"):
            negative ^= self.text[self.pos] == "-"
            self.pos += 1
        value = self.atom()
        return -value if negative else value

    def atom(self) -> Fraction:
        char = self.peek()
        if char == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.fail("too_deep", f"more than {MAX_DEPTH} nested parentheses")
            self.pos += 1
            value = self.expr()
            if self.peek() != ")":
                raise self.fail("malformed", "unbalanced '(' (no closing ')')")
            self.pos += 1
            self.depth -= 1
            return value
        if char in _DIGITS or char == ".":
            return self.number()
        if not char:
            raise self.fail("malformed", "expression ends where a number was expected (dangling operator?)")
        if char in _OPERATORS or char == ")":
            raise self.fail("malformed", f"operator {char!r} where a number was expected")
        raise self.fail("malformed", f"unexpected {char!r} (only digits, '.', ',', '+-*/', parentheses and spaces)")

    def number(self) -> Fraction:
        start = self.pos
        groups = [self._digits()]
        while self.pos < len(self.text) and self.text[self.pos] == ",":
            self.pos += 1
            group = self._digits()
            if len(group) != 3 or not 1 <= len(groups[0]) <= 3:
                raise self.fail("malformed", f"comma in {self.text[start:self.pos]!r} is not a thousands separator")
            groups.append(group)
        integer = "".join(groups)
        decimals = ""
        if self.pos < len(self.text) and self.text[self.pos] == ".":
            self.pos += 1
            decimals = self._digits()
            if not decimals and not integer:
                raise self.fail("malformed", "a lone '.' is not a number")
        if self.pos < len(self.text) and self.text[self.pos] in ".,":
            raise self.fail("malformed", f"misplaced {self.text[self.pos]!r} in a number")
        if len(integer.lstrip("0")) > MAX_INTEGER_DIGITS or len(decimals) > MAX_DECIMAL_DIGITS:
            raise self.fail("too_large", f"operand {self.text[start:self.pos]!r} has more than {MAX_INTEGER_DIGITS} "
                                         f"integer or {MAX_DECIMAL_DIGITS} decimal digits")
        return _checked(Fraction(int(integer or "0") * 10 ** len(decimals) + int(decimals or "0"), 10 ** len(decimals)),
                        self)

    def _digits(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _DIGITS:
            self.pos += 1
        return self.text[start:self.pos]


def _checked(value: Fraction, parser: _Parser) -> Fraction:
    if abs(value) >= MAX_MAGNITUDE:
        raise parser.fail("too_large", f"a value reaches {MAX_MAGNITUDE:.0e} in absolute value")
    if value.denominator >= MAX_DENOMINATOR:
        raise parser.fail("too_large", f"a value's denominator reaches {MAX_DENOMINATOR:.0e}")
    return value


def evaluate(expression: str) -> Fraction:
    """The exact value of ``expression``, or :class:`CalculatorRefusal` (the only exception it raises)."""
    if not isinstance(expression, str):
        raise CalculatorRefusal("malformed", f"not a string: {type(expression).__name__}")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorRefusal("too_long", f"{len(expression)} characters, more than {MAX_EXPRESSION_CHARS}")
    if not expression.strip(" "):
        raise CalculatorRefusal("empty", "no expression")
    return _Parser(expression).parse()


def format_number(value: Fraction) -> str:
    """GSM8K-style: an integer plainly (``391``, ``-5``, never ``391.0``); anything else as a decimal rounded half
    away from zero to :data:`RESULT_DECIMALS` places, trailing zeros dropped (``2.5``, ``0.333333``, ``0.4``). A
    non-integer that rounds to an integer is written as that integer (``1/3000000`` gives ``0``)."""
    if value.denominator == 1:
        return str(value.numerator)
    scale = 10**RESULT_DECIMALS
    units = int(abs(value) * scale + Fraction(1, 2))  # exact: int() of a positive Fraction is its floor
    whole, frac = divmod(units, scale)
    text = f"{whole}.{frac:0{RESULT_DECIMALS}d}".rstrip("0").rstrip(".")
    return text if value > 0 or text == "0" else "-" + text


def calculate(expression: str) -> str:
    """:func:`evaluate` then :func:`format_number`: what the tool writes after ``<<expr=``."""
    return format_number(evaluate(expression))
