"""The whole consult in real browsers: the referrer page creates a consult, the
specialist page accepts it, both show each other's live video, and the supervisor
page observes both."""

from __future__ import annotations

import json
import time

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

pytestmark = pytest.mark.e2e

# Between documents (a page that replaces itself, say) there is no hook for a moment:
# that reads as a page not ready yet, not as an error.
STATE_JS = (
    "const done = arguments[arguments.length - 1];"
    "if (!window.jisr) { done({hookError: 'no hook in this document', url: location.href,"
    " failed: performance.getEntriesByType('resource').filter(e => e.responseStatus !== 200)"
    ".map(e => [e.name.split('/').pop(), e.responseStatus, Math.round(e.duration)]),"
    " title: document.title, text: document.body ? document.body.innerText.slice(0, 300)"
    " : null}); }"
    "else { window.jisr.state().then(done, e => done({hookError: String(e)})); }"
)


def state(driver) -> dict:
    return driver.execute_async_script(STATE_JS)


def wait_until(check, timeout: float, what: str):
    """Polls ``check`` until it returns something truthy, or fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def live_video(page_state: dict, participant: str | None = None) -> dict | None:
    for remote in page_state.get("remote", []):
        if participant and remote.get("participant") != participant:
            continue
        if remote.get("framesDecoded", 0) > 0 and remote.get("videoWidth", 0) > 0:
            return remote
    return None


def frames_advance(pages: dict, frames: int = 10, timeout: float = 10) -> None:
    """Every page's remote video decodes ``frames`` more frames (video both ways)."""
    before = {n: live_video(state(d))["framesDecoded"] for n, d in pages.items()}
    wait_until(
        lambda: all(live_video(state(d))["framesDecoded"] >= before[n] + frames
                    for n, d in pages.items()),
        timeout,
        "frames advancing both ways",
    )  # fmt: skip


def open_page(driver, server, page: str, token: str) -> None:
    driver.get(f"{server.base}/{page}.html#token={token}")
    try:
        wait_until(lambda: state(driver).get("ready"), 15, f"{page} page ready")
    except AssertionError as failed:  # a page that never started: say what it shows
        raise AssertionError(f"{failed}; the page: {state(driver)}") from None
    assert "#token" not in driver.current_url  # the token left the address bar


def test_referral_accept_live_video_and_observer(jisr_server, browsers, record_property):
    server = jisr_server
    tokens = server.tokens
    referrer, specialist, supervisor = browsers(), browsers(), browsers()
    open_page(specialist, server, "specialist", tokens.specialist)
    open_page(supervisor, server, "supervisor", tokens.supervisor)
    open_page(referrer, server, "referrer", tokens.referrer)

    # Referrer: a critical cardiology consult.
    wait_until(
        lambda: referrer.find_elements(By.CSS_SELECTOR, "#specialty option[value=cardiology]"),
        10,
        "specialties loaded",
    )
    Select(referrer.find_element(By.ID, "specialty")).select_by_value("cardiology")
    referrer.find_element(By.ID, "urgency-critical").click()
    referrer.find_element(By.ID, "consult-summary").send_keys(
        "Post-CABG day 1, rising lactate, suspected tamponade; echo attached."
    )
    referrer.find_element(By.ID, "patient-ref").send_keys("P-2026-0042")
    referrer.find_element(By.ID, "create-consult").click()
    consult_id = wait_until(
        lambda: next(
            (c["id"] for c in state(referrer).get("consults", []) if c["state"] == "waiting"), None
        ),
        10,
        "consult created",
    )

    # Specialist: the consult is pushed into the queue; accept it.
    accept = wait_until(
        lambda: specialist.find_elements(
            By.CSS_SELECTOR, f".accept-button[data-consult-id='{consult_id}']"
        ),
        10,
        "consult in the specialist's queue",
    )[0]
    accept.click()
    clicked = time.monotonic()

    # Both participants see each other's live video.
    first_frame: dict[str, float] = {}
    pages = {"referrer": referrer, "specialist": specialist}

    def both_live() -> bool:
        for name, driver in pages.items():
            if name not in first_frame and live_video(state(driver)):
                first_frame[name] = time.monotonic() - clicked
        return len(first_frame) == 2

    wait_until(both_live, 30, "remote video on both participant pages")
    # The pages send their 1280x720 camera in three simulcast layers; each viewer gets
    # one of them (docs/layers.md), whole and undistorted.
    for name, driver in pages.items():
        remote = live_video(state(driver))
        size = (remote["videoWidth"], remote["videoHeight"])
        assert size in {(320, 180), (640, 360), (1280, 720)}, (name, remote)

    # Supervisor: observe the live session, receiving both participants.
    observe = wait_until(
        lambda: supervisor.find_elements(By.CSS_SELECTOR, ".observe-button[data-session-id]"),
        10,
        "live session listed for the supervisor",
    )[0]
    observe.click()
    wait_until(
        lambda: (
            (s := state(supervisor)) and live_video(s, "referrer") and live_video(s, "specialist")
        ),
        30,
        "both participants' video on the supervisor page",
    )
    observer_state = state(supervisor)
    assert observer_state["as"] == "observer"
    assert observer_state["local"] in (None, {}) or not observer_state["local"].get("video")

    # Participants are shown who observes.
    for driver in pages.values():
        wait_until(
            lambda d=driver: any(
                m["sub"] == "sup-leila" and m["as"] == "observer" for m in state(d)["roster"]
            ),
            10,
            "the observer in the participants' roster",
        )

    # Video keeps flowing: decoded frames advance on every page.
    before = {n: live_video(state(d))["framesDecoded"] for n, d in pages.items()}
    wait_until(
        lambda: all(
            live_video(state(d))["framesDecoded"] >= before[n] + 10 for n, d in pages.items()
        ),
        10,
        "frames advancing",
    )
    assert state(referrer)["lastError"] is None and state(specialist)["lastError"] is None

    figures = {k: round(v, 3) for k, v in first_frame.items()}
    record_property("accept_to_first_frame_s", json.dumps(figures))
    print(f"\naccept click -> first remote frame (s): {figures}")
