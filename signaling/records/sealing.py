"""Encryption of what people wrote, in the record store: each consult has its own
data key, kept in the database wrapped by the master key (``record_keys``); the
consult's record, every version of it and its report are sealed with it
(AES-256-GCM, the consult id, the kind and the version as associated data).
Destroying the wrapped key crypto-shreds all of them, in every copy and backup
of the database alike."""

from __future__ import annotations

from collections import OrderedDict

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from recordings.crypto import new_data_key, seal, unseal, wrapping_key_id
from recordings.keyring import Keyring

from .schema import record_keys


class KeyShredded(LookupError):
    """The consult's data key is gone: what it sealed can never be read."""


def _ad(owner_id: str, kind: str, version: int) -> bytes:
    return f"jisr.record\0{owner_id}\0{kind}\0{version}".encode()


CACHED_KEYS = 4096  # the most recently used consults' data keys, unwrapped


class Sealing:
    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self._cache: OrderedDict[str, bytes] = OrderedDict()  # owner -> data key

    async def key(self, conn: AsyncConnection, owner_id: str, *, create: bool) -> bytes:
        cached = self._cache.get(owner_id)
        if cached is not None:
            self._cache.move_to_end(owner_id)
            return cached
        row = (await conn.execute(
            select(record_keys.c.wrapped).where(record_keys.c.owner_id == owner_id)
        )).first()  # fmt: skip
        if row is not None:
            key = self.keyring.unwrap(owner_id, row.wrapped)
            self._cache[owner_id] = key  # cached once committed by someone
            if len(self._cache) > CACHED_KEYS:
                self._cache.popitem(last=False)
        elif create:  # not cached: this transaction may yet lose to another node's
            key = new_data_key()
            wrapped = self.keyring.wrap(owner_id, key)
            await conn.execute(insert(record_keys).values(owner_id=owner_id, wrapped=wrapped))
        else:
            raise KeyShredded(owner_id)
        return key

    async def seal(self, conn: AsyncConnection, owner_id: str, kind: str, version: int,
                   data: bytes) -> bytes:  # fmt: skip
        key = await self.key(conn, owner_id, create=True)
        return seal(key, data, _ad(owner_id, kind, version))

    async def open(self, conn: AsyncConnection, owner_id: str, kind: str, version: int,
                   blob: bytes) -> bytes:  # fmt: skip
        """TamperedError if it was altered; KeyShredded once its key is destroyed."""
        key = await self.key(conn, owner_id, create=False)
        return unseal(key, blob, _ad(owner_id, kind, version), f"the {kind} of {owner_id}")

    async def shred(self, conn: AsyncConnection, owner_id: str) -> None:
        self._cache.pop(owner_id, None)
        await conn.execute(delete(record_keys).where(record_keys.c.owner_id == owner_id))

    async def shared_key(self, engine: AsyncEngine, owner_id: str) -> bytes:
        """A key every node shares (the audit chain's), made by whichever node asks
        first: one more row of ``record_keys``, so a master key rotation rewraps it."""
        for _ in range(3):
            try:
                async with engine.begin() as conn:
                    return await self.key(conn, owner_id, create=True)
            except IntegrityError:  # another node made it first: read theirs
                continue
        async with engine.connect() as conn:
            return await self.key(conn, owner_id, create=False)

    async def rewrap_all(self, engine: AsyncEngine) -> tuple[int, int]:
        """Every key not wrapped by the current master key, rewrapped by it (one
        row at a time; a run cut short is finished by running it again): (rewrapped,
        already)."""
        done = already = 0
        async with engine.connect() as conn:
            owners = list((await conn.execute(select(record_keys.c.owner_id))).scalars())
        current = self.keyring.master_key_id
        for owner_id in owners:
            async with engine.begin() as conn:
                query = select(record_keys.c.wrapped).where(record_keys.c.owner_id == owner_id)
                row = (await conn.execute(query)).first()
                if row is None:
                    continue  # shredded meanwhile
                if wrapping_key_id(owner_id, row.wrapped) == current:
                    already += 1
                    continue
                key = self.keyring.unwrap(owner_id, row.wrapped)
                await conn.execute(update(record_keys).where(record_keys.c.owner_id == owner_id)
                                   .values(wrapped=self.keyring.wrap(owner_id, key)))  # fmt: skip
                done += 1
        return done, already

    def forget(self, owner_id: str) -> None:
        """Drop a cached key (another node may have shredded it)."""
        self._cache.pop(owner_id, None)
