"""One keyring for every data key wrapped by the master key.

Each encrypted object (a recording, an attachment, anything encrypted later) has its
own random data key, kept wrapped by the master key beside the object it opens, in
that object's shelf: ``<owner id>/<key object>`` in the shelf's storage. Keeping the
key with its object makes crypto-shredding one deletion; listing it in this one
keyring makes a master key rotation reach every kind of object.

The keyring wraps new keys with the current master key and unwraps with the current
one or a retired one still being rotated away from (``JISR_RECORDING_OLD_KEYS``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field

from .crypto import (
    MasterKey,
    MasterKeyError,
    new_data_key,
    unwrap_data_key,
    wrap_data_key,
    wrapping_key_id,
)
from .storage import Storage


class KeyNotFound(LookupError):
    """The owner has no data key on its shelf (never created, or shredded)."""


@dataclass(frozen=True)
class Shelf:
    """Where one kind of object keeps its wrapped data keys."""

    kind: str  # "recording", "attachment"
    storage: Storage
    key_object: str  # the key's name inside its owner's folder

    def name(self, owner_id: str) -> str:
        return f"{owner_id}/{self.key_object}"

    def owners(self) -> list[str]:
        suffix = "/" + self.key_object
        return [n[: -len(suffix)] for n in self.storage.list() if n.endswith(suffix)]


@dataclass
class Rotation:
    """What a rotation did, per kind of object."""

    new_key_id: str
    rewrapped: dict[str, list[str]] = field(default_factory=dict)  # kind -> owner ids
    already: dict[str, int] = field(default_factory=dict)  # kind -> keys already rewrapped

    @property
    def count(self) -> int:
        return sum(len(ids) for ids in self.rewrapped.values())


class Keyring:
    def __init__(
        self,
        master: MasterKey,
        shelves: Iterable[Shelf] = (),
        *,
        retired: Iterable[MasterKey] = (),
    ) -> None:
        self._master = master
        self._retired = {key.key_id: key for key in retired if key.key_id != master.key_id}
        self._shelves: dict[str, Shelf] = {}
        for shelf in shelves:
            self.add_shelf(shelf)

    @property
    def master_key_id(self) -> str:
        return self._master.key_id

    @property
    def kinds(self) -> list[str]:
        return list(self._shelves)

    def add_shelf(self, shelf: Shelf) -> None:
        if shelf.kind in self._shelves:
            raise ValueError(f"the keyring already has a shelf for {shelf.kind} keys")
        self._shelves[shelf.kind] = shelf

    def shelf(self, kind: str) -> Shelf:
        return self._shelves[kind]

    def create(self, kind: str, owner_id: str) -> bytes:
        """A new data key for ``owner_id``, stored wrapped; the key itself is returned
        and must never be written anywhere else."""
        data_key = new_data_key()
        shelf = self._shelves[kind]
        shelf.storage.put(shelf.name(owner_id), wrap_data_key(self._master, owner_id, data_key))
        return data_key

    def has(self, kind: str, owner_id: str) -> bool:
        shelf = self._shelves[kind]
        return shelf.storage.exists(shelf.name(owner_id))

    def data_key(self, kind: str, owner_id: str) -> bytes:
        """Raises KeyNotFound, MasterKeyError (wrapped by a master key this node does
        not hold) or TamperedError (the wrapped key is altered)."""
        shelf = self._shelves[kind]
        try:
            blob = shelf.storage.read(shelf.name(owner_id))
        except FileNotFoundError:
            raise KeyNotFound(f"{kind} {owner_id} has no data key") from None
        return unwrap_data_key(self._unwrapping_key(owner_id, blob), owner_id, blob)

    def wrap(self, owner_id: str, data_key: bytes) -> bytes:
        """A data key wrapped by the current master key, for a holder that keeps it
        elsewhere than on a shelf (the record store keeps its keys in its database)."""
        return wrap_data_key(self._master, owner_id, data_key)

    def unwrap(self, owner_id: str, blob: bytes) -> bytes:
        """The data key ``wrap`` gave (by the current or a retired master key)."""
        return unwrap_data_key(self._unwrapping_key(owner_id, blob), owner_id, blob)

    def derived(self, label: str, key_id: str | None = None) -> bytes:
        """A key derived from the master key ``key_id`` names (default: the current
        one) for one purpose, ``label``: whoever lacks the master key cannot compute
        it. MasterKeyError for a master key this keyring does not hold."""
        if key_id is None or key_id == self._master.key_id:
            master = self._master
        elif key_id in self._retired:
            master = self._retired[key_id]
        else:
            raise MasterKeyError(f"no master key {key_id} is held to derive the {label} key")
        return hmac.new(master.key, b"jisr.derived\0" + label.encode(), hashlib.sha256).digest()

    def shred(self, kind: str, owner_id: str) -> None:
        """Destroy the wrapped key: whatever it encrypted can never be opened again."""
        shelf = self._shelves[kind]
        shelf.storage.delete(shelf.name(owner_id), shred=True)

    def rotate(self, new_master: MasterKey) -> Rotation:
        """Rewrap every data key of every shelf under ``new_master``. Each key is one
        atomic replace and keys already under ``new_master`` are skipped, so a run cut
        short is finished by running it again. Keys the keyring cannot unwrap raise
        MasterKeyError before that key is touched."""
        report = Rotation(new_master.key_id)
        for kind, shelf in self._shelves.items():
            done, already = report.rewrapped.setdefault(kind, []), 0
            for owner_id in shelf.owners():
                name = shelf.name(owner_id)
                blob = shelf.storage.read(name)
                if wrapping_key_id(owner_id, blob) == new_master.key_id:
                    already += 1
                    continue
                data_key = unwrap_data_key(self._unwrapping_key(owner_id, blob), owner_id, blob)
                shelf.storage.put(name, wrap_data_key(new_master, owner_id, data_key))
                done.append(owner_id)
            report.already[kind] = already
        if new_master.key_id != self._master.key_id:
            self._retired[self._master.key_id] = self._master
            self._retired.pop(new_master.key_id, None)
        self._master = new_master
        return report

    def stale(self) -> dict[str, int]:
        """Per kind, how many keys are not yet under the current master key (a
        rotation to finish before a retired key may be destroyed)."""
        counts = {}
        for kind, shelf in self._shelves.items():
            counts[kind] = 0
            for owner_id in shelf.owners():
                blob = shelf.storage.read(shelf.name(owner_id))
                if wrapping_key_id(owner_id, blob) != self._master.key_id:
                    counts[kind] += 1
        return counts

    def _unwrapping_key(self, owner_id: str, blob: bytes) -> MasterKey:
        key_id = wrapping_key_id(owner_id, blob)
        if key_id == self._master.key_id:
            return self._master
        if key_id in self._retired:
            return self._retired[key_id]
        raise MasterKeyError(
            f"the data key of {owner_id} is wrapped by master key {key_id}, but the loaded "
            f"master key is {self._master.key_id} (and no retired key held matches)"
        )
