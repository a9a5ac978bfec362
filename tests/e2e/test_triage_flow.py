"""Triage, case packet, chat and report in real browsers.

1. Push and presence: a critical consult created on the referrer page appears on an
   available specialist's page within a second and never on a busy one's; it is
   re-announced, then escalated at its (short) deadline, which the supervisor sees as a
   banner and on the dashboard; decline and transfer reach the referrer page.
2. Case files, chat and report: the referrer attaches a PNG and a PDF (and has a wrong
   file refused), the specialist accepts and opens them, participants and an observer
   chat, and the specialist's report closes the consult on the referrer's page.
"""

from __future__ import annotations

import json
import struct
import time
import zlib

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from tests.e2e.test_consult_flow import open_page, state, wait_until

pytestmark = pytest.mark.e2e


def png_bytes(width: int = 24, height: int = 16) -> bytes:
    """A real (tiny, red-to-blue gradient) PNG, built by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(
        b"\x00"
        + b"".join(bytes((255 - x * 255 // width, 40, x * 255 // width)) for x in range(width))
        for _ in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def pdf_bytes() -> bytes:
    """A minimal one-page PDF with a correct cross-reference table."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 100] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        None,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    text = b"BT /F1 18 Tf 20 40 Td (ECG 12-lead) Tj ET"
    objects[3] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(text), text)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def create_consult(referrer, specialty: str, urgency: str, summary: str, patient_ref: str):
    wait_until(
        lambda: referrer.find_elements(By.CSS_SELECTOR, f"#specialty option[value='{specialty}']"),
        10,
        "specialties loaded",
    )
    Select(referrer.find_element(By.ID, "specialty")).select_by_value(specialty)
    referrer.find_element(By.ID, f"urgency-{urgency}").click()
    referrer.find_element(By.ID, "consult-summary").send_keys(summary)
    referrer.find_element(By.ID, "patient-ref").send_keys(patient_ref)
    button = referrer.find_element(By.ID, "create-consult")
    clicked = time.time()
    button.click()
    return clicked


def queue_ids(driver, urgency: str | None = None) -> list[str]:
    selector = "#queue li.consult-item:not(.taken)"
    if urgency:
        selector += f"[data-urgency='{urgency}']"
    return driver.execute_script(
        f'return Array.from(document.querySelectorAll("{selector}")).map(e => e.dataset.consultId);'
    )


VISIBLE_JS = (
    "return Array.from(document.querySelectorAll(arguments[0]))"
    ".filter(e => e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden')"
)


def visible(driver, selector: str) -> list:
    """The displayed elements matching ``selector``, found in one step (the pages redraw
    lists on pushes; element references can go stale between two WebDriver calls)."""
    return driver.execute_script(VISIBLE_JS + ";", selector)


def texts(driver, selector: str) -> list[str]:
    """The text of the displayed elements matching ``selector``, read in one step."""
    return driver.execute_script(VISIBLE_JS + ".map(e => e.innerText);", selector)


def click(driver, selector: str, timeout: float = 5) -> None:
    """Click the element once it is there; lists re-render on pushes, so a reference
    found a moment ago may be stale: find it again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = visible(driver, selector)
            if found:
                found[0].click()
                return
        except StaleElementReferenceException:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing to click at {selector}")
        time.sleep(0.05)


def entry(page_state: dict, consult_id: str) -> dict | None:
    return next((q for q in page_state.get("queue", []) if q["id"] == consult_id), None)


@pytest.fixture
def jisr_server_env(tmp_path) -> dict[str, str]:
    """Attachments go to this test's folder (the server's default is ./var/attachments)."""
    return {"JISR_ATTACHMENTS_DIR": str(tmp_path / "attachments")}


@pytest.mark.parametrize(
    "jisr_server_env",
    [{"JISR_DEADLINE_CRITICAL_S": "6", "JISR_ESCALATION": "cardiology=sup-nobody"}],
)
def test_push_presence_escalation_decline_transfer(jisr_server, browsers, record_property):
    server, tokens = jisr_server, jisr_server.tokens
    referrer, specialist, busy, supervisor = browsers(), browsers(), browsers(), browsers()
    open_page(specialist, server, "specialist", tokens.specialist)
    open_page(busy, server, "specialist", tokens.other_specialist)
    open_page(supervisor, server, "supervisor", tokens.supervisor)
    open_page(referrer, server, "referrer", tokens.referrer)

    # On call: one specialist available (the default), the other sets busy.
    busy.find_element(By.ID, "presence-busy").click()
    wait_until(lambda: state(busy)["presence"]["effective"] == "busy", 5, "busy confirmed")
    wait_until(lambda: state(specialist)["presence"]["effective"] == "available", 5, "available")
    assert busy.find_element(By.ID, "presence-busy").get_attribute("aria-pressed") == "true"
    assert busy.find_element(By.ID, "queue-paused").is_displayed()

    # (a) A critical consult reaches the available specialist within a second.
    clicked = create_consult(
        referrer, "cardiology", "critical",
        "STEMI, cardiogenic shock, needs PCI decision.", "P-2026-0101",
    )  # fmt: skip
    ids = wait_until(lambda: queue_ids(specialist, "critical"), 5, "critical consult pushed")
    seen = time.time()
    consult_id = ids[0]
    shown_at = entry(state(specialist), consult_id)["shownAt"] / 1000
    # rendered_s: the specialist page's own clock when it drew the item (same machine);
    # polled_s: when this test noticed it (includes WebDriver round trips).
    latency = {"rendered_s": round(shown_at - clicked, 3), "polled_s": round(seen - clicked, 3)}
    print(f"\ncreate click -> consult on the available specialist's page: {latency}")
    record_property("push_latency_s", json.dumps(latency))
    assert shown_at - clicked < 1.0, latency
    assert seen - clicked < 2.0, latency

    # The referrer sees where it stands.
    wait_until(
        lambda: visible(
            referrer,
            f".consult-item[data-consult-id='{consult_id}'] .queue-status[data-position='1']",
        ),
        5,
        "position 1 on the referrer page",
    )
    text = texts(referrer, f".consult-item[data-consult-id='{consult_id}'] .queue-status")[0]
    assert "Position 1" in text and "Cardiology" in text, text

    # Re-announced at half the deadline (3 s): highlighted on the available page.
    wait_until(
        lambda: (e := entry(state(specialist), consult_id)) and e["reannounced"],
        6,
        "re-announced flag",
    )
    assert visible(specialist, f"#queue li.reannounced[data-consult-id='{consult_id}']")

    # (b) Escalated at the 6 s deadline: banner and dashboard on the supervisor page.
    def escalation_shown():
        s = state(supervisor)
        listed = any(e["id"] == consult_id and e["inList"] for e in s.get("escalations", []))
        return s["escalationAlert"]["shown"] and listed

    wait_until(escalation_shown, 9.5 - (time.time() - clicked), "escalation on the supervisor")
    escalated_after = time.time() - clicked
    print(f"create click -> escalation on the supervisor page: {escalated_after:.2f} s")
    record_property("escalation_after_s", round(escalated_after, 2))
    assert escalated_after < 8.5
    assert visible(supervisor, "#escalation-alert")
    item = texts(supervisor, f"#escalations li.escalation-item[data-consult-id='{consult_id}']")
    assert item and "sup-nobody" in item[0], item
    wait_until(
        lambda: (e := entry(state(specialist), consult_id)) and e["escalated"], 5, "escalated flag"
    )
    board = state(supervisor)["dashboard"]
    assert board["queue"]["critical"]["waiting"] >= 1
    on_call = {p["sub"]: p["status"] for p in board["onCall"]}
    assert on_call.get("dr-karim") == "available" and on_call.get("dr-sara") == "busy", on_call

    # Never on the busy specialist's page (nothing pushed, nothing shown).
    assert consult_id not in queue_ids(busy)
    assert entry(state(busy), consult_id) is None

    # Decline (a second, routine consult) and transfer (the critical one).
    create_consult(referrer, "cardiology", "routine", "Follow-up question.", "P-2026-0102")
    routine_id = wait_until(lambda: queue_ids(specialist, "routine"), 5, "routine consult")[0]
    click(specialist, f".decline-button[data-consult-id='{routine_id}']")
    specialist.find_element(By.ID, "decline-reason").send_keys("Managing another STEMI")
    specialist.find_element(By.ID, "decline-confirm").click()
    wait_until(lambda: routine_id not in queue_ids(specialist), 5, "declined consult gone")
    wait_until(
        lambda: visible(referrer, f".consult-item[data-consult-id='{routine_id}'] .decline-entry"),
        5,
        "decline shown to the referrer",
    )
    decline_text = texts(referrer, f".consult-item[data-consult-id='{routine_id}'] .decline-entry")[
        0
    ]
    assert "DR-KARIM" in decline_text and "Managing another STEMI" in decline_text

    click(specialist, f".transfer-button[data-consult-id='{consult_id}']")
    Select(specialist.find_element(By.ID, "transfer-specialty")).select_by_value("neurology")
    specialist.find_element(By.ID, "transfer-reason").send_keys("Posterior stroke suspected")
    specialist.find_element(By.ID, "transfer-confirm").click()
    wait_until(lambda: consult_id not in queue_ids(specialist), 5, "transferred consult gone")
    wait_until(
        lambda: visible(referrer, f".consult-item[data-consult-id='{consult_id}'] .transfer-entry"),
        5,
        "transfer shown to the referrer",
    )
    transfer_text = texts(
        referrer, f".consult-item[data-consult-id='{consult_id}'] .transfer-entry"
    )[0]
    assert "Neurology" in transfer_text and "Posterior stroke suspected" in transfer_text
    assert consult_id not in queue_ids(busy)
    for driver in (specialist, busy, referrer):
        assert state(driver)["lastError"] is None, state(driver)["lastError"]


def test_case_files_chat_and_report(jisr_server, browsers, tmp_path):
    server, tokens = jisr_server, jisr_server.tokens
    referrer, specialist, supervisor = browsers(), browsers(), browsers()
    open_page(specialist, server, "specialist", tokens.specialist)
    open_page(supervisor, server, "supervisor", tokens.supervisor)
    open_page(referrer, server, "referrer", tokens.referrer)

    create_consult(
        referrer, "cardiology", "urgent",
        "Post-CABG day 1, new AF with hypotension. ECG and echo attached.", "P-2026-0202",
    )  # fmt: skip
    consult_id = wait_until(
        lambda: next(
            (c["id"] for c in state(referrer).get("consults", []) if c["state"] == "waiting"), None
        ),
        10,
        "consult created",
    )

    wait_until(
        lambda: visible(referrer, f".consult-item[data-consult-id='{consult_id}'] .queue-status"),
        5,
        "queue position shown",
    )

    # (c) The referrer attaches a PNG and a PDF; a disguised file is refused clearly.
    image, ecg, fake = tmp_path / "echo-still.png", tmp_path / "ecg.pdf", tmp_path / "notes.png"
    image.write_bytes(png_bytes())
    ecg.write_bytes(pdf_bytes())
    fake.write_bytes(b"this is not an image")
    click(referrer, f".attach-button[data-consult-id='{consult_id}']")
    referrer.find_element(By.ID, "attach-input").send_keys(f"{image}\n{ecg}\n{fake}")
    wait_until(
        lambda: (u := state(referrer)["uploads"].get(consult_id)) and u["state"] == "error",
        15,
        "uploads finished",
    )
    results = state(referrer)["uploads"][consult_id]["results"]
    assert [(r["filename"], r["ok"], r["code"]) for r in results] == [
        ("echo-still.png", True, None),
        ("ecg.pdf", True, None),
        ("notes.png", False, "unsupported_type"),
    ], results
    refusal = texts(referrer, ".upload-result[data-code='unsupported_type']")[0]
    assert "notes.png" in refusal and "PDF, JPEG, PNG and DICOM" in refusal, refusal
    wait_until(
        lambda: (
            len(
                visible(
                    referrer, f".consult-item[data-consult-id='{consult_id}'] li.attachment-item"
                )
            )
            == 2
        ),
        5,
        "two attachments listed for the referrer",
    )

    # The specialist accepts; the attachments open on the specialist's page.
    accept = wait_until(
        lambda: specialist.find_elements(
            By.CSS_SELECTOR, f".accept-button[data-consult-id='{consult_id}']"
        ),
        10,
        "consult in the queue",
    )[0]
    assert entry(state(specialist), consult_id)["attachments"] == 2
    accept.click()
    wait_until(
        lambda: (
            len(visible(specialist, "#attachments li.attachment-item[data-attachment-id]")) == 2
        ),
        15,
        "attachments in the specialist's session view",
    )
    # In a session the specialist shows (and the server counts) as busy.
    wait_until(
        lambda: (
            (p := state(specialist)["presence"])["shown"] == "in_session"
            and p["effective"] == "busy"
        ),
        5,
        "busy in session",
    )
    click(specialist, "#attachments li.attachment-item[data-type='image/png'] .open-attachment")
    viewer = wait_until(
        lambda: (v := state(specialist)["viewer"]) and v["state"] == "ready" and v,
        10,
        "image in the viewer",
    )
    assert viewer["kind"] == "image" and viewer["naturalWidth"] == 24, viewer
    assert (
        specialist.find_element(By.ID, "attachment-image").get_attribute("src").startswith("blob:")
    )
    specialist.find_element(By.ID, "attachment-close").click()
    click(
        specialist, "#attachments li.attachment-item[data-type='application/pdf'] .open-attachment"
    )
    viewer = wait_until(
        lambda: (v := state(specialist)["viewer"]) and v["state"] == "ready" and v,
        10,
        "PDF in the viewer",
    )
    assert viewer["kind"] == "pdf"
    if not viewer["embedded"]:
        # The server's CSP refuses blob: frames: the viewer says so and opens a new tab.
        assert specialist.find_element(By.ID, "attachment-pdf-fallback").is_displayed()
        page = specialist.current_window_handle
        specialist.find_element(By.ID, "attachment-open-tab").click()
        tab = wait_until(lambda: [w for w in specialist.window_handles if w != page], 5, "PDF tab")[
            0
        ]
        specialist.switch_to.window(tab)
        assert specialist.current_url.startswith("blob:")
        assert specialist.execute_script("return document.contentType") == "application/pdf"
        specialist.close()
        specialist.switch_to.window(page)
    specialist.find_element(By.ID, "attachment-close").click()

    # The supervisor observes.
    wait_until(lambda: state(referrer)["inSession"], 15, "referrer in the session")
    observe = wait_until(
        lambda: supervisor.find_elements(By.CSS_SELECTOR, ".observe-button[data-session-id]"),
        10,
        "session listed for the supervisor",
    )[0]
    observe.click()
    wait_until(lambda: state(supervisor)["as"] == "observer", 15, "supervisor observing")

    # (d) Chat: a message from each side reaches everyone, observer included.
    def chat_texts(driver):
        return [m["text"] for m in state(driver)["chat"]["messages"]]

    def say(driver, text):
        box = wait_until(lambda: visible(driver, "#chat-input"), 10, "chat input")[0]
        box.send_keys(text)
        box.send_keys(Keys.ENTER)

    first = "BP 82/50 on noradrenaline 0.2"
    say(referrer, first)
    for driver in (referrer, specialist, supervisor):
        wait_until(lambda d=driver: first in chat_texts(d), 5, "referrer's message everywhere")
    arabic = "جهّزوا غرفة القسطرة"
    say(supervisor, arabic)
    for driver in (referrer, specialist, supervisor):
        wait_until(lambda d=driver: arabic in chat_texts(d), 5, "observer's message everywhere")
    kinds = specialist.execute_script(
        "return Array.from(document.querySelectorAll('#chat-log li.chat-line'), e => e.dataset.as);"
    )
    assert kinds == ["participant", "observer"], kinds
    assert state(referrer)["chat"]["messages"][0]["mine"] is True

    # (e) The report closes the consult; the referrer page shows it.
    specialist.find_element(By.ID, "report-findings").send_keys(
        "New AF 150/min, LV function preserved."
    )
    specialist.find_element(By.ID, "report-assessment").send_keys(
        "Post-operative AF with hypotension."
    )
    specialist.find_element(By.ID, "report-recommendation").send_keys(
        "Amiodarone load; DC cardioversion if unstable."
    )
    Select(specialist.find_element(By.ID, "report-follow-up")).select_by_value("urgent")
    specialist.find_element(By.ID, "report-submit").click()
    wait_until(lambda: state(specialist)["reportForm"]["state"] == "sent", 10, "report sent")

    received = wait_until(
        lambda: (
            (r := state(referrer)["report"]) and r["consultId"] == consult_id and r["shown"] and r
        ),
        10,
        "report on the referrer page",
    )
    assert received["follow_up_urgency"] == "urgent" and len(received["sha256"]) == 64
    assert "Amiodarone" in texts(referrer, f".report-view[data-consult-id='{consult_id}']")[0]
    wait_until(
        lambda: any(
            c["id"] == consult_id and c["state"] == "ended" for c in state(referrer)["consults"]
        ),
        5,
        "consult ended on the referrer page",
    )
    for driver in (referrer, specialist):
        wait_until(lambda d=driver: state(d)["ended"] == "reported", 10, "session ended by report")
    wait_until(
        lambda: state(specialist)["presence"]["effective"] == "available", 5, "available again"
    )

    # Back on the list: the report stays on the consult and downloads as JSON.
    referrer.find_element(By.ID, "session-back").click()
    click(referrer, f".report-download[data-consult-id='{consult_id}']")
    wait_until(
        lambda: (d := state(referrer)["reportDownloads"].get(consult_id)) and d["state"] == "ok",
        5,
        "report downloaded",
    )
    assert state(referrer)["reportDownloads"][consult_id]["sha256"] == received["sha256"]
    assert state(specialist)["lastError"] is None, state(specialist)["lastError"]
