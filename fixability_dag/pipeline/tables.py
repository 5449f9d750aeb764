"""Markdown tables for the UI's metadata, docs/results.md, the benchmarks and the reliability report.

One writer, so every table escapes cell text the same way (a ``|`` or a newline inside a model's output or an
error message would otherwise break the row) and numbers read alike everywhere: floats to a fixed number of
places, missing values as an empty cell, numeric columns right-aligned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd
from tabulate import tabulate


def _cell(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return value.replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    return value


def markdown_table(rows: pd.DataFrame | Sequence[Mapping] | Sequence[Sequence], columns: Sequence[str] | None = None,
                   *, floatfmt: str | Sequence[str] = ".3f", intfmt: str = "",
                   empty: str = "_(no rows)_") -> str:
    """A GitHub-style pipe table of ``rows`` (a frame, dicts or sequences), restricted to and ordered by ``columns``.

    With sequences, ``columns`` are the headers. ``floatfmt``/``intfmt`` are format specs (``",.1f"``, ``","``);
    ``floatfmt`` may also give one spec per column.
    """
    if isinstance(rows, pd.DataFrame):
        frame = rows
    elif rows and not isinstance(rows[0], Mapping):
        frame = pd.DataFrame(list(rows), columns=list(columns) if columns else None)
    else:
        frame = pd.DataFrame(list(rows))
    if columns is not None:
        frame = frame[list(columns)]
    if frame.empty:
        return empty
    data = [[_cell(v) for v in row] for row in frame.itertuples(index=False, name=None)]
    return tabulate(data, headers=[str(c) for c in frame.columns], tablefmt="pipe", floatfmt=floatfmt, intfmt=intfmt,
                    missingval="", disable_numparse=False)


def markdown_mapping(values: Mapping, key: str, value: str, **kwargs) -> str:
    """A two-column table of a mapping (e.g. regime -> share)."""
    return markdown_table([{key: k, value: v} for k, v in values.items()], **kwargs)
