"""consult.updated pushes carry a consult's fields that differ from their defaults:
what a page needs, a third of the bytes for every observing supervisor."""

from __future__ import annotations

import orjson

from signaling.model import Attachment, Consult, ConsultState, Person, Urgency, to_json
from signaling.protocol import compact, encode

WAITING = Consult(
    id="c_1", state=ConsultState.WAITING, specialty="cardiology", urgency=Urgency("critical"),
    summary="dissection", patient_ref="P-7", facility="hospital-a",
    referrer=Person(sub="dr-amal", name="Dr Amal"), created_at=1.0,
)  # fmt: skip


def test_fields_at_their_defaults_are_left_out():
    pushed = orjson.loads(encode(compact(WAITING)))
    assert pushed == {
        "id": "c_1", "state": "waiting", "specialty": "cardiology", "urgency": "critical",
        "summary": "dissection", "patient_ref": "P-7", "facility": "hospital-a",
        "referrer": {"sub": "dr-amal", "name": "Dr Amal"}, "created_at": 1.0,
    }  # fmt: skip
    assert len(encode(compact(WAITING))) * 2 < len(encode(WAITING))


def test_fields_that_were_set_are_kept_whole():
    import msgspec

    attachment = msgspec.convert(
        {"id": "a_1", "filename": "echo.pdf", "content_type": "application/pdf",
         "size": 10, "sha256": "0" * 64, "at": 2.0,
         "by": {"sub": "dr-amal", "name": "Dr Amal"}},
        Attachment,
    )  # fmt: skip
    changed = msgspec.structs.replace(
        WAITING, attachments=[attachment], organisation="ministry", offered_to=["dr-k"]
    )
    pushed = orjson.loads(encode(compact(changed)))
    whole = to_json(changed)
    assert pushed["attachments"] == whole["attachments"]
    assert (pushed["organisation"], pushed["offered_to"]) == ("ministry", ["dr-k"])
    assert {k: v for k, v in whole.items() if k in pushed} == pushed
