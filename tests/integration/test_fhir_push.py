"""Each finished consult pushed to the hospital's FHIR server (JISR_FHIR_PUSH_URL)
through a durable outbox: while that server is down the Bundle waits (shown by
/readyz), and once it answers the Bundle arrives whole and valid, with the bearer
token; a Bundle it refuses is counted, not retried forever."""

from __future__ import annotations

import asyncio

from aiohttp import web
from fhir.resources.R4B.bundle import Bundle

from recordings.crypto import generate_key_file
from signaling.app import create_app
from signaling.keys import RECORDS
from signaling.store import MemoryStore
from tests.conftest import make_settings
from tests.redis_server import free_port

NEW = {"specialty": "neurology", "urgency": "critical", "summary": "aphasia, onset 40 min",
       "patient_ref": "MRN-31"}  # fmt: skip
REPORT = {"findings": "left MCA occlusion", "assessment": "acute ischaemic stroke",
          "recommendation": "thrombectomy", "follow_up_urgency": "critical"}  # fmt: skip


class Receiver:
    """The hospital's FHIR server, as far as a push needs one: PUT Bundle/{id}."""

    def __init__(self, port: int, refuse: bool = False) -> None:
        self.port, self.refuse = port, refuse
        self.received: dict[str, tuple[dict, str]] = {}
        self.arrived = asyncio.Event()
        self.runner: web.AppRunner | None = None

    async def put(self, request: web.Request) -> web.Response:
        if self.refuse:
            return web.json_response({"resourceType": "OperationOutcome"}, status=422)
        self.received[request.match_info["id"]] = (await request.json(),
                                                   request.headers.get("Authorization", ""))
        self.arrived.set()
        return web.json_response(await request.json(), status=201)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_put("/fhir/Bundle/{id}", self.put)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def a_node(aiohttp_client, tmp_path, port: int):
    key, token = tmp_path / "master.key", tmp_path / "fhir.token"
    generate_key_file(key)
    token.write_text("hospital-token-1234\n")
    settings = make_settings(
        recording_key=key, recordings_dir=tmp_path / "rec", attachments_dir=tmp_path / "att",
        data_dir=tmp_path / "data", fhir_push_url=f"http://127.0.0.1:{port}/fhir",
        fhir_push_token_file=token,
    )  # fmt: skip
    return await aiohttp_client(create_app(settings, store=MemoryStore()))


async def finish(node, tokens) -> str:
    async def call(method, path, token, json=None):
        response = await node.request(method, path, json=json, headers=tokens.header(token))
        assert response.status in (200, 201), await response.text()
        return await response.json()

    neurologist = tokens.neurologist
    made = await call("POST", "/api/consults", tokens.referrer, NEW)
    await call("POST", f"/api/consults/{made['id']}/accept", neurologist)
    await call("POST", f"/api/consults/{made['id']}/report", neurologist, REPORT)
    return made["id"]


async def test_a_finished_consult_reaches_the_hospital_once_it_answers(aiohttp_client, tmp_path,
                                                                       tokens) -> None:  # fmt: skip
    port = free_port()
    node = await a_node(aiohttp_client, tmp_path, port)
    consult_id = await finish(node, tokens)
    records = node.app[RECORDS]
    assert not await records.push_outbox.drained(1.0)  # nobody listens yet
    ready = await (await node.get("/readyz")).json()
    assert ready["records"]["fhir_push_backlog"] == 1

    receiver = Receiver(port)
    await receiver.start()
    try:
        await asyncio.wait_for(receiver.arrived.wait(), 15)
        assert await records.push_outbox.drained(5)
    finally:
        await receiver.stop()
    bundle, authorization = receiver.received[consult_id.replace("_", "-")]
    assert authorization == "Bearer hospital-token-1234"
    valid = Bundle.model_validate(bundle)
    kinds = [e.resource.get_resource_type() for e in valid.entry]
    assert kinds == ["ServiceRequest", "Encounter", "Composition", "Provenance"]


async def test_a_refused_bundle_is_counted_and_the_rest_go_on(aiohttp_client, tmp_path,
                                                              tokens) -> None:  # fmt: skip
    port = free_port()
    receiver = Receiver(port, refuse=True)
    await receiver.start()
    try:
        node = await a_node(aiohttp_client, tmp_path, port)
        await finish(node, tokens)
        records = node.app[RECORDS]
        assert await records.push_outbox.drained(10)
        assert records.push_outbox.rejected == 1 and records.pusher.pushed == 0
    finally:
        await receiver.stop()
