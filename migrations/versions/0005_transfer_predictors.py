"""transfer predictors: the peers asked for, and the peers' packed models a transfer model serves with

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    # Every existing predictor was trained without peers: both columns stay empty for it.
    with op.batch_alter_table("predictor", schema=None) as batch_op:
        batch_op.add_column(sa.Column("transfer", _JSON, nullable=True))
        batch_op.add_column(sa.Column("peer_models", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("predictor", schema=None) as batch_op:
        batch_op.drop_column("peer_models")
        batch_op.drop_column("transfer")
