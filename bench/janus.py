"""Janus (C, Meetecho) as a third middle in the forwarding benchmark: its VideoRoom
plugin forwards the same clip between the same aiortc publisher and subscriber
processes, and its CPU is measured the same way.

Janus is Debian's package (``apt-get install janus``; ``ensure_installed`` does it
in the benchmark's own set-up, never in a test). It gathers no ICE candidate on a
loopback interface, so the benchmark runs inside a network namespace of its own
(``isolation.enter_namespace``) where a veth interface carries ``ADDRESS``; every
packet stays inside that namespace.

The orchestrator starts Janus and creates one room per forwarded stream over its
HTTP API (``start_janus``, ``create_rooms``); the load generators publish and
subscribe through the same API (``publish``, ``subscribe``, ``start_subscription``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from .isolation import INTERFACE, SERVER_ADDRESS

ADDRESS = SERVER_ADDRESS  # Janus's (and its clients') address inside the namespace
LIBRARIES = Path("/usr/lib/x86_64-linux-gnu/janus")
ROOM_BASE = 5000  # room ids: ROOM_BASE + stream number; publisher ids likewise
PUBLISHER_BASE = 9000
EVENT_TIMEOUT_S = 20


# -- set-up (orchestrator) -------------------------------------------------------------


def ensure_installed() -> str | None:
    """Install Debian's janus when missing (as root, or through sudo); None when it
    is there, else why it cannot be."""
    if shutil.which("janus"):
        return None
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if sudo and not shutil.which("sudo"):
        return "janus is not installed and this user cannot install packages"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "janus"]):
        done = subprocess.run([*sudo, *step], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            return f"apt-get could not install janus: {done.stderr.strip()[-300:]}"
    return None if shutil.which("janus") else "janus is still missing after apt-get"


def _config(folder: Path, port: int) -> None:
    disabled_plugins = sorted(
        p.name for p in (LIBRARIES / "plugins").glob("*.so") if "videoroom" not in p.name
    )
    disabled_transports = sorted(
        p.name for p in (LIBRARIES / "transports").glob("*.so") if "http" not in p.name
    )
    (folder / "janus.jcfg").write_text(
        "general: {\n"
        f'  configs_folder = "{folder}"\n'
        f'  plugins_folder = "{LIBRARIES / "plugins"}"\n'
        f'  transports_folder = "{LIBRARIES / "transports"}"\n'
        f'  events_folder = "{LIBRARIES / "events"}"\n'
        f'  loggers_folder = "{LIBRARIES / "loggers"}"\n'
        "  debug_level = 3\n  session_timeout = 120\n}\n"
        f'plugins: {{ disable = "{",".join(disabled_plugins)}" }}\n'
        f'transports: {{ disable = "{",".join(disabled_transports)}" }}\n'
        "events: { broadcast = false }\n"
        'loggers: { disable = "libjanus_jsonlog.so" }\n'
        'media: { rtp_port_range = "20000-40000" }\n'
        f'nat: {{ ice_enforce_list = "{INTERFACE}" }}\n'
    )
    (folder / "janus.transport.http.jcfg").write_text(
        f'general: {{ base_path = "/janus", http = true, port = {port}, https = false }}\n'
        "admin: { admin_http = false }\n"
    )
    (folder / "janus.plugin.videoroom.jcfg").write_text("general: { }\n")


def start_janus(procs, port: int):
    """Janus with only its VideoRoom plugin and HTTP API; a ``common.Server``."""
    from .common import Server

    folder = Path(tempfile.mkdtemp(prefix="jisr-bench-janus-"))
    _config(folder, port)
    proc = procs.start("janus", ["janus", "-F", str(folder), "-o", "-N", "-L", str(folder / "log")])
    base = f"http://127.0.0.1:{port}/janus"
    deadline = time.monotonic() + 20
    while True:
        try:
            _post(base + "/info", None)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (folder / "log").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"janus did not start:\n{tail}") from None
            time.sleep(0.1)  # polling its HTTP port
    return Server("janus", base, proc)


def _post(url: str, body: dict | None) -> dict:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def create_rooms(base: str, count: int) -> None:
    """Rooms ``ROOM_BASE`` .. ``ROOM_BASE + count - 1``: VP8 and Opus, no bitrate
    cap (the clip is pre-encoded), no periodic keyframe requests."""
    session = _post(base, {"janus": "create", "transaction": "rooms"})["data"]["id"]
    handle = _post(
        f"{base}/{session}",
        {"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": "rooms"},
    )["data"]["id"]
    for n in range(count):
        body = {
            "request": "create", "room": ROOM_BASE + n, "publishers": 2, "bitrate": 0,
            "fir_freq": 0, "videocodec": "vp8", "audiocodec": "opus", "permanent": False,
        }  # fmt: skip
        reply = _post(
            f"{base}/{session}/{handle}",
            {"janus": "message", "body": body, "transaction": f"room{n}"},
        )
        data = reply.get("plugindata", {}).get("data", {})
        if data.get("videoroom") != "created":
            raise RuntimeError(f"janus refused room {ROOM_BASE + n}: {reply}")


# -- signaling (load generators) ---------------------------------------------------------


class JanusHandle:
    """One Janus session with the VideoRoom plugin attached, for one client."""

    def __init__(self, http, base: str) -> None:
        self.http, self.base = http, base
        self.session = self.handle = 0
        self._transactions = 0

    async def _call(self, url: str, body: dict) -> dict:
        self._transactions += 1
        body = {**body, "transaction": f"t{self._transactions}"}
        async with self.http.post(url, json=body) as response:
            reply = await response.json(content_type=None)
        if reply.get("janus") == "error":
            raise RuntimeError(f"janus: {reply['error']}")
        return reply

    async def open(self) -> None:
        self.session = (await self._call(self.base, {"janus": "create"}))["data"]["id"]
        url = f"{self.base}/{self.session}"
        attach = {"janus": "attach", "plugin": "janus.plugin.videoroom"}
        self.handle = (await self._call(url, attach))["data"]["id"]

    async def request(self, body: dict, jsep: dict | None = None) -> dict:
        """Send a VideoRoom request; its asynchronous answer (an event) comes back."""
        message = {"janus": "message", "body": body, **({"jsep": jsep} if jsep else {})}
        await self._call(f"{self.base}/{self.session}/{self.handle}", message)
        return await self.event()

    async def event(self) -> dict:
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        while time.monotonic() < deadline:
            async with self.http.get(f"{self.base}/{self.session}?maxev=1") as response:
                event = await response.json(content_type=None)
            if event.get("janus") == "event":
                data = event.get("plugindata", {}).get("data", {})
                if "error" in data:
                    raise RuntimeError(f"janus: {data['error']}")
                return event
        raise RuntimeError("janus sent no event in time")

    async def keep_alive(self) -> None:
        """Long polls keep the session alive (and take what Janus still says)."""
        while True:
            async with self.http.get(f"{self.base}/{self.session}?maxev=1") as response:
                await response.read()


async def publish(janus: JanusHandle, stream: int, offer: str) -> str:
    """Join room ``stream`` as its publisher and publish ``offer``; Janus's answer."""
    await janus.open()
    room, feed = ROOM_BASE + stream, PUBLISHER_BASE + stream
    await janus.request({"request": "join", "ptype": "publisher", "room": room, "id": feed})
    event = await janus.request(
        {"request": "publish", "audio": True, "video": True}, {"type": "offer", "sdp": offer}
    )
    return event["jsep"]["sdp"]


async def subscribe(janus: JanusHandle, stream: int) -> str:
    """Join room ``stream`` as a subscriber of its publisher; Janus's offer."""
    await janus.open()
    body = {
        "request": "join", "ptype": "subscriber", "room": ROOM_BASE + stream,
        "streams": [{"feed": PUBLISHER_BASE + stream}],
    }  # fmt: skip
    event = await janus.request(body)
    return event["jsep"]["sdp"]


async def start_subscription(janus: JanusHandle, answer: str) -> None:
    await janus.request({"request": "start"}, {"type": "answer", "sdp": answer})
