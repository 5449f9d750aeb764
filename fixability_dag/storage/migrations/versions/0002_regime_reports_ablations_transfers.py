"""regime reports, feature ablations, regime transfers

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 17:34:07.507259
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('feature_ablations',
    sa.Column('checkpoint_id', sa.String(length=128), nullable=False),
    sa.Column('features', sa.String(length=200), nullable=False),
    sa.Column('accuracy', sa.Float(), nullable=True),
    sa.Column('accuracy_std', sa.Float(), nullable=True),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['checkpoint_id'], ['checkpoints.checkpoint_id'], name=op.f('fk_feature_ablations_checkpoint_id_checkpoints'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('checkpoint_id', 'features', name=op.f('pk_feature_ablations'))
    )
    op.create_table('regime_reports',
    sa.Column('checkpoint_id', sa.String(length=128), nullable=False),
    sa.Column('method', sa.String(length=32), nullable=False, comment='gmm | kmeans | majority | supervised_logreg | trace_reading_tfidf'),
    sa.Column('accuracy', sa.Float(), nullable=True),
    sa.Column('accuracy_std', sa.Float(), nullable=True),
    sa.Column('runs', sa.Integer(), nullable=True, comment='seeds + bootstrap resamples behind the std'),
    sa.Column('failed_problems', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['checkpoint_id'], ['checkpoints.checkpoint_id'], name=op.f('fk_regime_reports_checkpoint_id_checkpoints'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('checkpoint_id', 'method', name=op.f('pk_regime_reports'))
    )
    op.create_table('regime_transfers',
    sa.Column('source_checkpoint', sa.String(length=128), nullable=False),
    sa.Column('target_checkpoint', sa.String(length=128), nullable=False),
    sa.Column('target_problems', sa.Integer(), nullable=False),
    sa.Column('transfer_accuracy', sa.Float(), nullable=True, comment='source-fitted clusters + source cluster->regime map, on target'),
    sa.Column('own_accuracy', sa.Float(), nullable=True, comment="target's own clusters, Hungarian-matched on target"),
    sa.Column('target_majority', sa.Float(), nullable=True),
    sa.Column('plan_agreement', sa.Float(), nullable=True, comment='share of target problems routed alike by source and own thresholds'),
    sa.ForeignKeyConstraint(['source_checkpoint'], ['checkpoints.checkpoint_id'], name=op.f('fk_regime_transfers_source_checkpoint_checkpoints'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['target_checkpoint'], ['checkpoints.checkpoint_id'], name=op.f('fk_regime_transfers_target_checkpoint_checkpoints'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('source_checkpoint', 'target_checkpoint', name=op.f('pk_regime_transfers'))
    )


def downgrade() -> None:
    op.drop_table('regime_transfers')
    op.drop_table('regime_reports')
    op.drop_table('feature_ablations')
