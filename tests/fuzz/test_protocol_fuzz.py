"""Every WebSocket message and every HTTP body a client can send, generated: the
running server always answers with a coded error (never ``internal`` / 500), and
keeps serving."""

from __future__ import annotations

import json
import tempfile
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from recordings.crypto import generate_key_file
from signaling.protocol import MESSAGE_TYPES
from tests.fuzz.live import LiveNode
from tests.fuzz.seed import SEED, count

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=12,
)
FIELDS = ("ref", "token", "batch", "session_id", "sdp", "candidate", "status", "text", "consent",
          "specialty", "urgency", "summary", "patient_ref", "reason", "findings", "assessment",
          "recommendation", "follow_up_urgency", "sdpMid", "sdpMLineIndex")  # fmt: skip
PLAUSIBLE = st.one_of(
    JSON,
    st.sampled_from(["critical", "urgent", "routine", "none", "cardiology", "available", "busy",
                     "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n", "s_x", "c_x", ""]),
    st.text(max_size=3000),
)  # fmt: skip


def shaped(types) -> st.SearchStrategy[dict]:
    """A message that looks like one of ``types``, with any of the known fields."""
    return st.builds(
        lambda kind, fields: {"type": kind, **fields},
        st.sampled_from(types),
        st.dictionaries(st.sampled_from(FIELDS), PLAUSIBLE, max_size=4),
    )


FRAMES = st.one_of(
    shaped(sorted(MESSAGE_TYPES) + ["bogus", ""]).map(lambda m: json.dumps(m)),
    JSON.map(lambda v: json.dumps(v)),
    st.text(max_size=200),
    st.binary(max_size=200),
)


@pytest.fixture(scope="module")
def node():
    folder = Path(tempfile.mkdtemp(prefix="jisr-fuzz-"))
    generate_key_file(folder / "master.key")
    live = LiveNode(recording_key=folder / "master.key", attachments_dir=folder / "files",
                    recordings_dir=folder / "recordings")  # fmt: skip
    live.session_id = live.live_session()
    yield live
    live.close()


def assert_coded(messages: list[dict]) -> None:
    for message in messages:
        if message.get("type") == "error":
            assert message["code"] != "internal", message
            assert isinstance(message["code"], str) and isinstance(message["message"], str)


@seed(SEED)
@hypothesis_settings(max_examples=2500)
@given(frame=FRAMES)
def test_websocket_messages(node, frame):
    count("websocket messages")
    assert_coded(node.exchange(frame, node.tokens.referrer))


@seed(SEED)
@hypothesis_settings(max_examples=1000)
@given(frame=shaped(["offer", "candidate", "chat", "recording.request", "recording.consent",
                     "recording.stop", "leave", "presence"]).map(json.dumps))  # fmt: skip
def test_websocket_messages_of_a_joined_participant(node, frame):
    count("websocket messages in a session")
    messages = node.exchange(frame, node.tokens.specialist, node.session_id)
    assert_coded(messages)


ENDPOINTS = [
    ("POST", "/api/consults"),
    ("POST", "/api/consults/{id}/decline"),
    ("POST", "/api/consults/{id}/transfer"),
    ("POST", "/api/consults/{id}/report"),
    ("POST", "/api/consults/{id}/cancel"),
    ("POST", "/api/consults/{id}/accept"),
    ("POST", "/api/consults/{id}/attachments"),
    ("POST", "/api/sessions/{id}/end"),
    ("GET", "/api/consults/{id}"),
    ("GET", "/api/sessions/{id}"),
    ("GET", "/api/recordings/{id}/media"),
]
BODIES = st.one_of(
    shaped(["x"]).map(lambda m: json.dumps({k: v for k, v in m.items() if k != "type"}).encode()),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
    st.sampled_from([b"%PDF-1.7 x", b"\x89PNG\r\n\x1a\n" + b"\0" * 10, b"", b"{", b"null"]),
)
IDS = st.one_of(st.sampled_from(["c_known", "s_known", "r_x"]), st.text(min_size=1, max_size=30))


@seed(SEED)
@hypothesis_settings(max_examples=2500)
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    ident=IDS,
    body=BODIES,
    content_type=st.sampled_from(["application/json", "application/pdf", "text/plain", ""]),
    role=st.sampled_from(["referrer", "specialist", "supervisor", "admin"]),
)
def test_http_bodies(node, endpoint, ident, body, content_type, role):
    count("http requests")
    method, template = endpoint
    path = template.replace("{id}", urllib.parse.quote(ident, safe=""))
    token = getattr(node.tokens, role)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type,
               "X-Filename": "fuzz"}  # fmt: skip
    status, answer = node.http_call(method, path, body, headers)
    assert status != 500, answer
    if status >= 400:
        assert isinstance(answer["error"]["code"], str), answer
        assert answer["error"]["code"] != "internal", answer
