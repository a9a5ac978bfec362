"""Screen share in real browsers: the referrer shares its screen (a third, sendrecv video
transceiver; docs/protocol.md "Media layout of an offer"), the specialist page shows it
in #remote-screen with frames decoded, and it disappears when sharing stops.

Headless Chromium with --use-fake-ui-for-media-stream and --use-fake-device-for-media-stream
(conftest.CHROMIUM_FLAGS) answers getDisplayMedia({video: true}) with a fake 800x600
"screen" — no extra flags or test-only hooks are needed. The click on #share-screen is
the user gesture getDisplayMedia requires."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.e2e.screen import layout, set_viewport
from tests.e2e.test_consult_flow import live_video, open_page, state, wait_until

pytestmark = pytest.mark.e2e


def remote_screen(page_state: dict, participant: str) -> dict | None:
    for r in (page_state.get("screen") or {}).get("remote", []):
        if r.get("participant") == participant:
            return r
    return None


def screen_live(driver, participant: str) -> dict | None:
    r = remote_screen(state(driver), participant)
    if r and r["shown"] and (r["framesDecoded"] or 0) > 0 and (r["width"] or 0) > 0:
        return r
    return None


def visible(driver, css: str) -> bool:
    els = driver.find_elements(By.CSS_SELECTOR, css)
    return bool(els) and els[0].is_displayed()


def test_referrer_shares_screen_and_specialist_sees_it(jisr_server, browsers):
    server = jisr_server
    tokens = server.tokens
    referrer, specialist, supervisor = browsers(), browsers(), browsers()
    open_page(specialist, server, "specialist", tokens.specialist)
    open_page(supervisor, server, "supervisor", tokens.supervisor)
    open_page(referrer, server, "referrer", tokens.referrer)

    wait_until(
        lambda: referrer.find_elements(By.CSS_SELECTOR, "#specialty option[value=cardiology]"),
        10,
        "specialties loaded",
    )
    Select(referrer.find_element(By.ID, "specialty")).select_by_value("cardiology")
    referrer.find_element(By.ID, "urgency-critical").click()
    referrer.find_element(By.ID, "consult-summary").send_keys("Echo loops to review live.")
    referrer.find_element(By.ID, "patient-ref").send_keys("P-2026-0077")
    referrer.find_element(By.ID, "create-consult").click()
    consult_id = wait_until(
        lambda: next(
            (c["id"] for c in state(referrer).get("consults", []) if c["state"] == "waiting"), None
        ),
        10,
        "consult created",
    )
    wait_until(
        lambda: specialist.find_elements(
            By.CSS_SELECTOR, f".accept-button[data-consult-id='{consult_id}']"
        ),
        10,
        "consult in the specialist's queue",
    )[0].click()
    pages = {"referrer": referrer, "specialist": specialist}
    wait_until(
        lambda: all(live_video(state(d)) for d in pages.values()),
        30,
        "camera video on both participant pages",
    )

    # A supervisor observes: two more recvonly video m-lines (referrer's, specialist's screen).
    wait_until(
        lambda: supervisor.find_elements(By.CSS_SELECTOR, ".observe-button[data-session-id]"),
        10,
        "live session listed for the supervisor",
    )[0].click()
    wait_until(
        lambda: (
            (s := state(supervisor)) and live_video(s, "referrer") and live_video(s, "specialist")
        ),
        30,
        "both cameras on the supervisor page",
    )
    assert [r["participant"] for r in state(supervisor)["screen"]["remote"]] == [
        "referrer",
        "specialist",
    ]
    assert not supervisor.find_elements(By.CSS_SELECTOR, "#share-screen:not([hidden])")

    # Nobody shares yet: the screen m-line is negotiated but carries nothing.
    for name, driver in pages.items():
        s = state(driver)
        assert s["screen"]["sharing"] is False, (name, s["screen"])
        assert len(s["screen"]["remote"]) == 1, (name, s["screen"])
        assert not s["screen"]["remote"][0]["shown"], (name, s["screen"])
        assert not visible(driver, "#remote-screen")
        button = driver.find_element(By.ID, "share-screen")
        assert button.is_displayed() and button.text == "Share screen"

    # The referrer shares its screen.
    referrer.find_element(By.ID, "share-screen").click()
    wait_until(lambda: state(referrer)["screen"]["sharing"], 10, "referrer sharing")
    assert referrer.find_element(By.ID, "share-screen").text == "Stop sharing"
    first = wait_until(
        lambda: screen_live(specialist, "referrer"),
        30,
        "the referrer's screen on the specialist page",
    )
    # A size is known (the fake screen is 800 wide; the encoder may crop or scale it).
    assert first["width"] > 0 and first["height"] > 0, first
    wait_until(lambda: visible(specialist, "#remote-screen"), 5, "#remote-screen shown")
    caption = specialist.find_element(By.CSS_SELECTOR, ".tile-screen figcaption").text
    assert "Shared screen — imaging" in caption, caption
    # The observer sees it too, in the referrer's screen tile only.
    wait_until(lambda: screen_live(supervisor, "referrer"), 30, "the screen on the supervisor page")
    assert visible(supervisor, "#remote-screen-referrer")
    assert not visible(supervisor, "#remote-screen-specialist")
    # The supervisor's grid holds both cameras and the screen whole in a 1280x720
    # window; the specialist's picture holds the camera and the screen side by side.
    for driver, pictures in (
        (
            supervisor,
            ["#remote-video-referrer", "#remote-video-specialist", "#remote-screen-referrer"],
        ),
        (specialist, ["#remote-video", "#remote-screen", "#local-video"]),
    ):
        set_viewport(driver, 1280, 720)
        driver.execute_script("window.scrollTo(0, 0)")
        got = wait_until(
            lambda d=driver, p=pictures: (
                (g := layout(d, p, ["#leave"]))
                and all(
                    e and e["visible"] == 1 and e["box"]["h"] >= 100 for e in g["elements"].values()
                )
                and g["controls"]["#leave"]["visible"] == 1
                and g
            ),
            5,
            f"every picture and the leave button whole in the window: {pictures}",
        )
        assert not got["controls"]["#leave"]["overlapsPicture"], got
    # Frames keep arriving.
    wait_until(
        lambda: (
            (r := screen_live(specialist, "referrer"))
            and r["framesDecoded"] >= first["framesDecoded"] + 10
        ),
        15,
        "the shared screen's frames advancing",
    )
    # The camera is unaffected and the referrer does not see its own screen as remote.
    # (Its resolution may adapt down while both videos share the link and CPU.)
    assert live_video(state(specialist), "referrer"), "camera video still flowing"
    assert not remote_screen(state(referrer), "specialist")["shown"]

    # Stopping sharing hides the remote screen.
    referrer.find_element(By.ID, "share-screen").click()
    wait_until(lambda: not state(referrer)["screen"]["sharing"], 10, "referrer stopped sharing")
    assert referrer.find_element(By.ID, "share-screen").text == "Share screen"
    wait_until(
        lambda: (
            not remote_screen(state(specialist), "referrer")["shown"]
            and not visible(specialist, "#remote-screen")
        ),
        10,
        "#remote-screen hidden after sharing stopped",
    )
    assert live_video(state(specialist)), "camera video still flowing"
    wait_until(
        lambda: not visible(supervisor, "#remote-screen-referrer"), 10, "hidden for the observer"
    )

    # The browser's own "stop sharing" ends the track ('ended'): sharing stops too. The
    # test wraps getDisplayMedia to reach the track and fires 'ended' as Chromium does.
    referrer.execute_script(
        "const md = navigator.mediaDevices, orig = md.getDisplayMedia.bind(md);"
        "md.getDisplayMedia = async (c) => (window.__shared = await orig(c));"
    )
    referrer.find_element(By.ID, "share-screen").click()
    wait_until(lambda: screen_live(specialist, "referrer"), 30, "the screen shared again")
    referrer.execute_script(
        "window.__shared.getVideoTracks()[0].dispatchEvent(new Event('ended'));"
    )
    wait_until(lambda: not state(referrer)["screen"]["sharing"], 10, "sharing stopped by 'ended'")
    assert referrer.find_element(By.ID, "share-screen").text == "Share screen"
    wait_until(lambda: not visible(specialist, "#remote-screen"), 10, "#remote-screen hidden again")
