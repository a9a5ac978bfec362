"""Reads of clinical data that a list carries: a referrer's list of its facility's
consults holds the reports of those that ended. Each such read is audited
(``report.viewed``, ``origin: list``) the first time a person is shown that report
on this node within ``WINDOW_S``, so a page refreshing its list does not write the
same read into the trail again and again."""

from __future__ import annotations

import time
from collections import OrderedDict

from aiohttp import web

from .auth import Principal
from .keys import AUDIT, READS
from .model import Consult

WINDOW_S = 3600.0
REMEMBERED = 20_000


class ReadLedger:
    def __init__(self, window_s: float = WINDOW_S, clock=time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    def first(self, who: str, what: str) -> bool:
        """True if ``who`` was not shown ``what`` within the window (and note it)."""
        now, key = self.clock(), (who, what)
        seen = self._seen.get(key)
        if seen is not None and now - seen < self.window_s:
            return False
        self._seen[key] = now
        self._seen.move_to_end(key)
        while len(self._seen) > REMEMBERED:
            self._seen.popitem(last=False)
        return True


def audit_listed_reports(request: web.Request, who: Principal, consults: list[Consult]) -> None:
    ledger, audit = request.app[READS], request.app[AUDIT]
    for consult in consults:
        if consult.report is not None and ledger.first(who.sub, consult.id):
            audit.record("report.viewed", who.public(), consult_id=consult.id,
                         report_sha256=consult.report_sha256, origin="list")  # fmt: skip
