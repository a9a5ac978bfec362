"""What both benchmarks share: the machine, the processes they start (servers, Redis,
load generators), CPU accounting from /proc, the pre-encoded clip and the Jisr API.

Runs in the orchestrating process only; bench/clients.py runs in the generators.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The source every publisher streams.
WIDTH, HEIGHT, FPS, SECONDS = 640, 480, 30, 20
VIDEO_BITRATE = 1_000_000
AUDIO_BITRATE = 32_000
AUDIO_PACKETS_PER_S = 50  # Opus, 20 ms per packet
CLIP_VERSION = 1  # bump when the clip's content changes


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the machine -----------------------------------------------------------------------


def machine() -> dict:
    model = platform.processor() or "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "aiortc": version("aiortc"),
        "av": version("av"),
        "kernel": platform.release(),
    }


def machine_line(info: dict) -> str:
    return (
        f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, "
        f"aiortc {info['aiortc']}, PyAV {info['av']}, Linux {info['kernel']}"
    )


def table(headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [[str(c) for c in row] + [""] * (len(headers) - len(row)) for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- CPU from /proc --------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(")") + 2 :].split()  # the command name may hold spaces


def process_tree(pid: int) -> list[int]:
    """``pid`` and every descendant (a server with worker processes counts whole)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) of these processes, all threads, in seconds.

    From each thread's /proc/<pid>/task/<tid>/schedstat (nanoseconds): the
    utime + stime of /proc/<pid>/stat come in 10 ms ticks, too coarse for a server
    that spends a fraction of a second in a 10 s window. (A thread that exits within
    the window takes its time with it; the servers measured keep theirs.)
    """
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class CpuWindow:
    """CPU of a few process groups and of the whole machine between start() and stop()."""

    def __init__(self, groups: dict[str, int]) -> None:
        self.groups = groups  # name -> root pid
        self._trees: dict[str, list[int]] = {}

    def start(self) -> None:
        self._trees = {name: process_tree(pid) for name, pid in self.groups.items()}
        self._t0 = time.monotonic()
        self._cpu0 = {name: cpu_seconds(tree) for name, tree in self._trees.items()}
        self._machine0 = machine_busy()

    def stop(self) -> dict:
        """Percent of one core per group, and ``machine``: percent of all cores."""
        elapsed = time.monotonic() - self._t0
        result = {
            name: 100 * (cpu_seconds(tree) - self._cpu0[name]) / elapsed
            for name, tree in self._trees.items()
        }
        busy, total = machine_busy()
        result["machine"] = 100 * (busy - self._machine0[0]) / max(1, total - self._machine0[1])
        result["seconds"] = elapsed
        return result


# -- processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def die_with_parent() -> None:
    """In a child: get SIGTERM when the benchmark dies, even by SIGKILL (Linux)."""
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Processes:
    """Every process a benchmark starts; stop_all() ends them, newest first."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="jisr-bench-"))
        self._procs: list[tuple[str, subprocess.Popen]] = []

    def start(
        self, name: str, argv: list[str], env: dict | None = None, cpus: set[int] | None = None
    ) -> subprocess.Popen:
        """``cpus``: the cores it (and what it starts) may run on; any when None."""

        def preexec() -> None:
            die_with_parent()
            if cpus:
                os.sched_setaffinity(0, cpus)

        with open(self.dir / f"{name}.log", "wb") as logfile:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us, and we stop it in order
                preexec_fn=preexec,
            )
        self._procs.append((name, proc))
        return proc

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, proc: subprocess.Popen, timeout: float = 5.0) -> None:
        tree = process_tree(proc.pid) if proc.poll() is None else []
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in tree[1:]:  # a server's own workers, should it have left any behind
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self._procs = [(n, p) for n, p in self._procs if p is not proc]

    def stop_all(self) -> None:
        for _, proc in reversed(list(self._procs)):
            self.stop(proc)
        shutil.rmtree(self.dir, ignore_errors=True)


def http_json(
    method: str, url: str, body: dict | None = None, token: str | None = None, timeout: float = 10.0
) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{method} {url}: {exc.code} {exc.read()[:300]!r}") from None


def wait_healthy(base: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            http_json("GET", base + "/healthz", timeout=1)
            return
        except (OSError, RuntimeError):
            time.sleep(0.1)  # polling interval
    raise RuntimeError(f"{base}/healthz did not answer in {timeout:.0f} s")


class Server:
    """A server under test: its base URL and root process."""

    def __init__(self, name: str, base: str, proc: subprocess.Popen, secret: str | None = None):
        self.name, self.base, self.proc, self.secret = name, base, proc, secret


def jisr_has_workers() -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "signaling.cli", "serve", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return "--workers" in out


def start_redis(procs: Processes, cpus: set[int] | None = None) -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError("several Jisr workers need redis-server on PATH")
    port = free_port()
    proc = procs.start(
        "redis",
        [
            path,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(procs.dir),
        ],
        cpus=cpus,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)  # polling interval
        if proc.poll() is not None:
            break
    raise RuntimeError("redis-server did not start:\n" + procs.log_tail("redis"))


def start_jisr(
    procs: Processes,
    redis_url: str | None = None,
    host: str = "127.0.0.1",
    cpus: set[int] | None = None,
) -> Server:
    """``host``: where it answers HTTP and gathers its media candidates."""
    port = free_port()
    secret = secrets.token_urlsafe(48)
    env = {"JISR_JWT_SECRET": secret, "JISR_ICE_ADDRESSES": host, "JISR_HOST": host}
    # Media on one shared socket as deployed, on a port the system picks (not 7882, which
    # a server left running elsewhere on the machine may hold).
    env["JISR_MEDIA_UDP_PORT"] = "0"
    if redis_url:  # the workers sign their node-map entries and requests to each other
        env |= {"JISR_REDIS_URL": redis_url, "JISR_CLUSTER_SECRET": secrets.token_urlsafe(48)}
    proc = procs.start(
        "jisr", [sys.executable, "-m", "signaling.cli", "serve", "--port", str(port)], env, cpus
    )
    base = f"http://{host}:{port}"
    try:
        wait_healthy(base, proc)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{procs.log_tail('jisr')}") from None
    return Server("jisr", base, proc, secret)


def start_stock(procs: Processes) -> Server:
    port = free_port()
    proc = procs.start("stock", [sys.executable, "-m", "bench.stock_server", "--port", str(port)])
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{procs.log_tail('stock')}") from None
    return Server("stock", base, proc)


# -- Jisr sessions ---------------------------------------------------------------------


def jisr_session(server: Server, n: int) -> dict:
    """A fresh consult, accepted: the session id and a token for each of its people."""
    from signaling.auth import mint_token
    from signaling.settings import load_settings

    settings = load_settings(jwt_secret=server.secret)
    tokens = {
        "referrer": mint_token(settings, role="referrer", sub=f"ref-{n}", facility="hospital-a"),
        "specialist": mint_token(
            settings, role="specialist", sub=f"spec-{n}", specialties=["cardiology"]
        ),
        "observer": mint_token(settings, role="supervisor", sub=f"sup-{n}"),
    }
    consult = http_json(
        "POST",
        server.base + "/api/consults",
        token=tokens["referrer"],
        body={
            "specialty": "cardiology",
            "urgency": "urgent",
            "summary": "benchmark",
            "patient_ref": f"B-{n}",
        },
    )
    accepted = http_json(
        "POST", f"{server.base}/api/consults/{consult['id']}/accept", token=tokens["specialist"]
    )
    return {"session_id": accepted["session"]["id"], "tokens": tokens}


# -- the pre-encoded clip --------------------------------------------------------------


def clip_path(width: int = WIDTH, height: int = HEIGHT, bitrate: int = VIDEO_BITRATE) -> Path:
    """The clip, encoded once and kept in the temp dir for later runs (smaller ones:
    the lower layers of a simulcast publisher)."""
    cache = Path(tempfile.gettempdir()) / "jisr-bench"
    kbps = bitrate // 1000
    name = f"clip-v{CLIP_VERSION}-{width}x{height}-{FPS}fps-{SECONDS}s-{kbps}k.webm"
    path = cache / name
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        log(f"encoding the source clip once: {path}")
        partial = path.with_suffix(".partial.webm")
        encode_clip(partial, width, height, bitrate)
        partial.rename(path)
    return path


def simulcast_clip_paths() -> list[str]:
    """The lower layers of a simulcast publisher whose largest is the clip: a quarter
    and half the size, at a sixteenth and a quarter of its bit rate."""
    return [
        str(clip_path(WIDTH // 4, HEIGHT // 4, VIDEO_BITRATE // 16)),
        str(clip_path(WIDTH // 2, HEIGHT // 2, VIDEO_BITRATE // 4)),
    ]


def encode_clip(
    path: Path, width: int = WIDTH, height: int = HEIGHT, bitrate: int = VIDEO_BITRATE
) -> None:
    import av
    import numpy as np

    out = av.open(str(path), "w")
    video = out.add_stream("libvpx", rate=FPS)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.bit_rate = bitrate
    video.gop_size = FPS  # a keyframe a second: a pre-encoded source cannot answer a PLI
    video.options = {
        "deadline": "realtime",
        "cpu-used": "8",
        "minrate": str(bitrate),
        "maxrate": str(bitrate),
    }
    audio = out.add_stream("libopus", rate=48000)
    audio.layout, audio.bit_rate = "stereo", AUDIO_BITRATE

    # A moving plasma with a patch of noise, so the encoder has to spend its bit rate.
    x = np.arange(width, dtype=np.float32)
    y = np.arange(height, dtype=np.float32)[:, None]
    rng = np.random.default_rng(1)
    image = np.empty((height, width, 3), np.uint8)
    for i in range(FPS * SECONDS):
        t = i / FPS
        plasma = np.sin(x / 23 + 3 * t) + np.sin(y / 17 - 2.1 * t) + np.sin((x + y) / 41 + 1.3 * t)
        image[..., 0] = (plasma * 40 + 128).astype(np.uint8)
        image[..., 1] = ((x + 6 * i) % 256).astype(np.uint8)
        image[..., 2] = ((2 * y + 4 * i) % 256).astype(np.uint8)
        image[height // 4 : height // 2, width // 4 : width // 2] += rng.integers(
            0, 48, (height // 4, width // 4, 3), dtype=np.uint8
        )
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = i
        for packet in video.encode(frame):
            out.mux(packet)
    for packet in video.encode():
        out.mux(packet)

    samples = 960  # 20 ms at 48 kHz
    for j in range(48000 * SECONDS // samples):
        t = (np.arange(samples) + j * samples) / 48000
        tone = (np.sin(2 * np.pi * (300 + 100 * np.sin(t)) * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(tone, 2).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate, frame.pts = 48000, j * samples
        for packet in audio.encode(frame):
            out.mux(packet)
    for packet in audio.encode():
        out.mux(packet)
    out.close()


# -- load generator processes ----------------------------------------------------------


class Worker:
    """One load generator process (bench.clients.worker_main) and its command pipe."""

    def __init__(
        self,
        name: str,
        clip: Path,
        deadline: float,
        address: str = "127.0.0.1",
        netns_path: str | None = None,
        cpus: set[int] | None = None,
    ) -> None:
        """``address``: its peers' one host address; ``netns_path``, ``cpus``: the
        network namespace and cores it runs in (bench.isolation), else this one's."""
        from . import clients

        context = multiprocessing.get_context("spawn")  # no fork after threads
        self.name = name
        self._conn, child = context.Pipe()
        self.process = context.Process(
            target=clients.worker_main,
            args=(child, str(clip), deadline, address, netns_path, cpus),
            name=name,
            daemon=True,
        )
        self.process.start()
        child.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, *message) -> None:
        self._conn.send(message)

    def reply(self, timeout: float):
        try:
            if not self._conn.poll(timeout):
                raise RuntimeError(f"{self.name}: no reply in {timeout:.0f} s")
            status, value = self._conn.recv()
        except (EOFError, OSError):
            self.process.join(1)
            raise RuntimeError(f"{self.name} died (exit code {self.process.exitcode})") from None
        if status != "ok":
            raise RuntimeError(f"{self.name}: {value}")
        return value

    def call(self, *message, timeout: float = 60.0):
        self.send(*message)
        return self.reply(timeout)

    def stop(self) -> None:
        if self.process.is_alive():
            try:
                self.call("stop", timeout=15)
            except (RuntimeError, OSError, EOFError):
                pass
            self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def on_sigterm_exit() -> None:
    """SIGTERM ends the benchmark through its finally blocks, as Ctrl-C does (even
    when started in the background, where Ctrl-C would be ignored from birth)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)


def time_bound(seconds: float) -> None:
    """Whatever happens, give up after ``seconds`` (cleanup still runs)."""

    def expired(*_):
        raise TimeoutError(f"the benchmark ran past its {seconds:.0f} s bound")

    signal.signal(signal.SIGALRM, expired)
    signal.alarm(int(seconds))
