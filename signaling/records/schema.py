"""The record store's tables (SQLAlchemy Core; the migrations in ``migrations/``
create them). Columns in clear are what queries need: ids, states, times, the
organisation and facility, the pseudonymous patient reference. Everything a person
wrote (the summary, the report, file names) is in ``sealed``: the record as JSON,
encrypted with the consult's data key (``record_keys``), so destroying that key
crypto-shreds the consult, its history and its report at once."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

metadata = MetaData()

ID = 64  # ids Jisr mints
NAME = 255  # subs, facilities, patient references from outside

consults = Table(
    "consults", metadata,
    Column("id", String(ID), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("organisation", String(NAME), nullable=False),
    Column("specialist_organisation", String(NAME)),
    Column("facility", String(NAME), nullable=False),
    Column("referrer_sub", String(NAME), nullable=False),
    Column("specialist_sub", String(NAME)),
    Column("patient_ref", String(NAME), nullable=False),
    Column("specialty", String(NAME), nullable=False),
    Column("urgency", String(16), nullable=False),
    Column("session_id", String(ID)),
    Column("created_at", Float, nullable=False),
    Column("ended_at", Float),
    Column("sealed", LargeBinary, nullable=False),
    Index("consults_patient", "patient_ref"),
    Index("consults_facility", "facility", "created_at"),
    Index("consults_specialist", "specialist_sub", "created_at"),
    Index("consults_ended", "ended_at"),
)  # fmt: skip

# Every version of every consult, in its order.
consult_history = Table(
    "consult_history", metadata,
    Column("consult_id", String(ID), nullable=False),
    Column("version", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("at", Float, nullable=False),  # when the node that made the change saw it
    Column("sealed", LargeBinary, nullable=False),
    PrimaryKeyConstraint("consult_id", "version"),
)  # fmt: skip

reports = Table(
    "reports", metadata,
    Column("consult_id", String(ID), primary_key=True),
    Column("specialist_sub", String(NAME), nullable=False),
    Column("written_at", Float, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("sealed", LargeBinary, nullable=False),
)  # fmt: skip

attachments = Table(
    "attachments", metadata,
    Column("id", String(ID), primary_key=True),
    Column("consult_id", String(ID), nullable=False, index=True),
    Column("content_type", String(NAME), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("by_sub", String(NAME), nullable=False),
    Column("at", Float, nullable=False),
    Column("deleted_at", Float),
)  # fmt: skip

recordings = Table(
    "recordings", metadata,
    Column("id", String(ID), primary_key=True),
    Column("session_id", String(ID), nullable=False, index=True),
    Column("consult_id", String(ID), index=True),
    Column("state", String(32), nullable=False),
    Column("started_at", Float),
    Column("ended_at", Float),
    Column("duration_s", Float),
    Column("deleted_at", Float),
)  # fmt: skip

# Each consult's data key, wrapped by the master key (recordings.keyring).
record_keys = Table(
    "record_keys", metadata,
    Column("owner_id", String(ID), primary_key=True),
    Column("wrapped", LargeBinary, nullable=False),
)  # fmt: skip

# The audit trail: append-only, each entry chained to the one before it.
audit_entries = Table(
    "audit_entries", metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("entry_id", String(ID), nullable=False, unique=True),
    Column("at", Float, nullable=False),
    Column("event", String(NAME), nullable=False),
    Column("node", String(NAME), nullable=False),
    Column("actor_sub", String(NAME)),
    Column("actor_role", String(32)),
    Column("organisation", String(NAME)),
    Column("consult_id", String(ID)),
    Column("session_id", String(ID)),
    Column("patient_ref", String(NAME)),
    Column("body", Text, nullable=False),  # the entry as canonical JSON
    Column("key_id", String(32), nullable=False),  # the master key its chain key is from
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("audit_consult", "consult_id", "seq"),
    Index("audit_patient", "patient_ref", "seq"),
    Index("audit_actor", "actor_sub", "seq"),
    Index("audit_at", "at"),
)  # fmt: skip

# The chain's head (one row): the last entry's seq and hash, and a keyed mark over
# both, so that removing the last entries shows too. Locked while appending.
audit_head = Table(
    "audit_head", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("mark", String(64), nullable=False),
)  # fmt: skip
