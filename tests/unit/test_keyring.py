"""The keyring: one place for every data key wrapped by the master key; a rotation
reaches every shelf, can be rerun after a crash, and a retired key still opens
what it wrapped until the rotation is done."""

from __future__ import annotations

import json
import os

import pytest

from recordings.crypto import MasterKey, MasterKeyError, TamperedError
from recordings.keyring import KeyNotFound, Keyring, Shelf
from recordings.storage import FileStorage


@pytest.fixture
def shelves(tmp_path) -> list[Shelf]:
    return [
        Shelf("recording", FileStorage(tmp_path / "recordings"), "key.json"),
        Shelf("attachment", FileStorage(tmp_path / "attachments"), "key"),
    ]


def filled(master: MasterKey, shelves: list[Shelf]) -> tuple[Keyring, dict]:
    keyring = Keyring(master, shelves)
    keys = {
        ("recording", "r_one"): keyring.create("recording", "r_one"),
        ("recording", "r_two"): keyring.create("recording", "r_two"),
        ("attachment", "a_one"): keyring.create("attachment", "a_one"),
        ("attachment", "a_two"): keyring.create("attachment", "a_two"),
        ("attachment", "a_three"): keyring.create("attachment", "a_three"),
    }
    return keyring, keys


def test_keys_come_back_and_are_bound_to_their_owner(shelves, tmp_path):
    keyring, keys = filled(MasterKey(os.urandom(32)), shelves)
    for (kind, owner), key in keys.items():
        assert keyring.data_key(kind, owner) == key
    # a wrapped key moved to another owner does not open
    blob = (tmp_path / "attachments" / "a_one" / "key").read_bytes()
    (tmp_path / "attachments" / "a_two" / "key").write_bytes(blob)
    with pytest.raises(TamperedError):
        keyring.data_key("attachment", "a_two")
    keyring.shred("attachment", "a_three")
    with pytest.raises(KeyNotFound):
        keyring.data_key("attachment", "a_three")
    with pytest.raises(ValueError, match="already has a shelf"):
        keyring.add_shelf(shelves[0])


def test_rotation_rewraps_every_shelf_and_says_what(shelves, tmp_path):
    old, new = MasterKey(os.urandom(32)), MasterKey(os.urandom(32))
    keyring, keys = filled(old, shelves)
    report = keyring.rotate(new)
    assert report.new_key_id == new.key_id and report.count == 5
    assert {k: sorted(v) for k, v in report.rewrapped.items()} == {
        "recording": ["r_one", "r_two"],
        "attachment": ["a_one", "a_three", "a_two"],
    }
    assert keyring.stale() == {"recording": 0, "attachment": 0}
    for path in tmp_path.rglob("key*"):
        assert json.loads(path.read_bytes())["master_key_id"] == new.key_id
    # only the new key is needed now
    alone = Keyring(new, shelves)
    for (kind, owner), key in keys.items():
        assert alone.data_key(kind, owner) == key
    with pytest.raises(MasterKeyError, match="wrapped by master key .* but the loaded master"):
        Keyring(old, shelves).data_key("attachment", "a_one")
    assert alone.rotate(new).count == 0


def test_an_interrupted_rotation_is_finished_by_running_it_again(shelves, monkeypatch):
    old, new = MasterKey(os.urandom(32)), MasterKey(os.urandom(32))
    keyring, keys = filled(old, shelves)
    storage = shelves[1].storage
    put, puts = storage.put, []

    def crash_on_second(name, data):
        puts.append(name)
        if len(puts) == 2:
            raise OSError("power lost")
        put(name, data)

    monkeypatch.setattr(storage, "put", crash_on_second)
    with pytest.raises(OSError, match="power lost"):
        keyring.rotate(new)
    monkeypatch.setattr(storage, "put", put)

    # Meanwhile a node runs with the new key and the old one retired: everything opens.
    during = Keyring(new, shelves, retired=[old])
    assert during.stale() == {"recording": 0, "attachment": 2}
    for (kind, owner), key in keys.items():
        assert during.data_key(kind, owner) == key
    report = during.rotate(new)
    assert report.count == 2 and report.already == {"recording": 2, "attachment": 1}
    assert Keyring(new, shelves).stale() == {"recording": 0, "attachment": 0}


def test_a_rolling_rotation_keeps_every_key_open_on_every_node(shelves):
    """deploy/README.md's runbook, two nodes sharing the folders: first each node
    takes the new key as an accepted old key, then each swaps the two; whatever
    one node wraps, the other opens at every step."""
    old, new = MasterKey(os.urandom(32)), MasterKey(os.urandom(32))
    keys = {("recording", "r_before"): Keyring(old, shelves).create("recording", "r_before")}
    steps = [
        (Keyring(old, shelves, retired=[new]), Keyring(old, shelves)),  # a restarted
        (Keyring(old, shelves, retired=[new]), Keyring(old, shelves, retired=[new])),
        (Keyring(new, shelves, retired=[old]), Keyring(old, shelves, retired=[new])),  # a swapped
        (Keyring(new, shelves, retired=[old]), Keyring(new, shelves, retired=[old])),
    ]
    for step, (a, b) in enumerate(steps):
        for name, node in (("a", a), ("b", b)):
            keys[("attachment", f"{name}{step}")] = node.create("attachment", f"{name}{step}")
        for node in (a, b):
            for (kind, owner), key in keys.items():
                assert node.data_key(kind, owner) == key, (step, owner)
    # Then rotate-key: what either node wrapped with the old key, rewrapped once.
    report = steps[-1][0].rotate(new)
    assert (report.count, report.already["attachment"]) == (6, 3)  # a2, a3, b3: the new key
    assert Keyring(new, shelves).stale() == {"recording": 0, "attachment": 0}
