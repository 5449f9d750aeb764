import pandas as pd
import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from fixability_dag.core.organism import OrganismSpec, organism_suite
from fixability_dag.core.problems import ArithmeticSuiteSpec, Problem, arithmetic_suite
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


def test_organism_problems_keep_their_family_and_others_keep_their_hash(store):
    """The family round-trips (it is what the gate table reads); a family-less problem's content hash is what it
    was before families existed (a stored suite is not seen as changed)."""
    organism = organism_suite(OrganismSpec(counts=(("control", 2), ("numeric", 1))))
    store.upsert_problems(organism)
    assert store.problems() == organism and {p.family for p in store.problems()} == {"control", "numeric"}
    store.upsert_problems(arithmetic_suite(ArithmeticSuiteSpec(chain_lengths=(1,), templates_per_length=1, variants_per_template=1)))
    stored = store.read("problems").set_index("problem_id")
    assert stored.loc["arith-L1-T0-V0", "content_hash"] == "da92e9ae1497ef31a5d63902b0fd963afbe5e5bd6b8be8392b87f39975aac6b3"  # before 0010


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
    [problem] = arithmetic_suite(ArithmeticSuiteSpec(chain_lengths=(1,), templates_per_length=1, variants_per_template=1))
    with store.engine.begin() as conn:  # the models are head's (problems keyed by suite too): write the old table in SQL
        conn.execute(text("INSERT INTO problems (problem_id, suite, question, gold_answer, content_hash) "
                          "VALUES (:p, :s, :q, :g, 'h')"), {"p": problem.problem_id, "s": problem.suite,
                                                             "q": problem.question, "g": problem.gold_answer})
    store.register_checkpoint("ck", "/x/ck", "f", "sft", 1)
    store.replace("rollouts", "ck", rollout_rows(4).drop(columns="suite"), phase="diagnostic")  # no suite before 0006
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
    assert set(after["suite"]) == {problem.suite}
    assert after["request_hash"].isna().all(), "rows from before 0003 carry no request hash (regenerated on resume)"
    assert {"regime_reports", "feature_ablations", "regime_transfers", "checkpoint_leases"} <= set(inspect(store.engine).get_table_names())
    store.dispose()


def test_upgrade_from_0005_gives_existing_rows_their_suite_and_lets_suites_share_ids(db_url):
    """A 0005 database with a checkpoint's audit rows: after 0006 every row names its problem's stored suite, and a
    second suite may reuse the ids without touching them. (Rows are written in SQL: the models are head's.)"""
    from fixability_dag.storage.migrations import upgrade

    store = AuditStore(db_url)
    upgrade(store.engine, "0005")
    now = "2026-12-01 00:00:00+00:00"
    with store.engine.begin() as conn:
        conn.execute(text("INSERT INTO checkpoints (checkpoint_id, path, fingerprint, registered_at) "
                          "VALUES ('ck', '/x/ck', 'f', :now)"), {"now": now})
        for pid in ("1", "2"):
            conn.execute(text("INSERT INTO problems (problem_id, suite, question, gold_answer, content_hash) "
                              "VALUES (:p, 'gsm8k_test', :q, :g, 'h')"), {"p": pid, "q": f"question {pid}", "g": pid})
            for i in range(3):
                conn.execute(text("INSERT INTO rollouts (checkpoint_id, problem_id, phase, intervention, sample_index, "
                                  "seed, text, is_correct, num_tokens) VALUES ('ck', :p, 'diagnostic', 'retry', :i, 7, "
                                  "'t', :ok, 3)"), {"p": pid, "i": i, "ok": pid == "1"})
        conn.execute(text("INSERT INTO problem_features (checkpoint_id, problem_id, base_samples, base_pass_rate) "
                          "VALUES ('ck', '2', 3, 0.0)"))
        conn.execute(text("INSERT INTO regime_labels (checkpoint_id, problem_id, true_regime) VALUES ('ck', '2', 'structural')"))
        conn.execute(text("INSERT INTO routing_plans (checkpoint_id, problem_id, action, budget, reason, rule_version) "
                          "VALUES ('ck', '2', 'skip', 0, 'r', 'v')"))
        conn.execute(text("INSERT INTO rescue_evaluations (checkpoint_id, policy, regime, matching, problems, rescued, "
                          "tokens, samples, skipped) VALUES ('ck', 'routed', 'all', 'samples', 1, 0, 0, 0, 1)"))
        conn.execute(text("INSERT INTO regime_reports (checkpoint_id, method, failed_problems) VALUES ('ck', 'gmm', 1)"))
    store.migrate()
    assert current_revision(store.engine) == head_revision() == "0012"
    for table, rows in (("problems", 2), ("rollouts", 6), ("problem_features", 1), ("regime_labels", 1),
                        ("routing_plans", 1), ("rescue_evaluations", 1), ("regime_reports", 1)):
        frame = store.read(table)
        assert len(frame) == rows and set(frame["suite"]) == {"gsm8k_test"}, table
    assert set(inspect(store.engine).get_pk_constraint("problems")["constrained_columns"]) == {"suite", "problem_id"}
    # the same ids in another suite: stored beside the first suite's, which stays as it was
    other = store.for_suite("other")
    store.upsert_problems([Problem("1", "other", "another question", "9"), Problem("2", "other", "a third", "8")])
    other.replace("rollouts", "ck", rollout_rows(2).assign(problem_id="1"), phase="diagnostic")
    first = store.for_suite("gsm8k_test")
    assert first.count("rollouts", "ck") == 6 and other.count("rollouts", "ck") == 2
    assert {p.question for p in first.problems(["1"])} == {"question 1"}
    assert {p.question for p in other.problems(["1"])} == {"another question"}
    with pytest.raises(IntegrityError):  # the composite foreign key: a rollout names a problem of its own suite
        store.for_suite("nowhere").replace("rollouts", "ck", rollout_rows(1), phase="diagnostic")
    store.dispose()


def test_downgrade_below_0006_is_refused_while_suites_share_an_id(sqlite_store):
    from alembic import command

    sqlite_store.migrate()
    sqlite_store.upsert_problems([Problem("1", "a", "q", "1"), Problem("1", "b", "q", "1")])
    cfg = alembic_config(sqlite_store.url)
    command.downgrade(cfg, "0006")  # later revisions first: a refused 0006 must not leave them half undone
    with pytest.raises(RuntimeError, match="problem id '1' exists in more than one suite"):
        command.downgrade(cfg, "0005")
    with sqlite_store.engine.begin() as conn:
        conn.execute(text("DELETE FROM problems WHERE suite = 'b'"))
    command.downgrade(cfg, "0005")
    assert current_revision(sqlite_store.engine) == "0005"
    assert "suite" not in {c["name"] for c in inspect(sqlite_store.engine).get_columns("rollouts")}


def test_models_and_migrations_agree(store):
    """Head's tables as the migrations build them are the models' tables (keys, foreign keys, columns)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from fixability_dag.storage.schema import Base

    store.migrate()
    with store.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
    assert [d for d in diffs if d[0] not in ("modify_comment",)] == []
