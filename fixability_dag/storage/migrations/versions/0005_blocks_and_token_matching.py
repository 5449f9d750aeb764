"""intervention outcomes: the budget a group could draw and its fixed first block (label phases stop early);
rescue evaluations: a matching column (samples | tokens) in the key, the retry baseline of each matching and
the paired 2x2 cells (pooled intervals add them over checkpoints)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 06:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

OUTCOME_COLUMNS = (
    ('budget', sa.Integer(), 'samples the group could draw; samples is what it drew'),
    ('first_block_samples', sa.Integer(), 'the fixed first block: rates read from it'),
    ('first_block_correct', sa.Integer(), None),
    ('first_block_tokens', sa.Integer(), None),
)

RESCUE_COLUMNS = (
    ('retry_samples', sa.Integer(), 'eval samples per problem the retry baseline got'),
    ('baseline_rescued', sa.Integer(), 'problems the retry baseline rescued'),
    ('baseline_tokens', sa.BigInteger(), 'tokens the retry baseline generated'),
    ('token_match_capped', sa.Boolean(), "retry's draws ran out before the policy's tokens"),
    ('pairs_both', sa.Integer(), 'paired outcomes: rescued by both'),
    ('pairs_policy_only', sa.Integer(), 'rescued by the policy, not the baseline'),
    ('pairs_retry_only', sa.Integer(), 'rescued by the baseline, not the policy'),
)


def upgrade() -> None:
    # Rows written before this revision are the equal-samples comparison (the only one there was); their new columns
    # stay NULL until the checkpoint is re-audited (CODE_VERSION 0.4.0 makes the nightly schedule do that).
    with op.batch_alter_table('intervention_outcomes') as batch:
        for name, type_, comment in OUTCOME_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True, comment=comment))
    with op.batch_alter_table('rescue_evaluations') as batch:
        batch.add_column(sa.Column('matching', sa.String(length=16), nullable=False, server_default='samples',
                                   comment='samples | tokens: how retry, the baseline, is given equal compute'))
        for name, type_, comment in RESCUE_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True, comment=comment))
        batch.drop_constraint('pk_rescue_evaluations', type_='primary')
        batch.create_primary_key('pk_rescue_evaluations', ['checkpoint_id', 'policy', 'regime', 'matching'])


def downgrade() -> None:
    op.execute("DELETE FROM rescue_evaluations WHERE matching <> 'samples'")
    with op.batch_alter_table('rescue_evaluations') as batch:
        batch.drop_constraint('pk_rescue_evaluations', type_='primary')
        batch.create_primary_key('pk_rescue_evaluations', ['checkpoint_id', 'policy', 'regime'])
        for name, _, _ in reversed(RESCUE_COLUMNS):
            batch.drop_column(name)
        batch.drop_column('matching')
    with op.batch_alter_table('intervention_outcomes') as batch:
        for name, _, _ in reversed(OUTCOME_COLUMNS):
            batch.drop_column(name)
