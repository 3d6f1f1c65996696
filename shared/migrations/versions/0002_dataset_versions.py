"""Data-set versions: a data set may name its parent, its root, the job it was made from and its changes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('dataset', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parent_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('root', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('source_job', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('relabelled', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('dropped', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_dataset_parent_id'), ['parent_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('dataset', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dataset_parent_id'))
        batch_op.drop_column('dropped')
        batch_op.drop_column('relabelled')
        batch_op.drop_column('source_job')
        batch_op.drop_column('root')
        batch_op.drop_column('parent_id')
