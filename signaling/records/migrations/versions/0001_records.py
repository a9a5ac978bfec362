"""The record store: consults and their history, reports, indexes of attachments and
recordings, data keys, the audit chain.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _attachments() -> None:
    op.create_table(
        "attachments",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("consult_id", sa.String(length=64), nullable=False),
        sa.Column("content_type", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("by_sub", sa.String(length=255), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("deleted_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("attachments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_attachments_consult_id"), ["consult_id"], unique=False)


def _audit_entries() -> None:
    op.create_table(
        "audit_entries",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("entry_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("event", sa.String(length=255), nullable=False),
        sa.Column("node", sa.String(length=255), nullable=False),
        sa.Column("actor_sub", sa.String(length=255), nullable=True),
        sa.Column("actor_role", sa.String(length=32), nullable=True),
        sa.Column("organisation", sa.String(length=255), nullable=True),
        sa.Column("consult_id", sa.String(length=64), nullable=True),
        sa.Column("session_id", sa.String(length=64), nullable=True),
        sa.Column("patient_ref", sa.String(length=255), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("entry_id"),
    )
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.create_index("audit_actor", ["actor_sub", "seq"], unique=False)
        batch_op.create_index("audit_at", ["at"], unique=False)
        batch_op.create_index("audit_consult", ["consult_id", "seq"], unique=False)
        batch_op.create_index("audit_patient", ["patient_ref", "seq"], unique=False)


def _audit_head() -> None:
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("mark", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def _consult_history() -> None:
    op.create_table(
        "consult_history",
        sa.Column("consult_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("consult_id", "version"),
    )


def _consults() -> None:
    op.create_table(
        "consults",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("organisation", sa.String(length=255), nullable=False),
        sa.Column("specialist_organisation", sa.String(length=255), nullable=True),
        sa.Column("facility", sa.String(length=255), nullable=False),
        sa.Column("referrer_sub", sa.String(length=255), nullable=False),
        sa.Column("specialist_sub", sa.String(length=255), nullable=True),
        sa.Column("patient_ref", sa.String(length=255), nullable=False),
        sa.Column("specialty", sa.String(length=255), nullable=False),
        sa.Column("urgency", sa.String(length=16), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("consults", schema=None) as batch_op:
        batch_op.create_index("consults_ended", ["ended_at"], unique=False)
        batch_op.create_index("consults_facility", ["facility", "created_at"], unique=False)
        batch_op.create_index("consults_patient", ["patient_ref"], unique=False)
        batch_op.create_index("consults_specialist", ["specialist_sub", "created_at"], unique=False)


def _record_keys() -> None:
    op.create_table(
        "record_keys",
        sa.Column("owner_id", sa.String(length=64), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("owner_id"),
    )


def _recordings() -> None:
    op.create_table(
        "recordings",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("consult_id", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("deleted_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_recordings_consult_id"), ["consult_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_recordings_session_id"), ["session_id"], unique=False)


def _reports() -> None:
    op.create_table(
        "reports",
        sa.Column("consult_id", sa.String(length=64), nullable=False),
        sa.Column("specialist_sub", sa.String(length=255), nullable=False),
        sa.Column("written_at", sa.Float(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("consult_id"),
    )


def upgrade() -> None:
    _attachments()
    _audit_entries()
    _audit_head()
    _consult_history()
    _consults()
    _record_keys()
    _recordings()
    _reports()


def downgrade() -> None:
    op.drop_table("reports")
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recordings_session_id"))
        batch_op.drop_index(batch_op.f("ix_recordings_consult_id"))

    op.drop_table("recordings")
    op.drop_table("record_keys")
    with op.batch_alter_table("consults", schema=None) as batch_op:
        batch_op.drop_index("consults_specialist")
        batch_op.drop_index("consults_patient")
        batch_op.drop_index("consults_facility")
        batch_op.drop_index("consults_ended")

    op.drop_table("consults")
    op.drop_table("consult_history")
    op.drop_table("audit_head")
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.drop_index("audit_patient")
        batch_op.drop_index("audit_consult")
        batch_op.drop_index("audit_at")
        batch_op.drop_index("audit_actor")

    op.drop_table("audit_entries")
    with op.batch_alter_table("attachments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_attachments_consult_id"))

    op.drop_table("attachments")
