"""Alembic's environment for the record store: migrations run on the connection the
caller hands over (``signaling.records.database.migrate``), never on a URL of
their own."""

from __future__ import annotations

from alembic import context

from signaling.records.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
