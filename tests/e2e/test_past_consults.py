"""A consult from last month in real browsers: the node that took it dated it a month
ago (JISR_CLOCK_OFFSET_S) and has since restarted, so its live state knows nothing of
it; the referrer page lists it from the record store and shows its report, and the
admin's audit page finds who read it."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from selenium.webdriver.common.by import By

from recordings.crypto import generate_key_file
from tests.e2e.conftest import run_jisr
from tests.e2e.screen import Axe
from tests.e2e.test_consult_flow import open_page, state, wait_until
from tests.redis_server import free_port

pytestmark = pytest.mark.e2e

MONTH_S = 35 * 86400
NEW = {"specialty": "cardiology", "urgency": "urgent", "summary": "exertional chest pain",
       "patient_ref": "MRN-2211"}  # fmt: skip
REPORT = {"findings": "inferior ischaemia on stress echo", "assessment": "stable angina",
          "recommendation": "elective angiography", "follow_up_urgency": "routine"}  # fmt: skip


def call(base: str, method: str, path: str, token: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}{path}", data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def settled(base: str) -> bool:
    with urllib.request.urlopen(f"{base}/readyz", timeout=5) as response:
        records = json.loads(response.read()).get("records", {})
    return records.get("database") == "up" and records.get("backlog") == 0


def test_last_months_report_and_who_read_it(tmp_path, browsers) -> None:
    key = tmp_path / "master.key"
    generate_key_file(key)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"JISR_PORT": str(port), "JISR_ICE_ADDRESSES": "127.0.0.1",
           "JISR_RECORDING_KEY": str(key), "JISR_DATA_DIR": str(tmp_path / "data")}  # fmt: skip

    (tmp_path / "then").mkdir()
    with run_jisr(tmp_path / "then", {**env, "JISR_CLOCK_OFFSET_S": str(-MONTH_S)}, [],
                  base=base) as then:  # fmt: skip
        tokens = then.tokens
        consult = call(base, "POST", "/api/consults", tokens.referrer, NEW)
        call(base, "POST", f"/api/consults/{consult['id']}/accept", tokens.specialist)
        reported = call(base, "POST", f"/api/consults/{consult['id']}/report", tokens.specialist,
                        REPORT)  # fmt: skip
        wait_until(lambda: settled(base), 10, "the record store to have the consult")
    assert reported["ended_at"] < time.time() - 30 * 86400  # ended last month

    (tmp_path / "now").mkdir()
    with run_jisr(tmp_path / "now", env, [], base=base) as server:
        assert call(base, "GET", "/api/consults", tokens.referrer)["consults"] == []  # not live
        referrer = browsers()
        open_page(referrer, server, "referrer", tokens.referrer)
        wait_until(lambda: consult["id"] in state(referrer).get("past", {}).get("ids", []), 15,
                   "last month's consult among the past consults")  # fmt: skip
        referrer.find_element(
            By.CSS_SELECTOR, f'.open-past[data-consult-id="{consult["id"]}"]').click()  # fmt: skip
        opened = wait_until(lambda: (lambda p: p if p.get("opened") == consult["id"] else None)(
            state(referrer).get("past", {})), 15, "the consult opened")  # fmt: skip
        assert opened["report"] == {k: REPORT[k] for k in ("findings", "assessment",
                                                           "recommendation")}  # fmt: skip
        assert "elective angiography" in opened["shownText"]  # on the page, not only in state
        assert opened["history"] == ["waiting", "accepted", "ended"]

        admin = browsers()
        open_page(admin, server, "audit", tokens.admin)
        admin.find_element(By.ID, "audit-consult").send_keys(consult["id"])
        admin.find_element(By.ID, "audit-search").click()

        def readers() -> set | None:
            entries = state(admin).get("audit", {}).get("entries", [])
            found = {(e["event"], e["actor"]) for e in entries if e["consult_id"] == consult["id"]}
            return found if ("report.viewed", "dr-amal") in found else None

        found = wait_until(readers, 15, "the referrer's read in the audit page")
        assert ("consult.viewed", "dr-amal") in found and ("consult.created", "dr-amal") in found
        # The rows on the page, read in one step (a re-render between finding a row and
        # reading it would leave a stale element).
        shown = admin.execute_script(
            "return [...document.querySelectorAll('tr.audit-entry[data-event=\"report.viewed\"]')]"
            ".map((r) => [r.dataset.actor, r.dataset.consultId]);")  # fmt: skip
        assert ["dr-amal", consult["id"]] in shown, shown

        # The record pages as accessible as the others: a past consult opened, the
        # audit page with its results, in both languages.
        axe = Axe()
        axe.both_languages({"referrer": referrer}, "past consult opened")
        axe.both_languages({"admin": admin}, "audit results")
        assert len(axe.checked) == 4 and axe.found == {}, json.dumps(axe.found, indent=1)
