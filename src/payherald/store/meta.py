"""A small key-value table: the development secret, endpoints' secret fingerprints, the
last reconciliation (``Store.meta``)."""

from __future__ import annotations

import secrets

from sqlalchemy import select

from payherald.store.database import Database
from payherald.store.schema import meta

__all__ = ["Meta"]


class Meta:
    def __init__(self, *, db: Database) -> None:
        self._db = db

    def get(self, key: str) -> str | None:
        with self._db.read() as connection:
            value = connection.execute(select(meta.c.value).where(meta.c.key == key)).scalar()
        return str(value) if value is not None else None

    def set(self, key: str, value: str) -> None:
        with self._db.transaction() as connection:
            stmt = self._db.insert(meta).values(key=key, value=value)
            connection.execute(
                stmt.on_conflict_do_update(index_elements=["key"], set_={"value": value})
            )

    def development_secret(self) -> str:
        """The webhook secret used when STRIPE_WEBHOOK_SECRET is unset: random, made once
        per database, so `run` and `simulate` agree and no two installs share one."""
        candidate = "whsec_dev_" + secrets.token_hex(16)
        with self._db.transaction() as connection:
            connection.execute(
                self._db.insert(meta)
                .values(key="development_webhook_secret", value=candidate)
                .on_conflict_do_nothing(index_elements=["key"])
            )
            return str(
                connection.execute(
                    select(meta.c.value).where(meta.c.key == "development_webhook_secret")
                ).scalar_one()
            )
