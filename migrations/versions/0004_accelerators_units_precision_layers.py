"""accelerators: compute unit, precision, benchmark program, accelerator option, per-layer times

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RUN_TABLES = ("task", "measurement")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    # Every existing task and measurement ran onnxruntime_perf_test on a CPU cluster at fp32 with its
    # default provider and no per-layer profile: the server defaults say so (`cluster` already names the
    # unit: a CPU cluster's name).
    for table in _RUN_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("benchmark", sa.String(length=16), server_default="onnxruntime", nullable=False)
            )
            batch_op.add_column(
                sa.Column("precision", sa.String(length=8), server_default="fp32", nullable=False)
            )
            batch_op.add_column(sa.Column("accelerator", sa.String(length=32), nullable=True))
            batch_op.add_column(
                sa.Column("layer_profile", sa.Boolean(), server_default=sa.false(), nullable=False)
            )
    with op.batch_alter_table("measurement", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bus_frequency_khz", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("layers", _JSON, nullable=True))
    # A device probed before accelerators were probed knows none until it is probed again.
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.add_column(sa.Column("accelerators", _JSON, server_default=sa.text("'[]'"), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.drop_column("accelerators")
    with op.batch_alter_table("measurement", schema=None) as batch_op:
        batch_op.drop_column("layers")
        batch_op.drop_column("bus_frequency_khz")
    for table in _RUN_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("layer_profile")
            batch_op.drop_column("accelerator")
            batch_op.drop_column("precision")
            batch_op.drop_column("benchmark")
