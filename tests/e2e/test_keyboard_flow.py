"""The whole consult by keyboard alone, in real browsers: the referrer fills in and
sends a critical consult, the specialist accepts it, the supervisor observes and
leaves, the specialist opens the call's quality figures, ends the consultation and
writes the report after the end, and the referrer reads it and goes back to the
list — Tab, Shift+Tab, Enter, Space and typing only, every focused control showing
its focus and in view (tests/e2e/screen.py's tab_to)."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.keys import Keys

from tests.e2e.screen import focused, press, set_viewport, tab_to
from tests.e2e.test_consult_flow import live_video, open_page, state, wait_until

pytestmark = pytest.mark.e2e


def value(driver, selector: str) -> str:
    return driver.execute_script("return document.querySelector(arguments[0]).value", selector)


def test_the_whole_consult_by_keyboard(jisr_server, browsers):
    server, tokens = jisr_server, jisr_server.tokens
    referrer, specialist, supervisor = browsers(), browsers(), browsers()
    for name, driver in (("specialist", specialist), ("supervisor", supervisor),
                         ("referrer", referrer)):  # fmt: skip
        set_viewport(driver, 1280, 720)
        open_page(driver, server, name, getattr(tokens, name))
        wait_until(lambda d=driver: state(d)["signaling"] == "ready", 15, f"{name} signaling")

    # Referrer: the skip link, then the form, field by field.
    tab_to(referrer, ".skip-link")
    press(referrer, Keys.ENTER)
    tab_to(referrer, "#specialty")
    wait_until(
        lambda: referrer.find_elements("css selector", "#specialty option[value=cardiology]"),
        10,
        "specialties loaded",
    )
    press(referrer, "Cardio")
    assert value(referrer, "#specialty") == "cardiology"
    tab_to(referrer, "#urgency-critical")
    press(referrer, Keys.SPACE)
    assert referrer.execute_script("return document.getElementById('urgency-critical').checked")
    tab_to(referrer, "#consult-summary")
    press(referrer, "Post-CABG day 1, falling pressure, suspected tamponade.")
    tab_to(referrer, "#patient-ref")
    press(referrer, "P-KEY-1")
    tab_to(referrer, "#create-consult")
    press(referrer, Keys.ENTER)
    consult_id = wait_until(
        lambda: next(
            (c["id"] for c in state(referrer).get("consults", []) if c["state"] == "waiting"), None
        ),
        10,
        "the consult sent",
    )

    # Specialist: accept it.
    wait_until(
        lambda: specialist.find_elements(
            "css selector", f".accept-button[data-consult-id='{consult_id}']"
        ),
        10,
        "the consult in the queue",
    )
    tab_to(specialist, f".accept-button[data-consult-id='{consult_id}']")
    press(specialist, Keys.ENTER)
    pages = {"referrer": referrer, "specialist": specialist}
    wait_until(lambda: all(live_video(state(d)) for d in pages.values()), 30, "video both ways")

    # Supervisor: observe, then leave.
    wait_until(
        lambda: supervisor.find_elements("css selector", ".observe-button[data-session-id]"),
        10,
        "the session on the supervisor page",
    )
    tab_to(supervisor, ".observe-button[data-session-id]")
    press(supervisor, Keys.ENTER)
    wait_until(
        lambda: (
            (s := state(supervisor)) and live_video(s, "referrer") and live_video(s, "specialist")
        ),
        30,
        "both participants observed",
    )
    tab_to(supervisor, "#leave")
    press(supervisor, Keys.ENTER)
    wait_until(lambda: not state(supervisor)["inSession"], 10, "the supervisor back at the list")

    # Specialist: the quality figures, then End consultation (and confirm).
    wait_until(lambda: state(specialist)["quality"]["level"], 15, "the quality measured")
    tab_to(specialist, "#connection-quality")
    press(specialist, Keys.ENTER)
    wait_until(lambda: state(specialist)["quality"].get("detailOpen"), 5, "the figures open")
    assert specialist.find_element("id", "connection-quality-detail").is_displayed()
    tab_to(specialist, "#end-session")
    press(specialist, Keys.ENTER)
    assert focused(specialist)["id"] == "end-session-confirm"  # the confirmation takes focus
    press(specialist, Keys.ENTER)
    for name, driver in pages.items():
        wait_until(lambda d=driver: state(d)["ended"], 10, f"the end on the {name} page")
    wait_until(lambda: state(referrer)["endedReport"] == "may_follow", 5, "a report may follow")

    # The report, after the end.
    for field, words in (("findings", "Effusion, RV collapse."), ("assessment", "Tamponade."),
                         ("recommendation", "Re-explore now.")):  # fmt: skip
        tab_to(specialist, f"#report-{field}")
        press(specialist, words)
    tab_to(specialist, "#report-follow-up")
    press(specialist, "Crit")
    assert value(specialist, "#report-follow-up") == "critical"
    tab_to(specialist, "#report-submit")
    press(specialist, Keys.ENTER)
    wait_until(lambda: state(specialist)["reportForm"]["state"] == "sent", 10, "the report sent")

    # Referrer: the report arrives in the ended view; back to the list.
    wait_until(lambda: state(referrer)["endedReport"] == "arrived", 10, "the report arrived")
    assert "Tamponade." in referrer.find_element("id", "session-report").text
    tab_to(referrer, "#session-back")
    press(referrer, Keys.ENTER)
    wait_until(lambda: not state(referrer)["inSession"], 10, "the referrer back at the list")
    tab_to(specialist, "#session-back", backwards=True)
    press(specialist, Keys.ENTER)
    wait_until(lambda: not state(specialist)["inSession"], 10, "the specialist back at the list")
    for name, driver in (*pages.items(), ("supervisor", supervisor)):
        assert state(driver)["lastError"] is None, (name, state(driver)["lastError"])
