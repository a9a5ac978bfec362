"""A real `jisr serve` process and real headless Chromium browsers with a fake
camera and microphone (facts in ../shared/E2E-BROWSER.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from recordings.crypto import generate_key_file
from tests.conftest import SECRET, Tokens, make_settings
from tests.redis_server import free_port

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-quic",
    "--window-size=1280,900",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]


@dataclass
class Server:
    base: str
    tokens: Tokens
    log_path: str
    recordings_dir: str


@pytest.fixture
def jisr_server_env() -> dict[str, str]:
    """Extra JISR_* settings for the server; a test overrides it with
    ``@pytest.mark.parametrize("jisr_server_env", [{...}])``."""
    return {}


@pytest.fixture
def jisr_server_args() -> list[str]:
    """Extra ``jisr serve`` arguments (``--workers 1``: one node even with Redis)."""
    return []


@pytest.fixture
def jisr_server(tmp_path, jisr_server_env, jisr_server_args) -> Iterator[Server]:
    port = free_port()
    key = tmp_path / "recording.key"
    generate_key_file(key)
    env = {
        **os.environ,
        "JISR_RECORDING_KEY": str(key),
        "JISR_RECORDINGS_DIR": str(tmp_path / "recordings"),
        "JISR_ATTACHMENTS_DIR": str(tmp_path / "attachments"),
        "JISR_RECORDING_SEGMENT_S": "2",
        "JISR_PORT": str(port),
        "JISR_JWT_SECRET": SECRET,
        "JISR_ICE_ADDRESSES": "127.0.0.1",
        "JISR_NODE_ID": "n_e2e",
    }
    env.pop("JISR_REDIS_URL", None)
    env.update(jisr_server_env)
    log_path = os.environ.get("JISR_E2E_SERVER_LOG") or str(tmp_path / "server.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "signaling.cli", "serve", *jisr_server_args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("jisr serve did not start:\n" + open(log_path).read()[-2000:])
        time.sleep(0.05)
    try:
        yield Server(base, Tokens(make_settings()), log_path, str(tmp_path / "recordings"))
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def browsers() -> Iterator:
    """Call ``browsers()`` for each new headless Chromium; all quit at the end."""
    for tool in ("chromium", "chromedriver"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (apt-get install chromium chromium-driver)")
    started: list[webdriver.Chrome] = []
    folders: list[tempfile.TemporaryDirectory] = []

    def start(*extra_flags: str) -> webdriver.Chrome:
        folder = tempfile.TemporaryDirectory(prefix="jisr-chromium-")
        folders.append(folder)
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        for flag in (*CHROMIUM_FLAGS, *extra_flags, f"--user-data-dir={folder.name}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(
            options=options, service=Service(executable_path=shutil.which("chromedriver"))
        )
        driver.set_script_timeout(30)
        started.append(driver)
        return driver

    yield start
    for driver in started:
        try:
            driver.quit()
        except Exception:  # noqa: BLE001 - a crashed browser must not hide the test's result
            pass
    for folder in folders:
        folder.cleanup()
