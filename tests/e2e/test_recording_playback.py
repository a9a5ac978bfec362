"""Recording in real browsers: in a live consult the specialist asks to record, the
referrer consents, both pages (and an observing supervisor) show the recording
indicator, the specialist stops it, and the supervisor page lists the recording and
plays it back from blob: URLs fetched with the bearer header: one tile per participant
and one for the referrer's shared screen (a browser plays only one video and one audio
track of a file), driven by one set of controls and kept in step.

Needs a server with recording configured: the ``jisr_server`` fixture sets
``JISR_RECORDING_KEY`` (a fresh key file) and ``JISR_RECORDINGS_DIR``."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.e2e.test_consult_flow import live_video, open_page, state, wait_until
from tests.e2e.test_screen_share import screen_live

pytestmark = pytest.mark.e2e

RECORD_FOR_S = 4.0
SCREEN_FOR_S = 2.5  # the recording goes on at least this long once the screen is shared
LAYER_SIZES = {(320, 180), (640, 360), (1280, 720)}  # the pages' simulcast layers
PARTICIPANTS = ["referrer", "specialist"]
SCREEN = "referrer-screen"  # the referrer shares its screen during the recording
LABELS = {
    "referrer": "Referring team",
    "specialist": "Specialist",
    SCREEN: "Referring team — screen",
}


def shown(driver, selector: str):
    """The element if it is on the page and visible, else None."""
    for element in driver.find_elements(By.CSS_SELECTOR, selector):
        if element.is_displayed():
            return element
    return None


def click_when_ready(driver, selector: str, what: str, timeout: float = 10) -> None:
    element = wait_until(
        lambda: (e := shown(driver, selector)) and e.is_enabled() and e, timeout, what
    )
    element.click()


def api_get(server, path: str, token: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        server.base + path, headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def recording_of(driver) -> dict:
    return state(driver).get("recording") or {}


def tiles_of(driver) -> dict[str, dict]:
    """Tiles by rendition: a participant's slot, or ``<slot>-screen``."""
    return {
        t["participant"] + ("-screen" if t["kind"] == "screen" else ""): t
        for t in state(driver)["player"]["tiles"]
    }


def tiles_apart(tiles: dict[str, dict]) -> float:
    """How far apart the playing tiles' positions are, in seconds."""
    times = [t["currentTime"] or 0.0 for t in tiles.values() if not t["paused"]]
    return max(times) - min(times) if times else 0.0


def create_and_accept(referrer, specialist) -> str:
    """The referrer sends a consult, the specialist accepts it; returns the consult id."""
    wait_until(
        lambda: referrer.find_elements(By.CSS_SELECTOR, "#specialty option[value=cardiology]"),
        10,
        "specialties loaded",
    )
    Select(referrer.find_element(By.ID, "specialty")).select_by_value("cardiology")
    referrer.find_element(By.ID, "urgency-urgent").click()
    referrer.find_element(By.ID, "consult-summary").send_keys(
        "Post-op day 2, new AF with rate 150; please review rhythm and anticoagulation."
    )
    referrer.find_element(By.ID, "patient-ref").send_keys("P-2026-0107")
    referrer.find_element(By.ID, "create-consult").click()
    consult_id = wait_until(
        lambda: next(
            (c["id"] for c in state(referrer).get("consults", []) if c["state"] == "waiting"), None
        ),
        10,
        "consult created",
    )
    click_when_ready(
        specialist,
        f".accept-button[data-consult-id='{consult_id}']",
        "consult in the specialist's queue",
    )
    return consult_id


def test_consented_recording_plays_back_for_the_supervisor(jisr_server, browsers, record_property):
    server = jisr_server
    tokens = server.tokens
    status, body = api_get(server, "/api/recordings", tokens.supervisor)
    assert status == 200, (
        "recording is not configured on the test server (the jisr_server fixture must set "
        f"JISR_RECORDING_KEY and JISR_RECORDINGS_DIR): {status} {body}"
    )

    referrer, specialist, supervisor = browsers(), browsers(), browsers()
    open_page(specialist, server, "specialist", tokens.specialist)
    open_page(supervisor, server, "supervisor", tokens.supervisor)
    open_page(referrer, server, "referrer", tokens.referrer)

    create_and_accept(referrer, specialist)
    pages = {"referrer": referrer, "specialist": specialist}
    wait_until(
        lambda: all(live_video(state(d)) for d in pages.values()),
        30,
        "remote video on both participant pages",
    )
    for driver in pages.values():
        assert recording_of(driver)["state"] == "idle"
        assert shown(driver, "#recording-indicator") is None

    # The specialist asks to record: asking is the specialist's consent, nothing more.
    click_when_ready(specialist, "#record-request", "the Record button")
    wait_until(
        lambda: recording_of(referrer).get("prompt"), 10, "the consent prompt on the referrer page"
    )
    prompt = shown(referrer, "#recording-consent")
    assert prompt is not None and "encrypted" in prompt.text.lower()
    asked = recording_of(specialist)
    assert asked["state"] == "requested" and not asked["indicator"], asked
    assert shown(specialist, "#recording-consent") is None  # the asker is not asked again
    assert {c["sub"]: c["consent"] for c in asked["consents"]} == {
        "dr-karim": True,
        "dr-amal": None,
    }
    assert shown(referrer, "#recording-indicator") is None  # nothing is recorded yet

    # The referrer consents: recording starts, and every page in the session says so.
    click_when_ready(referrer, "#recording-consent-yes", "the consent button")
    started = time.monotonic()
    for name, driver in pages.items():
        rec = wait_until(
            lambda d=driver: (
                (r := recording_of(d)).get("indicator") and r["state"] == "recording" and r
            ),
            10,
            f"the recording indicator on the {name} page",
        )
        assert all(c["consent"] is True for c in rec["consents"]), rec
        indicator = shown(driver, "#recording-indicator")
        assert indicator is not None and indicator.get_attribute("data-state") == "recording"
        assert "Recording" in indicator.text
        assert shown(driver, "#record-stop") and shown(driver, "#recording-withdraw")
        assert shown(driver, "#recording-consent") is None
        assert shown(driver, "#record-request") is None
    recording_id = recording_of(specialist)["recordingId"]
    assert recording_id and recording_id == recording_of(referrer)["recordingId"]

    # An observer sees the indicator too, and no recording controls.
    click_when_ready(supervisor, ".observe-button[data-session-id]", "the live session to observe")
    wait_until(
        lambda: (r := recording_of(supervisor)).get("indicator") and r["state"] == "recording",
        10,
        "the recording indicator on the observer's page",
    )
    for control in ("#record-request", "#record-stop", "#recording-withdraw", "#recording-consent"):
        assert shown(supervisor, control) is None, control
    click_when_ready(supervisor, "#leave", "the observer's Leave button")
    wait_until(lambda: not state(supervisor)["inSession"], 10, "the observer back on the lists")

    # The referrer shares its screen a while into the recording. Not sooner: the camera's
    # resolution adapts down while both videos share the link, and the recording's first
    # camera frames are checked at full size below.
    click_when_ready(referrer, "#share-screen", "the Share screen button")
    wait_until(lambda: screen_live(specialist, "referrer"), 30, "the shared screen forwarded")
    shared = time.monotonic()

    # The specialist stops after a few seconds.
    now = time.monotonic()
    time.sleep(max(0.0, RECORD_FOR_S - (now - started), SCREEN_FOR_S - (now - shared)))
    click_when_ready(specialist, "#record-stop", "the Stop recording button")
    for name, driver in pages.items():
        wait_until(
            lambda d=driver: (r := recording_of(d))["state"] == "stopped" and not r["indicator"],
            10,
            f"the recording stopped on the {name} page",
        )
        assert shown(driver, "#recording-indicator") is None
    assert state(referrer)["lastError"] is None and state(specialist)["lastError"] is None

    # The supervisor's list has it (refreshed with the button), complete and playable.
    def listed():
        s = state(supervisor)
        item = next((r for r in s.get("recordingList", []) if r["id"] == recording_id), None)
        if item and item["state"] != "recording":
            return item
        click_when_ready(supervisor, "#refresh-recordings", "the Refresh recordings button")
        time.sleep(0.5)
        return None

    item = wait_until(listed, 20, "the recording in the supervisor's list")
    assert item["state"] == "complete", item
    assert item["duration_s"] >= RECORD_FOR_S - 1.5, item
    assert supervisor.find_element(
        By.CSS_SELECTOR, f"li.recording-item[data-recording-id='{recording_id}']"
    ).is_displayed()

    click_when_ready(
        supervisor, f".play-recording[data-recording-id='{recording_id}']", "the Play button"
    )
    player = wait_until(
        lambda: (p := state(supervisor)["player"])["src"] and p["readyState"] >= 2 and p,
        20,
        "the recording loaded in #recording-player",
    )
    assert player["error"] is None, player
    assert player["recordingId"] == recording_id
    # The pages send 1280x720 in three simulcast layers; the recorder takes the largest
    # that flows, which at the start of a call may still be a smaller one (the
    # publisher's encoder adds its larger layers as its bandwidth estimate grows).
    assert (player["videoWidth"], player["videoHeight"]) in LAYER_SIZES, player
    src = supervisor.find_element(By.ID, "recording-player").get_attribute("src")
    assert src.startswith("blob:"), src

    # One tile per participant, each playing its own video and audio, and one for the
    # shared screen (a muted follower); one set of controls, on a participant's tile.
    tiles = wait_until(
        lambda: (
            (t := tiles_of(supervisor))
            and sorted(t) == sorted([*PARTICIPANTS, SCREEN])
            and all(x["readyState"] >= 2 and x["videoWidth"] > 0 for x in t.values())
            and not any(t[p]["paused"] for p in PARTICIPANTS)
            and t
        ),
        10,
        "both participants' tiles playing and the screen's loaded",
    )
    assert all(t["src"] for t in tiles.values()), tiles
    assert {p: t["kind"] for p, t in tiles.items()} == {
        "referrer": "participant",
        "specialist": "participant",
        SCREEN: "screen",
    }
    assert not any(tiles[p]["muted"] for p in PARTICIPANTS) and tiles[SCREEN]["muted"], tiles
    assert {p: t["label"] for p, t in tiles.items()} == LABELS
    assert [p for p, t in tiles.items() if t["leader"]] in (["referrer"], ["specialist"]), tiles
    cameras = {p: (tiles[p]["videoWidth"], tiles[p]["videoHeight"]) for p in PARTICIPANTS}
    assert all(size in LAYER_SIZES for size in cameras.values()), tiles
    assert len(supervisor.find_elements(By.CSS_SELECTOR, "#recording-tiles video")) == 3
    assert len(supervisor.find_elements(By.CSS_SELECTOR, "#recording-tiles video[controls]")) == 1
    fit = supervisor.execute_script(
        "return getComputedStyle(document.querySelector("
        "'#recording-tiles [data-kind=screen] video')).objectFit;"
    )
    assert fit == "contain", fit
    screen_start = tiles[SCREEN]["start"]
    # Shared during the recording: it begins where it began on the recording's timeline.
    assert 0 < screen_start < tiles[SCREEN]["duration"] - 1.5, tiles[SCREEN]
    first = {p: t["currentTime"] or 0.0 for p, t in tiles.items()}
    widest, advanced = 0.0, set()

    def all_advanced():
        """Every tile seen playing a second past where it was, or past where its media
        begins if that is later (the screen's)."""
        nonlocal widest
        now = tiles_of(supervisor)
        widest = max(widest, tiles_apart(now))
        advanced.update(
            p
            for p, t in now.items()
            if not t["paused"] and (t["currentTime"] or 0.0) > max(first[p], t["start"]) + 1.0
        )
        return advanced == set(now)

    wait_until(all_advanced, 10, "playback advancing on every tile")
    assert widest <= 0.5, f"the tiles drifted {widest:.2f} s apart"

    # The controls drive them all: a pause stops every tile, a seek moves every tile (the
    # screen to where it begins, if that is later).
    supervisor.execute_script("document.getElementById('recording-player').pause();")
    wait_until(
        lambda: all(t["paused"] for t in tiles_of(supervisor).values()), 10, "every tile paused"
    )
    supervisor.execute_script("document.getElementById('recording-player').currentTime = 0.5;")
    wait_until(
        lambda: all(
            abs((t["currentTime"] or 0.0) - max(0.5, t["start"])) <= 0.3
            for t in tiles_of(supervisor).values()
        ),
        10,
        "every tile moved back to 0.5 s by the seek",
    )

    # The token never went into a URL: not the page's, not the media requests'.
    requested = supervisor.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => n.includes('/api/recordings/'));"
    )
    for participant in [*PARTICIPANTS, SCREEN]:
        wanted = f"/api/recordings/{recording_id}/media?participant={participant}"
        assert any(n.endswith(wanted) for n in requested), requested
    assert not any("token" in n for n in [*requested, supervisor.current_url]), requested
    assert state(supervisor)["lastError"] is None

    # Closing the player releases the media: no blob: URL stays usable.
    urls = supervisor.execute_script(
        "return [...document.querySelectorAll('#recording-tiles video')].map(v => v.src);"
    )
    click_when_ready(supervisor, "#recording-player-close", "the Close player button")
    wait_until(lambda: not state(supervisor)["player"]["tiles"], 5, "the player closed")
    for url in urls:
        reachable = supervisor.execute_async_script(
            "const done = arguments[1];"
            "fetch(arguments[0]).then(() => done(true), () => done(false));",
            url,
        )
        assert reachable is False, f"{url} was not revoked"

    record_property("recording_duration_s", item["duration_s"])
