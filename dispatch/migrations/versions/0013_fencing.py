"""Cluster fencing: generations (fencing tokens) on nodes, leases and campaign claims.

Revision ID: 0013
Revises: 0009
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``generation`` to nodes and leases, ``lease_gen`` to campaign recipients."""
    with op.batch_alter_table("cluster_nodes") as batch:
        batch.add_column(sa.Column("generation", sa.Integer(), nullable=False,
                                   server_default="0"))
    with op.batch_alter_table("cluster_leases") as batch:
        batch.add_column(sa.Column("generation", sa.Integer(), nullable=False,
                                   server_default="0"))
    with op.batch_alter_table("campaign_recipients") as batch:
        batch.add_column(sa.Column("lease_gen", sa.Integer(), nullable=True))


def downgrade() -> None:
    """Drop the fencing columns."""
    with op.batch_alter_table("campaign_recipients") as batch:
        batch.drop_column("lease_gen")
    with op.batch_alter_table("cluster_leases") as batch:
        batch.drop_column("generation")
    with op.batch_alter_table("cluster_nodes") as batch:
        batch.drop_column("generation")
