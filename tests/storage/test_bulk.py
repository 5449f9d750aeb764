"""Bulk inserts (COPY on PostgreSQL, executemany on SQLite) must store exactly what SQLAlchemy's insert stores."""

import math
import random
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    select,
)

from fixability_dag.storage.bulk import NulInText, insert_rows
from fixability_dag.storage.schema import TABLES
from fixability_dag.storage.store import records

pytestmark = pytest.mark.postgres

AWKWARD = [
    "tab\there", "new\nline", "crlf\r\nend", "back\\slash", "\\N", "\\.", "literal \\t not a tab", "", " ", "quote ' \" `",
    "unicode é ß 中文 ✓ 🙂", "comma, semicolon; pipe |", "x" * 3000, "end\\", "\\\\double",
]


def awkward(rng: random.Random, limit: int | None) -> str:
    value = rng.choice(AWKWARD) + rng.choice(AWKWARD)
    return value[:limit] if limit else value


def json_value(rng: random.Random):
    return rng.choice([
        None, {"a": 1, "b": [1.5, None, "t\tab"], "nested": {"k": "é\n\\"}}, [1, "two", {"3": False}], "just a string",
        0, {"nan_free": -0.0, "big": 2**53},
    ])


def value_for(column, i: int, rng: random.Random, refs: dict):
    """A value of the column's type; None for some rows of nullable columns."""
    if column.foreign_keys:
        target = next(iter(column.foreign_keys)).column
        return refs["suites"][i] if target.name == "suite" else refs[target.table.name][i]
    if column.nullable and not column.primary_key and i % 3 == 2:
        return None
    t = column.type
    if isinstance(t, JSON):
        return json_value(rng)
    if isinstance(t, DateTime):
        return datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc) + timedelta(hours=i)
    if isinstance(t, Boolean):
        return i % 2 == 0
    if isinstance(t, Float):
        return rng.choice([0.1 + i, -1e-300, 1e300, -2.5, 1 / 3])
    if isinstance(t, (Integer, BigInteger)):
        return rng.choice([0, -7, 2**31 - 1]) if not isinstance(t, BigInteger) else rng.choice([2**40 + i, -(2**62)])
    if isinstance(t, (String, Text)):
        if column.primary_key or column.unique:
            return f"key-{i}\t{rng.choice(AWKWARD)[:5]}"[: t.length or None]
        return awkward(rng, getattr(t, "length", None))
    raise AssertionError(f"no generator for {column.table.name}.{column.name} ({t!r})")


def table_rows(table, refs: dict, n: int = 9, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    skip = {c.name for c in table.columns if c.primary_key and c.autoincrement is True and isinstance(c.type, (Integer, BigInteger))}
    rows = []
    for i in range(n):
        row = {c.name: value_for(c, i, rng, refs) for c in table.columns if c.name not in skip}
        if "sample_index" in row:
            row["sample_index"] = i  # unique rollout key
        rows.append(row)
    return rows


def read_sorted(conn, table) -> list[dict]:
    keys = [c for c in table.columns if not (c.primary_key and c.autoincrement is True and isinstance(c.type, (Integer, BigInteger)))]
    got = conn.execute(select(*keys)).mappings().all()
    return sorted((dict(r) for r in got), key=repr)


@pytest.fixture
def referenced(store):
    """Checkpoints and problems that other tables' foreign keys can point at."""
    now = datetime.now(timezone.utc)
    store.upsert("checkpoints", [{"checkpoint_id": f"ck{i}", "path": "/x", "fingerprint": "f", "registered_at": now} for i in range(9)])
    store.upsert("problems", [{"problem_id": f"p{i}", "suite": "s", "question": "q", "gold_answer": "1", "content_hash": "h"} for i in range(9)])
    return {"checkpoints": [f"ck{i}" for i in range(9)], "problems": [f"p{i}" for i in range(9)], "suites": ["s"] * 9}


@pytest.mark.parametrize("table_name", sorted(TABLES))
def test_every_table_stores_what_sqlalchemy_stores(store, referenced, table_name):
    table = TABLES[table_name]
    rows = records(table_rows(table, referenced))
    created = [c.name for c in table.primary_key.columns if c.name in rows[0]]
    keys = [tuple(r[c] for c in created) for r in rows]

    def remove(conn):
        for key in keys:
            conn.execute(delete(table).where(*[table.c[c] == v for c, v in zip(created, key)]))

    with store.engine.begin() as conn:
        conn.execute(table.insert(), rows)
        expected = read_sorted(conn, table)
        remove(conn)
    with store.engine.begin() as conn:
        assert insert_rows(conn, table, rows) == len(rows)
        got = read_sorted(conn, table)
    assert got == expected
    assert len(got) >= len(rows)


def rollouts(n: int, text=lambda i: AWKWARD[i % len(AWKWARD)]) -> pd.DataFrame:
    return pd.DataFrame([{
        "suite": "s", "problem_id": f"p{i % 3}", "phase": "diagnostic", "intervention": "retry", "sample_index": i, "seed": 2**40 + i,
        "text": text(i), "answer": None if i % 4 == 0 else f"a{i}", "is_correct": i % 5 == 0, "num_tokens": i,
        "cumulative_logprob": float("nan") if i % 7 == 0 else -0.5 * i, "mean_logprob": -0.5, "finish_reason": None if i % 6 == 0 else "stop",
    } for i in range(n)])


def nulls(values) -> list:
    return [None if pd.isna(v) else v for v in values]


def test_rollouts_round_trip_through_replace(store, referenced):
    frame = rollouts(len(AWKWARD) * 3)
    assert store.replace("rollouts", "ck1", frame, phase="diagnostic") == len(frame)
    back = store.read("rollouts", "ck1").sort_values("sample_index").reset_index(drop=True)
    assert list(back["text"]) == list(frame["text"])
    assert nulls(back["answer"]) == nulls(frame["answer"]) and nulls(frame["answer"]).count(None) == 12
    assert list(back["is_correct"].astype(bool)) == list(frame["is_correct"])
    assert list(back["seed"]) == list(frame["seed"])
    nan_rows = frame["cumulative_logprob"].isna()
    assert back.loc[nan_rows, "cumulative_logprob"].isna().all()
    assert list(back.loc[~nan_rows, "cumulative_logprob"]) == list(frame.loc[~nan_rows, "cumulative_logprob"])
    assert nulls(back["finish_reason"]) == nulls(frame["finish_reason"])


def test_json_none_and_integral_floats(store, referenced):
    store = store.for_suite("s")  # a bound store stamps its suite on every row it writes
    plan = pd.DataFrame({"problem_id": ["p0", "p1", "p2"], "action": ["skip"] * 3, "intervention": [None, "x", None],
                         "budget": [0, 8, 0], "reason": ["a\tb", "c\nd", "e\\f"], "rule_version": ["v"] * 3,
                         "thresholds": [{"d": 0.5, "m": {"k": "v"}}, None, [1, 2]]})
    store.replace("routing_plans", "ck0", plan)
    back = store.read("routing_plans", "ck0").sort_values("problem_id")
    assert list(back["thresholds"]) == [{"d": 0.5, "m": {"k": "v"}}, None, [1, 2]]
    assert list(back["reason"]) == ["a\tb", "c\nd", "e\\f"]
    # pandas makes an integer column with a hole float; COPY's text input must still get an integer
    labels = pd.DataFrame({"problem_id": ["p0", "p1"], "true_regime": ["structural"] * 2, "rescued_by": [["retry"], []],
                           "majority_rescued_by": [None, ["a"]], "cluster_id": [1.0, None], "cluster_regime": [None, "x"],
                           "cluster_method": ["gmm", "gmm"]})
    store.replace("regime_labels", "ck0", labels)
    back = store.read("regime_labels", "ck0").sort_values("problem_id")
    assert back["cluster_id"].iloc[0] == 1 and pd.isna(back["cluster_id"].iloc[1])
    assert list(back["rescued_by"]) == [["retry"], []]


def test_nul_fails_loudly_on_postgresql_and_keeps_previous_rows(store, referenced):
    store.replace("rollouts", "ck2", rollouts(10), phase="diagnostic")
    bad = rollouts(10, text=lambda i: "fine" if i != 6 else "model output with \x00 inside")
    if store.dialect == "postgresql":
        with pytest.raises(NulInText, match=r"rollouts\.text of row 6"):
            store.replace("rollouts", "ck2", bad, phase="diagnostic")
        back = store.read("rollouts", "ck2").sort_values("sample_index")
        assert list(back["text"]) == list(rollouts(10)["text"])  # the delete rolled back with the failed COPY
    else:  # SQLite stores NUL like any other character
        store.replace("rollouts", "ck2", bad, phase="diagnostic")
        assert store.read("rollouts", "ck2").sort_values("sample_index")["text"].iloc[6] == "model output with \x00 inside"


def test_quoted_identifiers_and_server_defaults(store):
    meta = MetaData()
    odd = Table("Odd Table", meta, Column("id", Integer, primary_key=True, autoincrement=True),
                Column("select", Text), Column("MixedCase", BigInteger), Column("with space", JSON), Column("ok", Boolean))
    meta.create_all(store.engine)
    rows = [{"select": "a\tb", "MixedCase": 2**40, "with space": {"x": [1]}, "ok": True},
            {"select": None, "MixedCase": None, "with space": None, "ok": False}]
    with store.engine.begin() as conn:
        insert_rows(conn, odd, rows)
        got = conn.execute(select(odd).order_by(odd.c.id)).mappings().all()
    assert [r["id"] for r in got] == [1, 2]  # left-out column took its server default
    assert [dict(r) for r in got][0] == {"id": 1, **rows[0]}
    assert got[1]["select"] is None and got[1]["with space"] is None and got[1]["ok"] is False


def test_rows_must_share_keys(store, referenced):
    table = TABLES["routing_plans"]
    good = {"checkpoint_id": "ck0", "suite": "s", "problem_id": "p0", "action": "skip", "budget": 0, "reason": "r", "rule_version": "v"}
    with store.engine.begin() as conn, pytest.raises(ValueError, match="row 1"):
        insert_rows(conn, table, [good, {**good, "intervention": "x"}])
    with store.engine.begin() as conn, pytest.raises(ValueError, match="no column"):
        insert_rows(conn, table, [{**good, "nope": 1}])
    renamed = {k: v for k, v in good.items() if k != "reason"} | {"intervention": None}  # same width, other key
    with store.engine.begin() as conn, pytest.raises(ValueError, match="row 2"):
        insert_rows(conn, table, [good, good, renamed])


def test_driver_errors_arrive_as_sqlalchemy_errors_and_roll_back(store, referenced):
    from sqlalchemy.exc import IntegrityError

    store.replace("rollouts", "ck4", rollouts(5), phase="diagnostic")
    duplicate = rollouts(5)
    duplicate.loc[3, "sample_index"] = 0  # same problem (p0) and sample as row 0: violates the unique rollout key
    with pytest.raises(IntegrityError):
        store.replace("rollouts", "ck4", duplicate, phase="diagnostic")
    orphan = rollouts(5)
    orphan.loc[2, "problem_id"] = "no-such-problem"  # violates the foreign key
    with pytest.raises(IntegrityError):
        store.replace("rollouts", "ck4", orphan, phase="diagnostic")
    assert list(store.read("rollouts", "ck4").sort_values("sample_index")["text"]) == list(rollouts(5)["text"])


def test_large_batches_cross_the_batch_boundary(store, referenced, monkeypatch):
    import fixability_dag.storage.bulk as bulk

    monkeypatch.setattr(bulk, "BATCH_ROWS", 7)
    frame = rollouts(50)
    store.replace("rollouts", "ck3", frame, phase="diagnostic")
    back = store.read("rollouts", "ck3").sort_values("sample_index")
    assert list(back["sample_index"]) == list(range(50)) and list(back["text"]) == list(frame["text"])
    assert not any(isinstance(v, float) and math.isnan(v) for v in back["text"])


def test_frame_records_equals_row_by_row_cleaning():
    import numpy as np

    from fixability_dag.storage.bulk import frame_records
    from fixability_dag.storage.store import _clean

    frame = pd.DataFrame({
        "f": [1.5, float("nan"), -0.0, 3.0], "f32": np.array([0.1, np.nan, 2, 3], dtype=np.float32),
        "i": np.array([1, -2, 2**40, 0]), "u8": np.array([1, 2, 3, 255], dtype=np.uint8), "b": [True, False, True, False],
        "obj": pd.Series([np.int64(3), None, {"a": [1]}, float("nan")], dtype=object),
        "mixed": pd.Series(["s", np.float64("nan"), [1, 2], np.bool_(True)], dtype=object),
        "s": pd.Series(["a\tb", None, "é", ""], dtype="str"), "s_py": pd.Series(["x", None, "y", "z"], dtype="string[python]"),
        "I64": pd.array([1, None, 3, 4], dtype="Int64"), "t": pd.to_datetime(["2024-01-01", None, "2024-01-03", "2024-01-04"]),
        "tz": pd.to_datetime(["2024-01-01T00:00Z"] * 4), "cat": pd.Categorical(["a", "b", None, "a"]),
    })
    expected = [{k: _clean(v) for k, v in row.items()} for row in frame.to_dict("records")]
    assert repr(frame_records(frame, _clean)) == repr(expected)
    assert frame_records(frame.iloc[0:0], _clean) == [] and frame_records(pd.DataFrame(index=range(2)), _clean) == [{}, {}]
