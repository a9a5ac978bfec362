"""The record store in tests: a Records of its own for a database URL, and consults
to feed it."""

from __future__ import annotations

from pathlib import Path

from recordings.crypto import MasterKey, generate_key_file, load_master_key
from recordings.keyring import Keyring
from signaling.model import Consult, ConsultState, Person, Report, Urgency, replace
from signaling.records.service import Records


def master_key(folder: Path) -> MasterKey:
    path = folder / "master.key"
    return load_master_key(path) if path.exists() else generate_key_file(path)


def open_records(url: str, folder: Path, node: str = "n_test", clock=None) -> Records:
    keyring = Keyring(master_key(folder))
    kwargs = {"clock": clock} if clock else {}
    return Records(url, keyring, node=node, outbox_dir=folder / "outbox", **kwargs)


def a_consult(consult_id: str = "c_1", **changes) -> Consult:
    consult = Consult(
        id=consult_id, state=ConsultState.WAITING, specialty="cardiology",
        urgency=Urgency.CRITICAL, summary="chest pain radiating to the left arm",
        patient_ref="MRN-4711", facility="hospital-a",
        referrer=Person(sub="dr-amal", name="Dr Amal"), created_at=1000.0,
        organisation="local",
    )  # fmt: skip
    return replace(consult, **changes)


def its_versions(consult: Consult) -> list[Consult]:
    """waiting → accepted → live → ended with a report: the versions a consult goes
    through, as the stores number them."""
    specialist = Person(sub="dr-karim", name="Dr Karim")
    report = Report(
        findings="ST elevation in V2-V4", assessment="anterior STEMI",
        recommendation="primary PCI now", follow_up_urgency="critical",
        consult_id=consult.id, specialist=specialist, written_at=1300.0,
    )  # fmt: skip
    accepted = replace(consult, state=ConsultState.ACCEPTED, specialist=specialist,
                       session_id="s_1", accepted_at=1100.0, version=1,
                       specialist_organisation="local")  # fmt: skip
    live = replace(accepted, state=ConsultState.LIVE, version=2)
    ended = replace(live, state=ConsultState.ENDED, report=report, report_sha256="ab" * 32,
                    ended_at=1300.0, version=3)  # fmt: skip
    return [consult, accepted, live, ended]
