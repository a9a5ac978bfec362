"""Two hospitals' people sign in at their own organisations' identity providers
(real oidc-provider processes, their real login forms) and a consult flows between
them in real browsers: a referrer of organisation A asks, a specialist of
organisation B accepts, both see each other's video, the report closes it. Each
side's supervisor sees the consult; a third organisation's supervisor does not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.conftest import SECRET
from tests.e2e.test_consult_flow import live_video, state, wait_until
from tests.redis_server import free_port
from tests.support.openid import OpenIdProvider

pytestmark = pytest.mark.e2e

PEOPLE = {
    "org-a": {
        "amal": {"password": "a-pass", "claims": {"name": "Dr Amal Haddad",
                                                  "jisr_role": "referrer", "facility": "ward-7"}},
        "sara": {"password": "s-pass", "claims": {"name": "Sara A", "jisr_role": "supervisor"}},
    },
    "org-b": {
        "karim": {"password": "k-pass", "claims": {"name": "Dr Karim Nasser",
                                                   "jisr_role": "specialist",
                                                   "specialties": ["cardiology"]}},
        "leila": {"password": "l-pass", "claims": {"name": "Leila B", "jisr_role": "supervisor"}},
    },
    "org-c": {
        "omar": {"password": "o-pass", "claims": {"name": "Omar C", "jisr_role": "supervisor"}},
    },
}  # fmt: skip


@pytest.fixture
def federation(tmp_path):
    """Three providers and a Jisr node trusting them (A's consults go to B)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    providers = {
        org: OpenIdProvider(
            tmp_path, org, users, [f"{base}/auth/callback"], [f"{base}/signin.html"]
        )  # fmt: skip
        for org, users in PEOPLE.items()
    }
    for provider in providers.values():
        provider.start()
    entries = [providers["org-a"].issuer_entry(consults_to=["org-a", "org-b"]),
               providers["org-b"].issuer_entry(), providers["org-c"].issuer_entry()]  # fmt: skip
    (tmp_path / "issuers.json").write_text(json.dumps({"issuer": entries}))
    key = tmp_path / "recording.key"
    from recordings.crypto import generate_key_file

    generate_key_file(key)
    env = {**os.environ, "JISR_PORT": str(port), "JISR_JWT_SECRET": SECRET,
           "JISR_ICE_ADDRESSES": "127.0.0.1", "JISR_ISSUERS_FILE": str(tmp_path / "issuers.json"),
           "JISR_RECORDING_KEY": str(key), "JISR_ATTACHMENTS_DIR": str(tmp_path / "files"),
           "JISR_RECORDINGS_DIR": str(tmp_path / "recordings")}  # fmt: skip
    env.pop("JISR_REDIS_URL", None)
    log = open(tmp_path / "jisr.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "signaling.cli", "serve"], env=env,
                               stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1):
                break
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, "jisr did not start"
            time.sleep(0.05)  # polling the starting server, bounded
    yield base, providers
    process.terminate()
    process.wait(10)
    for provider in providers.values():
        provider.stop()


def sign_in(driver, base: str, page: str, organisation: str, login: str) -> None:
    """From the page's sign-in, through the organisation's own login form, back to
    the page signed in."""
    org = organisation
    driver.get(f"{base}/{page}.html")
    button = wait_until(
        lambda: driver.find_elements(By.CSS_SELECTOR, f"a.signin-org[data-organisation='{org}']"),
        15, f"{organisation}'s sign-in offered",
    )[0]  # fmt: skip
    button.click()
    wait_until(lambda: driver.find_elements(By.ID, "login"), 15, "the provider's login form")
    driver.find_element(By.ID, "login").send_keys(login)
    driver.find_element(By.ID, "password").send_keys(PEOPLE[organisation][login]["password"])
    driver.find_element(By.ID, "sign-in").click()
    wait_until(lambda: driver.current_url.startswith(f"{base}/{page}.html"), 15, "back at Jisr")
    wait_until(lambda: state(driver).get("ready"), 15, f"{page} page signed in")


def sees(driver, consult_id: str) -> bool:
    return any(c["id"] == consult_id for c in state(driver).get("consults", []))


def test_a_consult_between_two_organisations(federation, browsers):
    base, _ = federation
    referrer, specialist = browsers(), browsers()
    sign_in(specialist, base, "specialist", "org-b", "karim")
    sign_in(referrer, base, "referrer", "org-a", "amal")
    assert state(referrer)["user"]["sub"] == "org-a/amal"

    option = "#specialty option[value=cardiology]"
    wait_until(lambda: referrer.find_elements(By.CSS_SELECTOR, option),
               10, "specialties loaded")  # fmt: skip
    Select(referrer.find_element(By.ID, "specialty")).select_by_value("cardiology")
    referrer.find_element(By.ID, "urgency-critical").click()
    referrer.find_element(By.ID, "consult-summary").send_keys("Post-CABG day 1, tamponade?")
    referrer.find_element(By.ID, "patient-ref").send_keys("P-2026-0042")
    referrer.find_element(By.ID, "create-consult").click()

    def waiting_consult():
        return next((c["id"] for c in state(referrer).get("consults", [])
                     if c["state"] == "waiting"), None)  # fmt: skip

    consult_id = wait_until(waiting_consult, 10, "consult created")

    supervisors = {}
    for organisation, login in (("org-a", "sara"), ("org-b", "leila"), ("org-c", "omar")):
        supervisors[organisation] = browsers()
        sign_in(supervisors[organisation], base, "supervisor", organisation, login)
    for organisation in ("org-a", "org-b"):
        wait_until(
            lambda o=organisation: sees(supervisors[o], consult_id), 10, f"{organisation} sees it"
        )

    button = f".accept-button[data-consult-id='{consult_id}']"
    accept = wait_until(
        lambda: specialist.find_elements(By.CSS_SELECTOR, button), 10, "in B's queue"
    )
    accept[0].click()
    pages = {"referrer": referrer, "specialist": specialist}
    wait_until(lambda: all(live_video(state(d)) for d in pages.values()), 30, "video both ways")

    for organisation in ("org-a", "org-b"):
        wait_until(lambda o=organisation: any(c["id"] == consult_id and c["state"] == "live"
                                              for c in state(supervisors[o]).get("consults", [])),
                   10, f"{organisation} sees it live")  # fmt: skip
    assert not sees(supervisors["org-c"], consult_id)  # nobody else's supervisor
    supervisors["org-c"].refresh()
    wait_until(lambda: state(supervisors["org-c"]).get("ready"), 15, "org-c page again")
    assert not sees(supervisors["org-c"], consult_id)

    specialist.find_element(By.ID, "report-findings").send_keys("Small effusion, no tamponade.")
    specialist.find_element(By.ID, "report-assessment").send_keys("Post-pericardiotomy.")
    specialist.find_element(By.ID, "report-recommendation").send_keys("NSAIDs; echo in 24 h.")
    Select(specialist.find_element(By.ID, "report-follow-up")).select_by_value("urgent")
    specialist.find_element(By.ID, "report-submit").click()
    wait_until(lambda: (r := state(referrer)["report"]) and r["consultId"] == consult_id
               and r["shown"], 15, "the report on the referrer's page")  # fmt: skip


def test_a_provider_that_is_down_gets_a_clear_page(federation, browsers):
    base, providers = federation
    providers["org-c"].stop()
    page = browsers()
    page.get(f"{base}/supervisor.html")
    button = wait_until(
        lambda: page.find_elements(By.CSS_SELECTOR, "a.signin-org[data-organisation='org-c']"),
        15, "org-c's sign-in offered",
    )[0]  # fmt: skip
    button.click()
    wait_until(lambda: state(page).get("page") == "signin", 15, "the sign-in page")
    assert state(page)["problem"] == "provider_unreachable"
    problem = page.find_element(By.ID, "signin-problem")
    assert (
        problem.is_displayed() and "ORG-C" in problem.text and "cannot be reached" in problem.text
    )
