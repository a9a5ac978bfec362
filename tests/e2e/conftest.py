"""A real `jisr serve` process and real headless Chromium browsers with a fake
camera and microphone (facts in ../shared/E2E-BROWSER.md)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from recordings.crypto import generate_key_file
from tests.conftest import SECRET, Tokens, make_settings
from tests.redis_server import free_port
from tests.support.certs import ServerCertificate, server_certificate
from tests.support.netns import enter_and_die_with_parent, missing_tools, which
from tests.support.sites import SERVER_ADDRESS, Sites

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
    env = {"JISR_PORT": str(port), "JISR_ICE_ADDRESSES": "127.0.0.1", **jisr_server_env}
    with run_jisr(tmp_path, env, jisr_server_args, base=f"http://127.0.0.1:{port}") as server:
        yield server


@contextlib.contextmanager
def run_jisr(tmp_path, extra_env: dict[str, str], args: list[str], *, base: str,
             probe: str | None = None, ssl_context: ssl.SSLContext | None = None,
             preexec_fn=None) -> Iterator[Server]:  # fmt: skip
    """``jisr serve`` with the tests' settings plus ``extra_env``, reached by pages at
    ``base``; ready once ``probe`` (default ``base``) answers /healthz."""
    key = tmp_path / "recording.key"
    generate_key_file(key)
    env = {
        **os.environ,
        "JISR_RECORDING_KEY": str(key),
        "JISR_RECORDINGS_DIR": str(tmp_path / "recordings"),
        "JISR_ATTACHMENTS_DIR": str(tmp_path / "attachments"),
        "JISR_RECORDING_SEGMENT_S": "2",
        "JISR_JWT_SECRET": SECRET,
        "JISR_NODE_ID": "n_e2e",
        "JISR_DATA_DIR": str(tmp_path / "data"),  # the record store and its outbox
    }
    env.pop("JISR_REDIS_URL", None)
    env.update(extra_env)
    log_path = os.environ.get("JISR_E2E_SERVER_LOG") or str(tmp_path / "server.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "signaling.cli", "serve", *args],
            env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec_fn,
        )  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(
                (probe or base) + "/healthz", timeout=1, context=ssl_context
            ) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"jisr serve did not answer {probe or base}/healthz:\n"
                        + open(log_path).read()[-2000:])  # fmt: skip
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


# -- two sites: a browser site reaching the server site over a veth ----------------------
# (tests/support/sites.py; the server site's address is SERVER_ADDRESS, 10.88.0.1)

# The host resolver's rules apply to IP literals too: without the EXCLUDE, TCP
# to the server site (pages, TURN over TCP or TLS) fails with ERR_NAME_NOT_RESOLVED.
SITE_CHROMIUM_FLAGS = [
    f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE {SERVER_ADDRESS}"
    if flag.startswith("--host-resolver-rules=") else flag
    for flag in CHROMIUM_FLAGS
]  # fmt: skip
CHROMEDRIVER_PORT = 9515  # inside the browser site, a namespace of its own
SITE_JISR_PORT = 8080  # inside the server site


@pytest.fixture
def sites(tmp_path) -> Iterator[Sites]:
    missing = missing_tools(("ip", "nft", "nsenter", "unshare"))
    if missing:
        pytest.fail("the two-site tests need these tools, which are missing: "
                    + ", ".join(missing) + " (apt-get install -y --no-install-recommends "
                    "iproute2 nftables util-linux)")  # fmt: skip
    with Sites(log_path=tmp_path / "sites.log") as both:
        yield both


@pytest.fixture
def site_cert(tmp_path) -> ServerCertificate:
    """A certificate for the server site's address, from a throwaway authority."""
    return server_certificate(tmp_path / "tls", [SERVER_ADDRESS])


@pytest.fixture
def site_server(tmp_path, sites, site_cert, jisr_server_env, jisr_server_args) -> Iterator[Server]:
    """``jisr serve`` in the server site, on SERVER_ADDRESS (ICE host candidates too);
    HTTPS when ``jisr_server_env`` gives JISR_TLS_CERT_FILE (``site_cert``'s)."""
    env = {"JISR_HOST": SERVER_ADDRESS, "JISR_PORT": str(SITE_JISR_PORT),
           "JISR_ICE_ADDRESSES": SERVER_ADDRESS, **jisr_server_env}  # fmt: skip
    scheme, context = "http", None
    if env.get("JISR_TLS_CERT_FILE"):
        scheme = "https"
        context = ssl.create_default_context(cafile=str(site_cert.ca_file))
        context.check_hostname = False  # probed through 127.0.0.1; the pages check the name
    port = int(env["JISR_PORT"])
    probe = f"{scheme}://127.0.0.1:{sites.forward('server', port, SERVER_ADDRESS)}"
    base = f"{scheme}://{SERVER_ADDRESS}:{port}"
    enter = enter_and_die_with_parent(sites.paths["server"])
    with run_jisr(tmp_path, env, jisr_server_args, base=base, probe=probe,
                  ssl_context=context, preexec_fn=enter) as server:  # fmt: skip
        yield server


@pytest.fixture
def site_browsers(sites, site_cert, tmp_path) -> Iterator:
    """Call ``site_browsers(*flags)`` for each new headless Chromium in the browser
    site; one chromedriver there (in a PID namespace of its own, so that Chromium
    goes with it), driven through a relay from 127.0.0.1 here. The browsers trust
    ``site_cert``'s authority as a user-added root (an NSS database in their HOME),
    and check names as they would for any other root."""
    for tool, package in (("chromium", "chromium"), ("chromedriver", "chromium-driver"),
                          ("certutil", "libnss3-tools")):  # fmt: skip
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (apt-get install {package})")
    started: list[webdriver.Remote] = []
    folders: list[tempfile.TemporaryDirectory] = []
    home = _home_trusting(tmp_path / "browser-home", site_cert.ca_file)
    with open(tmp_path / "chromedriver.log", "wb") as log:
        driver_process = sites.popen(
            "site",
            [which("unshare"), "--pid", "--fork", "--kill-child",
             shutil.which("chromedriver"), f"--port={CHROMEDRIVER_PORT}"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(home)},
        )  # fmt: skip
    executor = f"http://127.0.0.1:{sites.forward('site', CHROMEDRIVER_PORT)}"
    _wait_for_chromedriver(executor, driver_process, tmp_path / "chromedriver.log")

    def start(*extra_flags: str) -> webdriver.Remote:
        folder = tempfile.TemporaryDirectory(prefix="jisr-chromium-")
        folders.append(folder)
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        for flag in (*SITE_CHROMIUM_FLAGS, *extra_flags, f"--user-data-dir={folder.name}"):
            options.add_argument(flag)
        driver = webdriver.Remote(command_executor=executor, options=options)
        driver.set_script_timeout(30)
        started.append(driver)
        return driver

    try:
        yield start
    finally:
        for driver in started:
            try:
                driver.quit()
            except Exception:  # noqa: BLE001 - a crashed browser must not hide the test's result
                pass
        driver_process.kill()  # unshare ignores SIGTERM; its PID namespace dies with it
        driver_process.wait(10)
        for folder in folders:
            folder.cleanup()


def _wait_for_chromedriver(executor: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(executor + "/status", timeout=1) as response:
                if json.load(response).get("value", {}).get("ready"):
                    return
        except (OSError, ValueError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("chromedriver did not start in the browser site:\n"
                        + open(log_path, errors="replace").read()[-2000:])  # fmt: skip
        time.sleep(0.05)


def _home_trusting(home: Path, ca_file: Path) -> Path:
    """A HOME whose NSS database (~/.pki/nssdb, where Chromium on Linux looks for
    user-added roots) trusts ``ca_file`` for servers."""
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    add = ["-A", "-t", "C,,", "-n", "jisr-test-ca", "-i", str(ca_file)]
    for argv in (["-N", "--empty-password"], add):
        subprocess.run(["certutil", "-d", f"sql:{nssdb}", *argv], check=True, capture_output=True)
    return home
