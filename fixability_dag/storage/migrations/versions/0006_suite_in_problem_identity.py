"""problem identity includes the suite: problems keyed by (suite, problem_id); every table that names a problem
carries its suite in its key and a composite foreign key to problems; the per-checkpoint result tables
(rescue evaluations, regime reports, feature ablations, regime transfers) gain the suite in their key

Existing rows get the suite stored for their problem (``problems.suite``); rows that name no problem get the suite
of their checkpoint's rollouts. SQLite enforces foreign keys while batch mode copies a table, and a composite key
cannot reference (suite, problem_id) before problems has that key, so the problem foreign keys go first, then the
problems key changes, then the composite foreign keys come back.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 15:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

PROBLEM_TABLES = {  # table -> its key without the suite (rollouts: a unique constraint beside its id)
    'rollouts': ('checkpoint_id', 'problem_id', 'phase', 'intervention', 'sample_index'),
    'problem_features': ('checkpoint_id', 'problem_id'),
    'probe_shifts': ('checkpoint_id', 'problem_id', 'intervention'),
    'intervention_outcomes': ('checkpoint_id', 'problem_id', 'intervention'),
    'regime_labels': ('checkpoint_id', 'problem_id'),
    'routing_plans': ('checkpoint_id', 'problem_id'),
}
CHECKPOINT_TABLES = {  # table -> (its key without the suite, the column naming the checkpoint whose suite it takes)
    'rescue_evaluations': (('checkpoint_id', 'policy', 'regime', 'matching'), 'checkpoint_id'),
    'regime_reports': (('checkpoint_id', 'method'), 'checkpoint_id'),
    'feature_ablations': (('checkpoint_id', 'features'), 'checkpoint_id'),
    'regime_transfers': (('source_checkpoint', 'target_checkpoint'), 'source_checkpoint'),
}
PROBLEM_COMMENT = 'problem suite (problems.suite)'
CHECKPOINT_COMMENTS = {
    'rescue_evaluations': 'the suite whose failed problems were evaluated',
    'regime_reports': 'the suite whose failed problems were clustered',
    'feature_ablations': 'the suite whose failed problems were clustered',
    'regime_transfers': 'the suite both checkpoints were audited on',
}
UNKNOWN_SUITE = 'unknown'


def _with_suite(key: tuple[str, ...]) -> list[str]:
    """The key with the suite right after the first column (the checkpoint), as the models declare it."""
    return [key[0], 'suite', *key[1:]]


ROLLOUT_KEY_WITH_SUITE = 'uq_rollouts_sample'  # the conventional name would pass PostgreSQL's 63 characters


def _rollout_key_name(columns: list[str]) -> str:
    """The rollouts unique key's name as stored: 0001's conventional name (``op.f``: SQLAlchemy shortens it the
    same way it did at creation where it passes PostgreSQL's 63 characters), or the model's short name with the
    suite in it."""
    return ROLLOUT_KEY_WITH_SUITE if 'suite' in columns else op.f(f"uq_rollouts_{'_'.join(columns)}")


def _set_key(batch, table: str, old: list[str], new: list[str]) -> None:
    if table == 'rollouts':
        batch.drop_constraint(_rollout_key_name(old), type_='unique')
        batch.create_unique_constraint(_rollout_key_name(new), new)
    else:
        batch.drop_constraint(f'pk_{table}', type_='primary')
        batch.create_primary_key(f'pk_{table}', new)


def _checkpoint_suite(column: str) -> str:
    """SQL for the suite of the checkpoint a row names: from its labelled problems, else its rollouts."""
    return (f"COALESCE((SELECT MIN(l.suite) FROM regime_labels l WHERE l.checkpoint_id = {column}), "
            f"(SELECT MIN(r.suite) FROM rollouts r WHERE r.checkpoint_id = {column}), '{UNKNOWN_SUITE}')")


def upgrade() -> None:
    for table, key in PROBLEM_TABLES.items():
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column('suite', sa.String(length=100), nullable=True, comment=PROBLEM_COMMENT))
        op.execute(f"UPDATE {table} SET suite = COALESCE((SELECT p.suite FROM problems p "
                   f"WHERE p.problem_id = {table}.problem_id), '{UNKNOWN_SUITE}')")
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f'fk_{table}_problem_id_problems', type_='foreignkey')
            batch.alter_column('suite', existing_type=sa.String(length=100), nullable=False)
            _set_key(batch, table, list(key), _with_suite(key))
    with op.batch_alter_table('problems') as batch:
        batch.drop_constraint('pk_problems', type_='primary')
        batch.create_primary_key('pk_problems', ['suite', 'problem_id'])
    for table in PROBLEM_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.create_foreign_key(f'fk_{table}_suite_problems', 'problems', ['suite', 'problem_id'],
                                     ['suite', 'problem_id'])
    for table, (key, checkpoint_column) in CHECKPOINT_TABLES.items():
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column('suite', sa.String(length=100), nullable=True, comment=CHECKPOINT_COMMENTS[table]))
        op.execute(f"UPDATE {table} SET suite = {_checkpoint_suite(f'{table}.{checkpoint_column}')}")
        with op.batch_alter_table(table) as batch:
            batch.alter_column('suite', existing_type=sa.String(length=100), nullable=False)
            _set_key(batch, table, list(key), _with_suite(key))


def downgrade() -> None:
    """Back to ids alone: refused while two suites share a problem id (one of them would have to be deleted)."""
    shared = op.get_bind().execute(sa.text(
        "SELECT problem_id FROM problems GROUP BY problem_id HAVING COUNT(*) > 1 LIMIT 1")).scalar()
    if shared is not None:
        raise RuntimeError(f"cannot downgrade below 0006: problem id {shared!r} exists in more than one suite")
    for table, (key, _) in CHECKPOINT_TABLES.items():
        with op.batch_alter_table(table) as batch:
            _set_key(batch, table, _with_suite(key), list(key))
            batch.drop_column('suite')
    for table in PROBLEM_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f'fk_{table}_suite_problems', type_='foreignkey')
    with op.batch_alter_table('problems') as batch:
        batch.drop_constraint('pk_problems', type_='primary')
        batch.create_primary_key('pk_problems', ['problem_id'])
    for table, key in PROBLEM_TABLES.items():
        with op.batch_alter_table(table) as batch:
            _set_key(batch, table, _with_suite(key), list(key))
            batch.drop_column('suite')
            batch.create_foreign_key(f'fk_{table}_problem_id_problems', 'problems', ['problem_id'], ['problem_id'])
