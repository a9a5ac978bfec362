"""Redis stops in the middle of a call: each page (referrer and specialist in the call,
supervisor observing it) says what the outage affects and that the call continues, the
call's media keeps flowing, and each page's notice clears by itself within 5 s of Redis
being back."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By

from tests.conftest import CLUSTER_SECRET
from tests.e2e.test_consult_flow import live_video, open_page, state, wait_until
from tests.e2e.test_triage_flow import click, create_consult, png_bytes
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

CLEARED_WITHIN_S = 5.0
CALL_TEXT = {
    "referrer": "Your call continues.",
    "specialist": "Your call continues.",
    "supervisor": "The call you are observing continues.",
}


@pytest.fixture
def redis_store() -> Iterator[RedisServer]:
    with RedisServer(persistent=True) as redis:  # append-only: a restart keeps the state
        yield redis


@pytest.fixture
def jisr_server_env(redis_store) -> dict[str, str]:
    return {"JISR_REDIS_URL": redis_store.url, "JISR_CLUSTER_SECRET": CLUSTER_SECRET}


@pytest.fixture
def jisr_server_args() -> list[str]:
    return ["--workers", "1"]  # one node: the call's media and every page on it


def outage(driver) -> dict:
    return state(driver)["outage"]


def start_call(server, browsers) -> tuple[dict, str]:
    """The referrer's consult accepted by the specialist, both seeing each other and the
    supervisor observing them; the pages by name, and the consult's id."""
    tokens = server.tokens
    pages = {"referrer": browsers(), "specialist": browsers(), "supervisor": browsers()}
    for name in ("specialist", "supervisor", "referrer"):
        open_page(pages[name], server, name, getattr(tokens, name))
    referrer, specialist, supervisor = pages.values()
    create_consult(referrer, "cardiology", "urgent", "Chest pain, troponin rising.", "P-2026-0303")
    consult_id = wait_until(
        lambda: next((c["id"] for c in state(referrer)["consults"] if c["state"] == "waiting"), 0),
        10,
        "consult created",
    )
    click(specialist, f".accept-button[data-consult-id='{consult_id}']", timeout=10)
    wait_until(
        lambda: live_video(state(referrer)) and live_video(state(specialist)),
        30,
        "remote video on both participant pages",
    )
    click(supervisor, ".observe-button[data-session-id]", timeout=10)
    wait_until(
        lambda: (
            (s := state(supervisor)) and live_video(s, "referrer") and live_video(s, "specialist")
        ),
        30,
        "both participants' video on the supervisor page",
    )
    return pages, consult_id


def frames(driver) -> list[int]:
    return [r["framesDecoded"] or 0 for r in state(driver)["remote"] if r["framesDecoded"]]


def assert_media_flows(pages: dict, what: str) -> None:
    """Every remote video on every page decodes at least 20 more frames (1 s at 20 fps)."""
    before = {name: frames(driver) for name, driver in pages.items()}

    def advanced() -> bool:
        for name, driver in pages.items():
            now = frames(driver)
            if len(now) != len(before[name]) or not now:
                return False
            if any(b - a < 20 for a, b in zip(before[name], now, strict=True)):
                return False
        return True

    wait_until(advanced, 10, f"video frames advancing on every page {what}")


def check_notice(driver, name: str) -> str:
    """The notice is shown, announced politely, says the call continues; its text."""
    notice = driver.find_element(By.ID, "outage-notice")
    assert notice.is_displayed(), name
    assert notice.get_attribute("role") == "status", name
    assert notice.get_attribute("aria-live") == "polite", name
    text = notice.text
    assert "cannot be saved right now" in text, (name, text)
    assert CALL_TEXT[name] in text, (name, text)
    # The outage is not reported a second time as an error.
    banner = driver.find_element(By.ID, "error-banner")
    assert not banner.is_displayed() or banner.get_attribute("data-code") != "store_unavailable"
    return text


def test_outage_notice_while_redis_is_down_clears_when_it_is_back(
    jisr_server, redis_store, browsers, tmp_path, record_property
):
    pages, consult_id = start_call(jisr_server, browsers)
    referrer = pages["referrer"]
    for name, driver in pages.items():
        assert not outage(driver)["shown"], name

    redis_store.kill()
    stopped = time.time()
    # The referrer attaches a file in the call; the specialist's page refreshes its
    # on-call status every 10 s and the supervisor's its dashboard every 5 s by themselves.
    scan = tmp_path / "ecg-strip.png"
    scan.write_bytes(png_bytes())
    click(referrer, "#session-attachments .attach-button")
    referrer.find_element(By.ID, "attach-input").send_keys(str(scan))
    noticed = {}
    for name, driver in pages.items():
        noticed[name] = (
            wait_until(
                lambda d=driver: (o := outage(d))["shown"] and o, 20, f"the outage notice ({name})"
            )["since"]
            / 1000
            - stopped
        )
        check_notice(driver, name)
    assert state(referrer)["uploads"][consult_id]["code"] == "store_unavailable"
    assert_media_flows(pages, "while Redis is down")

    # Checking while it lasts does not clear the notice; the Arabic page says the same.
    wait_until(lambda: outage(referrer)["checks"] >= 3, 10, "the referrer's page checking")
    referrer.find_element(By.ID, "lang-toggle").click()
    wait_until(
        lambda: "مكالمتك مستمرة" in referrer.find_element(By.ID, "outage-notice").text,
        5,
        "the notice in Arabic",
    )
    for name, driver in pages.items():
        assert outage(driver)["shown"], name

    redis_store.restart()
    back = time.time()

    def all_cleared() -> list[dict] | None:
        outs = [outage(driver) for driver in pages.values()]
        return outs if not any(o["shown"] for o in outs) else None

    cleared = wait_until(all_cleared, CLEARED_WITHIN_S + 1, "no outage notice on any page")
    cleared_after = {
        name: round(o["clearedAt"] / 1000 - back, 2) for name, o in zip(pages, cleared, strict=True)
    }
    for name, driver in pages.items():
        assert cleared_after[name] <= CLEARED_WITHIN_S, cleared_after
        assert driver.find_element(By.ID, "outage-notice").text == "", name
    assert_media_flows(pages, "after Redis is back")
    for name, driver in pages.items():
        s = state(driver)
        assert s["inSession"] and s["connectionState"] == "connected" and not s["ended"], (name, s)

    figures = {
        "noticed_after_stop_s": {k: round(v, 2) for k, v in noticed.items()},
        "cleared_after_back_s": cleared_after,
    }
    record_property("store_outage", json.dumps(figures))
    print(f"\noutage notice (s): {figures}")
