"""Which bytes of a playback an HTTP ``Range`` header asks for (RFC 9110 §14).

One range of ``bytes`` is served as asked (206); a header that names another unit,
is malformed, or asks for several ranges is ignored and the whole file served (200),
as RFC 9110 lets a server do; a range that starts past the end is unsatisfiable
(416). The size is known only once the playback is open, so parsing and resolving are
two steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SPEC = re.compile(r"([0-9]*)-([0-9]*)")


@dataclass(frozen=True)
class RangeRequest:
    """One range as asked: ``first``-``last`` (``last`` None: to the end), or the
    last ``suffix`` bytes."""

    first: int | None = None
    last: int | None = None
    suffix: int | None = None

    @property
    def from_first_byte(self) -> bool:
        return self.first == 0


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # exclusive
    size: int  # of the whole file

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end - 1}/{self.size}"


def parse_range(header: str | None) -> RangeRequest | None:
    """The one range the header asks for, or None to serve the whole file."""
    if header is None:
        return None
    unit, equals, ranges = header.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    specs = [spec.strip() for spec in ranges.split(",") if spec.strip()]
    if len(specs) != 1 or not (match := _SPEC.fullmatch(specs[0])):
        return None
    try:
        first = int(match[1]) if match[1] else None
        last = int(match[2]) if match[2] else None
    except ValueError:  # more digits than Python converts: not a range anyone serves
        return None
    if first is None:
        return None if last is None else RangeRequest(suffix=last)
    if last is not None and last < first:
        return None  # an invalid range-spec makes the whole field invalid
    return RangeRequest(first=first, last=last)


def resolve(request: RangeRequest, size: int) -> ByteRange | None:
    """The bytes of a file of ``size`` the range selects, or None if it selects none
    (answered 416 with ``unsatisfiable(size)``)."""
    if request.suffix is not None:
        if request.suffix == 0 or size == 0:
            return None
        return ByteRange(max(0, size - request.suffix), size, size)
    assert request.first is not None
    if request.first >= size:
        return None
    end = size if request.last is None else min(request.last + 1, size)
    return ByteRange(request.first, end, size)


def unsatisfiable(size: int) -> str:
    return f"bytes */{size}"
