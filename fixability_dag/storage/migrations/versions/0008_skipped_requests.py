"""skipped requests: (suite, problem, intervention) groups whose prompt does not fit the context, with the reason

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 15:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'skipped_requests',
        sa.Column('checkpoint_id', sa.String(length=128), nullable=False),
        sa.Column('suite', sa.String(length=100), nullable=False, comment='problem suite (problems.suite)'),
        sa.Column('phase', sa.String(length=16), nullable=False),
        sa.Column('problem_id', sa.String(length=200), nullable=False),
        sa.Column('intervention', sa.String(length=64), nullable=False),
        sa.Column('prompt_tokens', sa.Integer(), nullable=False, comment="prompt length with the checkpoint's tokenizer"),
        sa.Column('max_tokens', sa.Integer(), nullable=False),
        sa.Column('max_model_len', sa.Integer(), nullable=False, comment="the engine's context"),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('run_id', sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(['checkpoint_id'], ['checkpoints.checkpoint_id'], ondelete='CASCADE',
                                name=op.f('fk_skipped_requests_checkpoint_id_checkpoints')),
        sa.PrimaryKeyConstraint('checkpoint_id', 'suite', 'phase', 'problem_id', 'intervention', name=op.f('pk_skipped_requests')),
    )


def downgrade() -> None:
    op.drop_table('skipped_requests')
