import pandas as pd
import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from fixability_dag.core.problems import ArithmeticSuiteSpec, arithmetic_suite
from fixability_dag.storage.migrations import alembic_config, current_revision
from fixability_dag.storage.schema import TABLES
from fixability_dag.storage.store import AuditStore, DatabaseUnavailable, redact

from tests.support import rollout_rows

pytestmark = pytest.mark.postgres


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_migration_creates_every_table_and_is_idempotent(store):
    store.migrate()
    tables = set(inspect(store.engine).get_table_names())
    assert set(TABLES) <= tables
    assert current_revision(store.engine) == head_revision()
    indexes = {ix["name"] for ix in inspect(store.engine).get_indexes("rollouts")}
    assert {"ix_rollouts_checkpoint_phase", "ix_rollouts_problem"} <= indexes


def test_problem_upsert_never_duplicates(store):
    problems = arithmetic_suite(ArithmeticSuiteSpec(chain_lengths=(1, 2), templates_per_length=1, variants_per_template=2))
    assert store.upsert_problems(problems) == 4
    assert store.upsert_problems(problems) == 4
    assert store.count("problems") == 4
    assert store.problems([problems[0].problem_id]) == [problems[0]]


def test_rollout_inserts_never_duplicate_and_group_deletes_remove_what_they_name(store):
    store.upsert_problems(arithmetic_suite(ArithmeticSuiteSpec(chain_lengths=(1,), templates_per_length=1, variants_per_template=1)))
    store.register_checkpoint("ck", "/x/ck", "f1")
    group = [("arith-L1-T0-V0", "retry")]
    assert store.insert_rollouts("ck", rollout_rows(4)) == 4
    assert store.rollout_groups("ck", "diagnostic") == {group[0]: (None, 4)}
    with pytest.raises(IntegrityError):  # a stored group not deleted first is refused, not duplicated
        store.insert_rollouts("ck", rollout_rows(6))
    assert store.count("rollouts", "ck") == 4
    store.delete_rollout_groups("ck", "diagnostic", [("arith-L1-T0-V0", "other")])  # names no stored group
    assert store.count("rollouts", "ck") == 4
    store.delete_rollout_groups("ck", "diagnostic", group)
    assert store.insert_rollouts("ck", rollout_rows(6)) == 6
    assert store.count("rollouts", "ck") == 6


def test_replace_is_atomic_and_scoped(store):
    store.upsert_problems(arithmetic_suite(ArithmeticSuiteSpec(chain_lengths=(1,), templates_per_length=1, variants_per_template=1)))
    store.register_checkpoint("ck-a", "/x/ck-a", "f1", "sft", 10)
    store.register_checkpoint("ck-b", "/x/ck-b", "f2", "sft", 20)
    assert store.replace("rollouts", "ck-a", rollout_rows(6), phase="diagnostic") == 6
    assert store.replace("rollouts", "ck-b", rollout_rows(4), phase="diagnostic") == 4
    assert store.replace("rollouts", "ck-a", rollout_rows(5), phase="diagnostic") == 5  # re-run replaces
    assert store.count("rollouts", "ck-a") == 5 and store.count("rollouts", "ck-b") == 4
    back = store.read("rollouts", "ck-a").sort_values("sample_index")
    assert back["mean_logprob"].isna().sum() == 1 and back["answer"].isna().sum() == 2

    bad = rollout_rows(3)
    bad.loc[2, "sample_index"] = 0  # violates the unique key: the whole replace must roll back
    with pytest.raises(Exception):
        store.replace("rollouts", "ck-a", bad, phase="diagnostic")
    assert store.count("rollouts", "ck-a") == 5


def test_audit_run_bookkeeping_and_latest(store):
    store.register_checkpoint("ck", "/x/ck", "f", None, None)
    first = store.start_run("run1", "ck", "rescue_evaluation", "0.0.9", "h1", {"a": 1})
    store.finish_run(first, "success", 3, {"x": float("nan"), "y": [1.5]})
    second = store.start_run("run2", "ck", "rescue_evaluation", "0.1.0", "h2", {"a": 2})
    store.finish_run(second, "failed")
    latest = store.latest_audits("rescue_evaluation")
    assert list(latest["code_version"]) == ["0.0.9"]  # failed runs do not count as audited
    runs = store.read("audit_runs").set_index("run_id")
    assert runs.loc["run1", "summary"] == {"x": None, "y": [1.5]} and runs.loc["run1", "seconds"] >= 0


def test_password_is_redacted():
    url = "postgresql+psycopg://auditor:s3cret@db.internal:5432/audits"
    assert "s3cret" not in redact(url) and "***" in redact(url)
    assert "s3cret" not in repr(AuditStore(url))  # creating the engine does not connect


def test_unreachable_database_gives_a_clear_error_without_password():
    store = AuditStore("postgresql+psycopg://auditor:s3cret@127.0.0.1:1/nowhere")
    with pytest.raises(DatabaseUnavailable) as err:
        store.migrate()
    assert "127.0.0.1:1" in str(err.value) and "s3cret" not in str(err.value)


def test_sqlite_uses_wal(sqlite_store):
    with sqlite_store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


@pytest.mark.parametrize("start", ["0001", "0002"])
def test_upgrade_from_an_earlier_revision_keeps_data(db_url, start):
    """A database created by an earlier migration, with rows in it, upgrades to head without losing them."""
    from fixability_dag.storage.migrations import upgrade

    store = AuditStore(db_url)
    upgrade(store.engine, start)
    assert current_revision(store.engine) == start
    store.upsert_problems(arithmetic_suite(ArithmeticSuiteSpec(chain_lengths=(1,), templates_per_length=1, variants_per_template=1)))
    store.register_checkpoint("ck", "/x/ck", "f", "sft", 1)
    store.replace("rollouts", "ck", rollout_rows(4), phase="diagnostic")
    with store.engine.connect() as conn:  # the ORM model is head's: read the old table as it is
        before = pd.read_sql(text("SELECT * FROM rollouts ORDER BY sample_index"), conn)
    tables_before = set(inspect(store.engine).get_table_names())
    assert "checkpoint_leases" not in tables_before
    assert ("regime_reports" in tables_before) == (start >= "0002")
    store.migrate()
    assert current_revision(store.engine) == head_revision()
    assert store.count("rollouts", "ck") == 4 and store.count("problems") == 1
    after = store.read("rollouts", "ck").sort_values("sample_index").reset_index(drop=True)
    pd.testing.assert_frame_equal(after[before.columns], before, check_dtype=False)
    assert after["request_hash"].isna().all(), "rows from before 0003 carry no request hash (regenerated on resume)"
    assert {"regime_reports", "feature_ablations", "regime_transfers", "checkpoint_leases"} <= set(inspect(store.engine).get_table_names())
    store.dispose()
