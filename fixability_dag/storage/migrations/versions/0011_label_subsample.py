"""label subsample (production mode): which failed problems the label phase covered, their weights, and which
accuracies and evaluation rows rest on that subsample

* ``regime_labels.true_regime`` becomes nullable (a failed problem outside the label subsample has no truth);
  ``label_sample`` (drawn or not) and ``label_weight`` (1 / inclusion probability of a drawn problem);
* ``regime_reports.labelled_problems``: the failed problems an accuracy rests on;
* ``rescue_evaluations.label_subsample`` (the row's problems are the subsample) and ``failed_problems`` (N).

Rows written before this revision come from audits that labelled every failed problem: drawn, weight 1, rows on
every failed problem (the server defaults say so without rewriting them); the counts they lack stay NULL.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 21:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('regime_labels') as batch:
        batch.alter_column('true_regime', existing_type=sa.String(length=32), nullable=True,
                           comment='NULL: not in the label subsample (label_sample)')
        batch.add_column(sa.Column('label_sample', sa.Boolean(), nullable=False, server_default=sa.true(),
                                   comment='drawn for the label phase (label_subsample); false: no truth'))
        batch.add_column(sa.Column('label_weight', sa.Float(), nullable=True, server_default='1',
                                   comment='Horvitz-Thompson weight 1/inclusion probability of a drawn problem; NULL when not drawn'))
    with op.batch_alter_table('regime_reports') as batch:
        batch.add_column(sa.Column('labelled_problems', sa.Integer(), nullable=True,
                                   comment='failed problems the accuracy rests on (the label subsample); NULL before 0011: failed_problems'))
    with op.batch_alter_table('rescue_evaluations') as batch:
        batch.add_column(sa.Column('label_subsample', sa.Boolean(), nullable=True, server_default=sa.false(),
                                   comment="true: the row's problems are the label subsample (production mode), not every failed problem"))
        batch.add_column(sa.Column('failed_problems', sa.Integer(), nullable=True,
                                   comment='failed problems of the checkpoint (N)'))


def downgrade() -> None:
    with op.batch_alter_table('rescue_evaluations') as batch:
        batch.drop_column('failed_problems')
        batch.drop_column('label_subsample')
    with op.batch_alter_table('regime_reports') as batch:
        batch.drop_column('labelled_problems')
    op.execute("DELETE FROM regime_labels WHERE true_regime IS NULL")  # no truth: cannot go back to NOT NULL
    with op.batch_alter_table('regime_labels') as batch:
        batch.drop_column('label_weight')
        batch.drop_column('label_sample')
        batch.alter_column('true_regime', existing_type=sa.String(length=32), nullable=False)
