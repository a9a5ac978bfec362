"""Pushing each finished consult to the hospital's own FHIR server
(``JISR_FHIR_PUSH_URL``), through a durable outbox of its own (the same journal
and retry as the record store's, in ``outbox/fhir/``): the Bundle is PUT at
``<url>/Bundle/<id>`` (an update, so sending it again changes nothing). A server
that is down or busy (a connection error, 5xx, 429) is retried in order; one that
refuses the Bundle (another 4xx) has it logged and counted, and the rest go on."""

from __future__ import annotations

import aiohttp
import msgspec

from ..logs import get_logger
from . import fhir
from .entries import Entry, FhirPush
from .reader import RecordReader

log = get_logger()
TIMEOUT_S = 10.0


class PushUnavailable(ConnectionError):
    """The FHIR server cannot take it now (retried)."""


class PushRefused(Exception):
    """The FHIR server refuses this Bundle (not retried)."""


class FhirPusher:
    def __init__(self, url: str, token: str | None, reader: RecordReader) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.reader = reader
        self.pushed = 0

    async def apply(self, entries: list[Entry]) -> None:
        pushes = [e for e in entries if isinstance(e, FhirPush) and e.consult is not None]
        if not pushes:
            return
        headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as http:
            for push in pushes:
                await self._push(http, push)

    async def _push(self, http: aiohttp.ClientSession, push: FhirPush) -> None:
        consult = push.consult
        assert consult is not None
        recordings = (await self.reader.recordings([consult.id])).get(consult.id, [])
        bundle = fhir.bundle(consult, recordings, self.url)
        target = f"{self.url}/Bundle/{fhir.fhir_id(consult.id)}"
        try:
            async with http.put(target, data=msgspec.json.encode(bundle)) as response:
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PushUnavailable(type(exc).__name__) from None
        if status >= 500 or status == 429:
            raise PushUnavailable(f"HTTP {status}")
        if status >= 400:
            raise PushRefused(f"HTTP {status}")
        self.pushed += 1
        log.info("records.fhir_pushed", consult_id=consult.id, status=status)
