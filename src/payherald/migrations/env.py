"""Alembic environment: runs migrations on the engine payherald hands it."""

from __future__ import annotations

from alembic import context

from payherald.store.schema import metadata

engine = context.config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=True,
    )
    context.run_migrations()
