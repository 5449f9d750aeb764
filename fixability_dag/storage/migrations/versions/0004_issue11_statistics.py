"""regime reports: balanced accuracy, seed and resampling spread apart, shuffled-label nulls, a note;
rescue evaluations: the tokens a policy spends before it can choose; regime labels: the replicate's regime;
problem features: retry headroom; probe shifts per intervention; feature ablations: the selecting half's accuracy

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 00:20:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

COLUMNS = (
    ('balanced_accuracy', sa.Float(), 'mean per-regime recall (matched, for clusters)'),
    ('seed_std', sa.Float(), 'clusters: std over mixture seeds on all problems'),
    ('null_mean', sa.Float(), 'same procedure on shuffled labels: mean accuracy'),
    ('null_q95', sa.Float(), None),
    ('balanced_null_mean', sa.Float(), None),
    ('balanced_null_q95', sa.Float(), None),
    ('null_p', sa.Float(), 'share of shuffled-label balanced accuracies >= observed'),
    ('note', sa.String(length=200), 'why a value could not be computed'),
)

RESCUE_COLUMNS = (
    ('upfront_tokens', sa.BigInteger(), 'generated before choosing: probe or label phase'),
    ('policy_tokens', sa.BigInteger(), 'tokens + upfront_tokens: what the policy costs'),
)


def upgrade() -> None:
    # Rows written before this revision keep NULL in the new columns until their checkpoint is re-audited
    # (CODE_VERSION 0.3.0 makes the nightly schedule do that).
    with op.batch_alter_table('regime_reports') as batch:
        for name, type_, comment in COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True, comment=comment))
    with op.batch_alter_table('rescue_evaluations') as batch:
        for name, type_, comment in RESCUE_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True, comment=comment))
    with op.batch_alter_table('problem_features') as batch:
        batch.add_column(sa.Column('retry_headroom', sa.Float(), nullable=True,
                                   comment='empirical-Bayes P(success within the retry budget)'))
    op.create_table('probe_shifts',
    sa.Column('checkpoint_id', sa.String(length=128), nullable=False),
    sa.Column('problem_id', sa.String(length=200), nullable=False),
    sa.Column('intervention', sa.String(length=64), nullable=False),
    sa.Column('shift', sa.Float(), nullable=True, comment='TV(base, probe) minus its permutation null'),
    sa.ForeignKeyConstraint(['checkpoint_id'], ['checkpoints.checkpoint_id'], name=op.f('fk_probe_shifts_checkpoint_id_checkpoints'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['problem_id'], ['problems.problem_id'], name=op.f('fk_probe_shifts_problem_id_problems')),
    sa.PrimaryKeyConstraint('checkpoint_id', 'problem_id', 'intervention', name=op.f('pk_probe_shifts'))
    )
    with op.batch_alter_table('feature_ablations') as batch:
        batch.add_column(sa.Column('selection_accuracy', sa.Float(), nullable=True,
                                   comment='on the half that ranks; accuracy is the other'))
    with op.batch_alter_table('regime_labels') as batch:
        batch.add_column(sa.Column('replicate_regime', sa.String(length=32), nullable=True,
                                   comment='regime from the replicate label phase'))


def downgrade() -> None:
    with op.batch_alter_table('feature_ablations') as batch:
        batch.drop_column('selection_accuracy')
    op.drop_table('probe_shifts')
    with op.batch_alter_table('problem_features') as batch:
        batch.drop_column('retry_headroom')
    with op.batch_alter_table('regime_labels') as batch:
        batch.drop_column('replicate_regime')
    with op.batch_alter_table('rescue_evaluations') as batch:
        for name, _, _ in reversed(RESCUE_COLUMNS):
            batch.drop_column(name)
    with op.batch_alter_table('regime_reports') as batch:
        for name, _, _ in reversed(COLUMNS):
            batch.drop_column(name)
