"""RTP header extensions (RFC 8285): renumbering their ids for a subscriber.

Each leg negotiates its own extension ids, so forwarded packets carry theirs. The
element walk runs on every forwarded packet that has extensions, with lookup tables
built once per mapping; lengths never change, so no other byte moves.
"""

from __future__ import annotations

from collections.abc import Mapping

from .header import RTP_HEADER_SIZE, Buffer

ONE_BYTE_PROFILE = 0xBEDE
TWO_BYTE_PROFILE_MASK = 0xFFF0
TWO_BYTE_PROFILE = 0x1000

ExtensionTables = tuple[bytes, bytes]


def extension_tables(ext_map: Mapping[int, int]) -> ExtensionTables:
    """Lookup tables for `remap_block`: one-byte form element header byte -> new header
    byte, and two-byte form id -> new id; 0 means "blank this element"."""
    one = bytearray(256)
    for head in range(16, 0xF0):
        new_id = ext_map.get(head >> 4)
        if new_id is not None and 0 < new_id < 15:
            one[head] = (new_id << 4) | (head & 0x0F)
    two = bytearray(256)
    for ext_id in range(1, 256):
        new_id = ext_map.get(ext_id)
        if new_id is not None and 0 < new_id < 256:
            two[ext_id] = new_id
    return bytes(one), bytes(two)


_ZEROS = bytes(257)


def remap_block(block: bytearray, profile: int, one: bytes, two: bytes) -> None:
    """Rewrite extension ids in place; elements the subscriber did not negotiate become
    padding (zero bytes), which RFC 8285 lets receivers skip, so lengths never change."""
    pos = 0
    end = len(block)
    if profile == ONE_BYTE_PROFILE:
        while pos < end:
            head = block[pos]
            if not head:
                pos += 1
                continue
            stop = pos + 2 + (head & 0x0F)
            new = one[head]
            if new:
                block[pos] = new
            elif head >= 0xF0:
                break  # id 15: the rest is not to be parsed
            else:
                block[pos:stop] = _ZEROS[: min(stop, end) - pos]
            pos = stop
    elif profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
        while pos < end:
            ext_id = block[pos]
            if not ext_id:
                pos += 1
                continue
            if pos + 1 >= end:
                block[pos] = 0
                break
            stop = pos + 2 + block[pos + 1]
            new = two[ext_id]
            if new:
                block[pos] = new
            else:
                block[pos:stop] = _ZEROS[: min(stop, end) - pos]
            pos = stop


def with_remapped_extensions(
    head: bytes, packet: Buffer, b0: int, tables: ExtensionTables
) -> bytes | None:
    """`head` (a rewritten fixed header) + the rest of `packet` with its extension ids
    remapped; None if the extension is truncated. `b0` is the packet's first byte."""
    pos = RTP_HEADER_SIZE + 4 * (b0 & 0x0F)
    if len(packet) < pos + 4:
        return None
    end = pos + 4 + 4 * ((packet[pos + 2] << 8) | packet[pos + 3])
    if len(packet) < end:
        return None
    block = bytearray(packet[pos + 4 : end])
    one, two = tables
    remap_block(block, (packet[pos] << 8) | packet[pos + 1], one, two)
    return b"".join((head, packet[RTP_HEADER_SIZE : pos + 4], block, packet[end:]))


def extension_value(packet: Buffer, ext_id: int) -> bytes | None:
    """The value of header extension element ``ext_id`` (one-byte or two-byte form),
    None when the packet has no such element or its extension is cut short. Read only
    where a stream is not known yet (a simulcast layer's RID), never per forwarded
    packet."""
    b0 = packet[0]
    if not b0 & 0x10 or ext_id <= 0:
        return None
    pos = RTP_HEADER_SIZE + 4 * (b0 & 0x0F)
    if len(packet) < pos + 4:
        return None
    profile = (packet[pos] << 8) | packet[pos + 1]
    end = pos + 4 + 4 * ((packet[pos + 2] << 8) | packet[pos + 3])
    if len(packet) < end:
        return None
    pos += 4
    if profile == ONE_BYTE_PROFILE:
        while pos < end:
            head = packet[pos]
            if not head:
                pos += 1
                continue
            if head >= 0xF0:
                return None
            stop = pos + 2 + (head & 0x0F)
            if head >> 4 == ext_id:
                return bytes(packet[pos + 1 : stop]) if stop <= end else None
            pos = stop
    elif profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
        while pos + 1 < end:
            found = packet[pos]
            if not found:
                pos += 1
                continue
            stop = pos + 2 + packet[pos + 1]
            if found == ext_id:
                return bytes(packet[pos + 2 : stop]) if stop <= end else None
            pos = stop
    return None
