"""Bulk inserts inside an open SQLAlchemy transaction: COPY on PostgreSQL, one big executemany on SQLite.

``conn.execute(table.insert(), rows)`` costs SQLAlchemy's per-row parameter processing plus, on PostgreSQL, one
round of the protocol per batch of ``INSERT ... VALUES`` statements; at 640,000 rollouts per checkpoint that is the
slowest step after generation. Here:

* **PostgreSQL (psycopg 3)**: ``COPY table (cols) FROM STDIN`` on the raw DBAPI connection *of the same
  SQLAlchemy connection*, so it joins the caller's transaction: the delete-then-insert of ``AuditStore._rewrite``
  stays atomic, and a failed COPY rolls back with everything else. psycopg writes the text format itself (tabs,
  newlines, backslashes escaped; ``None`` as ``\\N``), so no value is ever spliced into SQL. PostgreSQL cannot
  store NUL (0x00) in text: psycopg refuses such a value before it is sent, the COPY is aborted, and we re-raise
  naming the table, column and row.
* **SQLite**: one ``executemany`` of a pre-rendered, parameterised ``INSERT`` per 50,000 rows, skipping
  SQLAlchemy's per-row dict handling.
* **anything else**: SQLAlchemy's own executemany, in batches.

Values are first passed through each column type's SQLAlchemy bind processor, exactly as ``conn.execute`` would,
so JSON (``None`` included, stored as JSON ``null`` like SQLAlchemy does), booleans and timestamps land identically
on every path. Rows must be mappings of plain Python values with the same keys (what ``store.records`` returns);
columns left out get their server default. Driver errors are re-raised as the SQLAlchemy exception
``conn.execute`` would raise (``IntegrityError``, ``OperationalError``, ...), so callers' handlers keep working;
statements sent this way do not pass through SQLAlchemy's cursor events or echo log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import repeat
from operator import add, itemgetter
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Table
from sqlalchemy.exc import DBAPIError

BATCH_ROWS = 50_000
"""Rows per executemany / per list of prepared tuples: bounds the extra memory to ~50k tuples."""

FALLBACK_BATCH = 5_000


class NulInText(ValueError):
    """A text value holds a NUL (0x00) character, which PostgreSQL rejects; nothing of the write was kept."""


def frame_records(frame: pd.DataFrame, clean: Callable[[Any], Any]) -> list[dict]:
    """``[{k: clean(v) for k, v in row.items()} for row in frame.to_dict("records")]``, built column by column.

    ``clean`` maps NaN to None and numpy scalars to Python values (``store._clean``). For numeric, boolean and
    string columns the same result comes from whole-column conversions, without one ``clean`` call per value: at
    640,000 rollouts x 13 columns the row-wise version took longer than the database write itself. Other columns
    (object, datetime, nullable extension types) still go through ``clean`` value by value.
    """
    columns = [_column_values(frame.iloc[:, i], clean) for i in range(frame.shape[1])]
    if not columns:
        return [{} for _ in range(len(frame))]
    return list(map(dict, map(zip, repeat(list(frame.columns)), zip(*columns))))


def _column_values(column: pd.Series, clean: Callable[[Any], Any]) -> list:
    dtype = column.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biu":
        return column.to_numpy().tolist()
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        values = column.to_numpy()
        boxed = values.astype(object)
        boxed[np.isnan(values)] = None
        return boxed.tolist()
    if isinstance(dtype, pd.StringDtype):
        return column.to_numpy(dtype=object, na_value=None).tolist()
    if dtype == object:
        return [v if type(v) is str else clean(v) for v in column.to_numpy().tolist()]
    # rare dtypes (datetimes, nullable integers, categoricals): box exactly as to_dict does, one column at a time
    return [clean(row["v"]) for row in column.rename("v").to_frame().to_dict("records")]


def insert_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert ``rows`` into ``table`` inside ``conn``'s current transaction; returns the number of rows."""
    if not rows:
        return 0
    columns = list(rows[0])
    unknown = [c for c in columns if c not in table.c]
    if unknown:
        raise ValueError(f"table {table.name} has no column(s) {unknown}")
    _check_same_keys(table, rows, columns)
    dialect = conn.dialect
    if _client_defaults_missing(table, columns):  # only SQLAlchemy knows how to fill those in
        _insert_generic(conn, table, rows)
    elif dialect.name == "postgresql" and dialect.driver == "psycopg":
        _copy_postgresql(conn, table, columns, rows)
    elif dialect.name == "sqlite" and dialect.paramstyle == "qmark":
        _executemany_sqlite(conn, table, columns, rows)
    else:
        _insert_generic(conn, table, rows)
    return len(rows)


def _check_same_keys(table: Table, rows: Sequence[Mapping], columns: list[str]) -> None:
    """Every row has exactly row 0's keys: same length here, and no key missing (checked while reading values)."""
    width = len(columns)
    if any(len(row) != width for row in rows):
        i = next(i for i, row in enumerate(rows) if len(row) != width)
        raise ValueError(f"{table.name} row {i} has columns {sorted(rows[i])}, row 0 has {sorted(columns)}: every row needs the same keys")


def _client_defaults_missing(table: Table, columns: list[str]) -> bool:
    return any(c.name not in columns and (c.default is not None or c.onupdate is not None) for c in table.columns)


def _layout(conn: Connection, table: Table, columns: list[str], integral_floats: bool = False) -> tuple[list[str], list[Callable]]:
    """Column order for the statement, and the converters of its trailing columns.

    Columns whose type has a SQLAlchemy bind processor (and, for COPY, integer columns) go last, each with its
    converter; the others first, read straight from the rows. Putting them last lets rows become tuples mostly
    in C (``itemgetter``, then one tuple concatenation) instead of column by column.
    """
    plain, converted, converters = [], [], []
    for name in columns:
        sql_type = table.c[name].type
        steps = [p for p in (sql_type.dialect_impl(conn.dialect).bind_processor(conn.dialect),) if p is not None]
        if integral_floats and _is_integer(sql_type):
            steps.append(_int_if_integral)
        if not steps:
            plain.append(name)
            continue
        converted.append(name)
        converters.append(steps[0] if len(steps) == 1 else _chain(steps))
    return plain + converted, converters


def _chain(steps: list[Callable]) -> Callable:
    def convert(value):
        for step in steps:
            value = step(value)
        return value

    return convert


def _tuples(table: Table, rows: Sequence[Mapping], columns: list[str], converters: list[Callable]) -> list[tuple]:
    """Rows as tuples in ``columns`` order; the last ``len(converters)`` columns pass through their converter."""
    plain, converted = columns[: len(columns) - len(converters)], columns[len(columns) - len(converters) :]
    try:
        head = list(map(itemgetter(*plain), rows)) if len(plain) > 1 else [(r[plain[0]],) for r in rows] if plain else [()] * len(rows)
        tails = [list(map(convert, [r[c] for r in rows])) for c, convert in zip(converted, converters)]
    except KeyError as exc:
        i = next(i for i, row in enumerate(rows) if not set(columns) <= set(row))
        raise ValueError(f"{table.name} row {i} has columns {sorted(rows[i])}, row 0 has {sorted(columns)}: every row "
                         "needs the same keys") from exc
    return list(map(add, head, zip(*tails))) if tails else head


def _executemany_sqlite(conn: Connection, table: Table, columns: list[str], rows: Sequence[Mapping]) -> None:
    columns, converters = _layout(conn, table, columns)
    quote = conn.dialect.identifier_preparer
    sql = (f"INSERT INTO {quote.format_table(table)} ({', '.join(quote.quote(c) for c in columns)}) "
           f"VALUES ({', '.join('?' for _ in columns)})")
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        for start in range(0, len(rows), BATCH_ROWS):
            batch = _tuples(table, rows[start : start + BATCH_ROWS], columns, converters)
            with _sqlalchemy_errors(conn, sql):
                cursor.executemany(sql, batch)
    finally:
        cursor.close()


def _copy_postgresql(conn: Connection, table: Table, columns: list[str], rows: Sequence[Mapping]) -> None:
    from psycopg import DataError, sql

    columns, converters = _layout(conn, table, columns, integral_floats=True)
    target = sql.Identifier(table.schema, table.name) if table.schema else sql.Identifier(table.name)
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(target, sql.SQL(", ").join(map(sql.Identifier, columns)))
    raw = conn.connection.dbapi_connection
    try:
        with _sqlalchemy_errors(conn, statement.as_string(raw)), raw.cursor() as cursor, cursor.copy(statement) as copy:
            for start in range(0, len(rows), BATCH_ROWS):
                for values in _tuples(table, rows[start : start + BATCH_ROWS], columns, converters):
                    copy.write_row(values)
    except DBAPIError as exc:
        where = _find_nul(rows, columns) if isinstance(exc.orig, DataError) else None
        if where is None:
            raise
        row, column = where
        raise NulInText(f"{table.name}.{column} of row {row} contains a NUL (0x00) character, which PostgreSQL cannot "
                        "store; sanitise the value before writing (nothing of this write was kept)") from exc.orig


@contextmanager
def _sqlalchemy_errors(conn: Connection, statement: str) -> Iterator[None]:
    """Wrap a driver exception as the SQLAlchemy one ``conn.execute`` would raise (``exc.orig`` is the driver's)."""
    error = conn.dialect.loaded_dbapi.Error
    try:
        yield
    except error as exc:
        raise DBAPIError.instance(statement, None, exc, error, hide_parameters=True, dialect=conn.dialect) from exc


def _is_integer(sql_type) -> bool:
    from sqlalchemy import Integer

    return isinstance(sql_type, Integer) or any(isinstance(v, Integer) for v in getattr(sql_type, "_variant_mapping", {}).values())


def _int_if_integral(value: Any) -> Any:
    """Integer columns accept ``3.0`` in an INSERT (an assignment cast) but not in COPY's text input; pandas turns
    an integer column holding a missing value into floats, so integral floats are written as ints. A fractional
    value still fails loudly."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _find_nul(rows: Sequence[Mapping], columns: list[str]) -> tuple[int, str] | None:
    for i, row in enumerate(rows):
        for column in columns:
            value = row[column]
            if isinstance(value, str) and "\x00" in value:
                return i, column
    return None


def _insert_generic(conn: Connection, table: Table, rows: Sequence[Mapping]) -> None:
    for start in range(0, len(rows), FALLBACK_BATCH):
        conn.execute(table.insert(), list(rows[start : start + FALLBACK_BATCH]))
