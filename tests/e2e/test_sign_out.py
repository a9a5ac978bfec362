"""Signing out in the page revokes the token on the server: the same token, used
anywhere else afterwards, is refused as signed out."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By

from tests.e2e.test_consult_flow import open_page, state, wait_until

pytestmark = pytest.mark.e2e


def me(server, token: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        server.base + "/api/me", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def sign_in_shown(page) -> bool:
    try:
        return (
            page.find_element(By.ID, "signin").is_displayed()
            and not page.find_element(By.ID, "sign-out").is_displayed()
        )
    except WebDriverException:  # the page is between documents
        return False


def test_signing_out_revokes_the_token(jisr_server, browsers):
    server, token = jisr_server, jisr_server.tokens.supervisor
    page = browsers()
    open_page(page, server, "supervisor", token)
    assert me(server, token)[0] == 200  # the token works elsewhere while signed in
    page.find_element(By.ID, "sign-out").click()
    # The page reloads on signing out; a script started just before the reload never
    # answers, so the page is read with plain element look-ups that survive it.
    wait_until(lambda: sign_in_shown(page), 10, "the page back at its sign-in form")
    status, body = me(server, token)
    assert status == 401 and body["error"]["code"] == "token_revoked"
    assert not state(page).get("ready")
