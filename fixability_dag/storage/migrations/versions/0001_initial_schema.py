"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 16:43:49.474344
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('checkpoints',
    sa.Column('checkpoint_id', sa.String(length=128), nullable=False, comment='Dagster partition key'),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('recipe', sa.String(length=64), nullable=True),
    sa.Column('training_step', sa.Integer(), nullable=True),
    sa.Column('fingerprint', sa.String(length=64), nullable=False, comment='hash of config, weights index and tokenizer'),
    sa.Column('info', sa.JSON(), nullable=True),
    sa.Column('registered_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('checkpoint_id', name=op.f('pk_checkpoints'))
    )
    op.create_table('problems',
    sa.Column('problem_id', sa.String(length=200), nullable=False),
    sa.Column('suite', sa.String(length=100), nullable=False),
    sa.Column('question', sa.Text(), nullable=False),
    sa.Column('gold_answer', sa.String(length=200), nullable=False),
    sa.Column('reference_steps', sa.JSON(), nullable=True),
    sa.Column('difficulty', sa.Integer(), nullable=True),
    sa.Column('template_id', sa.String(length=200), nullable=True),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('problem_id', name=op.f('pk_problems'))
    )
    with op.batch_alter_table('problems', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_problems_difficulty'), ['difficulty'], unique=False)
        batch_op.create_index(batch_op.f('ix_problems_suite'), ['suite'], unique=False)

    op.create_table('audit_runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('checkpoint_id', sa.String(length=128), nullable=False),
    sa.Column('asset', sa.String(length=64), nullable=False),
    sa.Column('code_version', sa.String(length=32), nullable=False),
    sa.Column('config_hash', sa.String(length=64), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('seconds', sa.Float(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False, comment='running | success | failed'),
    sa.Column('rows_written', sa.Integer(), nullable=True),
    sa.Column('summary', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['checkpoint_id'], ['checkpoints.checkpoint_id'], name=op.f('fk_audit_runs_checkpoint_id_checkpoints'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_runs'))
    )
    with op.batch_alter_table('audit_runs', schema=None) as batch_op:
        batch_op.create_index('ix_audit_runs_checkpoint_asset', ['checkpoint_id', 'asset', 'status'], unique=False)

    op.create_table('intervention_outcomes',
    sa.Column('checkpoint_id', sa.String(length=128), nullable=False),
    sa.Column('problem_id', sa.String(length=200), nullable=False),
    sa.Column('intervention', sa.String(length=64), nullable=False),
    sa.Column('samples', sa.Integer(), nullable=False),
    sa.Column('correct', sa.Integer(), nullable=False),
    sa.Column('rescued', sa.Boolean(), nullable=False),
    sa.Column('majority_answer', sa.String(length=200), nullable=True),
    sa.Column('majority_correct', sa.Boolean(), nullable=False),
    sa.Column('tokens', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['checkpoint_id'], ['checkpoints.checkpoint_id'], name=op.f('fk_intervention_outcomes_checkpoint_id_checkpoints'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['problem_id'], ['problems.problem_id'], name=op.f('fk_intervention_outcomes_problem_id_problems')),
    sa.PrimaryKeyConstraint('checkpoint_id', 'problem_id', 'intervention', name=op.f('pk_intervention_outcomes'))
    )
    with op.batch_alter_table('intervention_outcomes', schema=None) as batch_op:
        batch_op.create_index('ix_intervention_outcomes_intervention', ['intervention', 'checkpoint_id'], unique=False)

    op.create_table('problem_features',
    sa.Column('checkpoint_id', sa.String(length=128), nullable=False),
    sa.Column('problem_id', sa.String(length=200), nullable=False),
    sa.Column('base_samples', sa.Integer(), nullable=False),
    sa.Column('base_pass_rate', sa.Float(), nullable=False),
    sa.Column('answer_dispersion', sa.Float(), nullable=True),
    sa.Column('policy_confidence', sa.Float(), nullable=True),
    sa.Column('probe_shift', sa.Float(), nullable=True),
    sa.Column('top_wrong_share', sa.Float(), nullable=True),
    sa.Column('no_answer_rate', sa.Float(), nullable=True),
    sa.Column('truncation_rate', sa.Float(), nullable=True),
    sa.Column('mean_tokens', sa.Float(), nullable=True),
    sa.Column('tokens_cv', sa.Float(), nullable=True),
    sa.Column('distinct_answers', sa.Float(), nullable=True),
    sa.Column('probe_dispersion', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['checkpoint_id'], ['checkpoints.checkpoint_id'], name=op.f('fk_problem_features_checkpoint_id_checkpoints'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['problem_id'], ['problems.problem_id'], name=op.f('fk_problem_features_problem_id_problems')),
    sa.PrimaryKeyConstraint('checkpoint_id', 'problem_id', name=op.f('pk_problem_features'))
    )
    with op.batch_alter_table('problem_features', schema=None) as batch_op:
        batch_op.create_index('ix_problem_features_problem', ['problem_id'], unique=False)

    op.create_table('regime_labels',
    sa.Column('checkpoint_id', sa.String(length=128), nullable=False),
    sa.Column('problem_id', sa.String(length=200), nullable=False),
    sa.Column('true_regime', sa.String(length=32), nullable=False),
    sa.Column('rescued_by', sa.JSON(), nullable=True),
    sa.Column('majority_rescued_by', sa.JSON(), nullable=True),
    sa.Column('cluster_id', sa.Integer(), nullable=True),
    sa.Column('cluster_regime', sa.String(length=32), nullable=True),
    sa.Column('cluster_method', sa.String(length=16), nullable=True),
    sa.ForeignKeyConstraint(['checkpoint_id'], ['checkpoints.checkpoint_id'], name=op.f('fk_regime_labels_checkpoint_id_checkpoints'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['problem_id'], ['problems.problem_id'], name=op.f('fk_regime_labels_problem_id_problems')),
    sa.PrimaryKeyConstraint('checkpoint_id', 'problem_id', name=op.f('pk_regime_labels'))
    )
    with op.batch_alter_table('regime_labels', schema=None) as batch_op:
        batch_op.create_index('ix_regime_labels_regime', ['true_regime', 'checkpoint_id'], unique=False)

    op.create_table('rescue_evaluations',
    sa.Column('checkpoint_id', sa.String(length=128), nullable=False),
    sa.Column('policy', sa.String(length=32), nullable=False),
    sa.Column('regime', sa.String(length=32), nullable=False, comment="'all' or a ground-truth regime"),
    sa.Column('problems', sa.Integer(), nullable=False),
    sa.Column('rescued', sa.Integer(), nullable=False),
    sa.Column('rescue_rate', sa.Float(), nullable=True),
    sa.Column('rate_ci_low', sa.Float(), nullable=True),
    sa.Column('rate_ci_high', sa.Float(), nullable=True),
    sa.Column('tokens', sa.BigInteger(), nullable=False),
    sa.Column('samples', sa.Integer(), nullable=False),
    sa.Column('skipped', sa.Integer(), nullable=False),
    sa.Column('compute_saved_vs_retry', sa.Float(), nullable=True),
    sa.Column('lift_vs_retry', sa.Float(), nullable=True),
    sa.Column('lift_ci_low', sa.Float(), nullable=True),
    sa.Column('lift_ci_high', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['checkpoint_id'], ['checkpoints.checkpoint_id'], name=op.f('fk_rescue_evaluations_checkpoint_id_checkpoints'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('checkpoint_id', 'policy', 'regime', name=op.f('pk_rescue_evaluations'))
    )
    op.create_table('rollouts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('checkpoint_id', sa.String(length=128), nullable=False),
    sa.Column('problem_id', sa.String(length=200), nullable=False),
    sa.Column('phase', sa.String(length=16), nullable=False, comment='diagnostic | probe | label | eval'),
    sa.Column('intervention', sa.String(length=64), nullable=False),
    sa.Column('sample_index', sa.Integer(), nullable=False),
    sa.Column('seed', sa.BigInteger(), nullable=False, comment='request seed; samples of one request share it'),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('answer', sa.String(length=200), nullable=True, comment='canonical extracted answer; NULL = no answer'),
    sa.Column('is_correct', sa.Boolean(), nullable=False),
    sa.Column('num_tokens', sa.Integer(), nullable=False),
    sa.Column('cumulative_logprob', sa.Float(), nullable=True),
    sa.Column('mean_logprob', sa.Float(), nullable=True),
    sa.Column('finish_reason', sa.String(length=16), nullable=True),
    sa.Column('run_id', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['checkpoint_id'], ['checkpoints.checkpoint_id'], name=op.f('fk_rollouts_checkpoint_id_checkpoints'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['problem_id'], ['problems.problem_id'], name=op.f('fk_rollouts_problem_id_problems')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rollouts')),
    sa.UniqueConstraint('checkpoint_id', 'problem_id', 'phase', 'intervention', 'sample_index', name=op.f('uq_rollouts_checkpoint_id_problem_id_phase_intervention_sample_index'))
    )
    with op.batch_alter_table('rollouts', schema=None) as batch_op:
        batch_op.create_index('ix_rollouts_checkpoint_phase', ['checkpoint_id', 'phase', 'intervention'], unique=False)
        batch_op.create_index('ix_rollouts_problem', ['problem_id', 'checkpoint_id'], unique=False)

    op.create_table('routing_plans',
    sa.Column('checkpoint_id', sa.String(length=128), nullable=False),
    sa.Column('problem_id', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False, comment='retry | intervene | skip'),
    sa.Column('intervention', sa.String(length=64), nullable=True),
    sa.Column('budget', sa.Integer(), nullable=False, comment='samples'),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('rule_version', sa.String(length=32), nullable=False),
    sa.Column('thresholds', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['checkpoint_id'], ['checkpoints.checkpoint_id'], name=op.f('fk_routing_plans_checkpoint_id_checkpoints'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['problem_id'], ['problems.problem_id'], name=op.f('fk_routing_plans_problem_id_problems')),
    sa.PrimaryKeyConstraint('checkpoint_id', 'problem_id', name=op.f('pk_routing_plans'))
    )
    with op.batch_alter_table('routing_plans', schema=None) as batch_op:
        batch_op.create_index('ix_routing_plans_intervention', ['intervention', 'checkpoint_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('routing_plans', schema=None) as batch_op:
        batch_op.drop_index('ix_routing_plans_intervention')

    op.drop_table('routing_plans')
    with op.batch_alter_table('rollouts', schema=None) as batch_op:
        batch_op.drop_index('ix_rollouts_problem')
        batch_op.drop_index('ix_rollouts_checkpoint_phase')

    op.drop_table('rollouts')
    op.drop_table('rescue_evaluations')
    with op.batch_alter_table('regime_labels', schema=None) as batch_op:
        batch_op.drop_index('ix_regime_labels_regime')

    op.drop_table('regime_labels')
    with op.batch_alter_table('problem_features', schema=None) as batch_op:
        batch_op.drop_index('ix_problem_features_problem')

    op.drop_table('problem_features')
    with op.batch_alter_table('intervention_outcomes', schema=None) as batch_op:
        batch_op.drop_index('ix_intervention_outcomes_intervention')

    op.drop_table('intervention_outcomes')
    with op.batch_alter_table('audit_runs', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_runs_checkpoint_asset')

    op.drop_table('audit_runs')
    with op.batch_alter_table('problems', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_problems_suite'))
        batch_op.drop_index(batch_op.f('ix_problems_difficulty'))

    op.drop_table('problems')
    op.drop_table('checkpoints')
