"""The outbox journal: sealed on disk, applied in order, kept across a crash, and
adopted by the next node when its own node is gone."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from signaling.records.database import DatabaseUnavailable
from signaling.records.entries import FhirPush, decode_entry, encode_entry
from signaling.records.journal import Journal, adopt
from signaling.records.outbox import Outbox


def key_for(key_id: str | None) -> tuple[str, bytes]:
    name = key_id or "k1"
    if name not in ("k1", "k0"):
        raise LookupError(name)
    return name, hashlib.sha256(name.encode()).digest()


def entry(n: int) -> bytes:
    return encode_entry(FhirPush(consult_id=f"c_{n}", at=float(n)))


def test_entries_are_sealed_and_read_back_in_order(tmp_path) -> None:
    journal = Journal(tmp_path / "n1.journal", key_for)
    for n in range(5):
        journal.append(entry(n))
    assert b"c_3" not in (tmp_path / "n1.journal").read_bytes()
    read = journal.read(10)
    assert [decode_entry(data).consult_id for _, data in read] == [f"c_{n}" for n in range(5)]
    journal.ack(read[1][0], 2)
    assert journal.backlog == 3
    assert [decode_entry(d).consult_id for _, d in journal.read(10)] == ["c_2", "c_3", "c_4"]


def test_a_crash_keeps_what_was_not_applied_and_drops_a_torn_line(tmp_path) -> None:
    journal = Journal(tmp_path / "n1.journal", key_for)
    for n in range(3):
        journal.append(entry(n))
    journal.ack(journal.read(1)[0][0], 1)
    os.write(os.open(tmp_path / "n1.journal", os.O_WRONLY | os.O_APPEND), b"k1:AAAA")  # torn
    journal.close()  # the node dies

    again = Journal(tmp_path / "n1.journal", key_for)
    assert again.backlog == 2
    assert [decode_entry(d).consult_id for _, d in again.read(10)] == ["c_1", "c_2"]


def test_a_living_nodes_journal_is_not_adopted_a_dead_ones_is(tmp_path) -> None:
    alive = Journal(tmp_path / "n1.journal", key_for)
    alive.append(entry(1))
    dead = Journal(tmp_path / "n2.journal", key_for)
    dead.append(entry(2))
    dead.close()
    mine = Journal(tmp_path / "n3.journal", key_for)
    adopted = adopt(tmp_path, key_for, mine.path)
    assert [j.name for j in adopted] == ["n2"]
    assert decode_entry(adopted[0].read(1)[0][1]).consult_id == "c_2"
    with pytest.raises(BlockingIOError):
        Journal(tmp_path / "n1.journal", key_for)


def test_an_altered_line_is_not_read(tmp_path) -> None:
    journal = Journal(tmp_path / "n1.journal", key_for)
    journal.append(entry(1))
    journal.close()
    data = bytearray((tmp_path / "n1.journal").read_bytes())
    data[10] ^= 1
    (tmp_path / "n1.journal").write_bytes(bytes(data))
    assert Journal(tmp_path / "n1.journal", key_for).read(1)[0][1] is None


async def test_the_outbox_retries_in_order_until_the_database_answers(tmp_path) -> None:
    applied: list[str] = []
    down = asyncio.Event()
    down.set()

    async def apply(entries) -> None:
        if down.is_set():
            raise DatabaseUnavailable("down")
        applied.extend(e.consult_id for e in entries)

    outbox = Outbox(tmp_path, "n1", key_for, apply)
    task = asyncio.ensure_future(outbox.run())
    for n in range(4):
        outbox.put(FhirPush(consult_id=f"c_{n}", at=0.0))
    assert not await outbox.drained(0.5)
    assert outbox.database_up is False and outbox.backlog == 4
    down.clear()
    assert await outbox.drained(5)
    assert applied == ["c_0", "c_1", "c_2", "c_3"] and outbox.database_up is True
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    outbox.close()


async def test_an_entry_the_store_refuses_is_counted_and_the_rest_applied(tmp_path) -> None:
    applied: list[str] = []

    async def apply(entries) -> None:
        if any(e.consult_id == "c_bad" for e in entries):
            raise ValueError("refused")
        applied.extend(e.consult_id for e in entries)

    outbox = Outbox(tmp_path, "n1", key_for, apply)
    task = asyncio.ensure_future(outbox.run())
    for name in ("c_0", "c_bad", "c_2"):
        outbox.put(FhirPush(consult_id=name, at=0.0))
    assert await outbox.drained(5)
    assert applied == ["c_0", "c_2"] and outbox.rejected == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    outbox.close()


def test_two_nodes_of_one_id_cannot_share_a_data_folder(tmp_path) -> None:
    async def apply(entries) -> None:
        return None

    first = Outbox(tmp_path, "n1", key_for, apply)
    with pytest.raises(RuntimeError, match="two nodes with the node id 'n1'"):
        Outbox(tmp_path, "n1", key_for, apply)
    first.close()


async def test_what_was_journalled_reaches_the_disk_within_a_second(tmp_path) -> None:
    """While the database is down (nothing applied), the journal is still synced to
    the disk each second: a power cut loses at most the last second."""
    synced = asyncio.Event()

    async def refuse(_entries) -> None:
        raise DatabaseUnavailable("down")

    outbox = Outbox(tmp_path, "n1", key_for, refuse)
    real_sync = outbox.journal.sync

    def sync() -> None:
        real_sync()
        synced.set()

    outbox.journal.sync = sync
    task = asyncio.ensure_future(outbox.run())
    try:
        outbox.put(FhirPush(consult_id="c_1", at=1.0))
        assert outbox.journal.unsynced
        await asyncio.wait_for(synced.wait(), 3.0)
        assert not outbox.journal.unsynced and outbox.backlog == 1
    finally:
        task.cancel()
        outbox.close()
