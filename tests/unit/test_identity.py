"""Identities from several organisations: the issuers file is checked entry by entry,
each issuer's claims map to a role it may grant, identities are namespaced so two
organisations never collide, and every read and list is scoped to the organisation
(plus the consults between organisations, seen by both sides only)."""

from __future__ import annotations

import json

import pytest

from signaling.access import (
    can_see_consult,
    may_accept,
    may_play,
    may_read_attachments,
    may_see_session,
    may_take,
)
from signaling.auth import principal_from
from signaling.errors import ApiError
from signaling.issuers import ClaimMap, IssuerConfig, IssuersError, load_issuers
from signaling.model import Consult, ConsultState, Session, SessionState, Urgency

A = IssuerConfig(organisation="org-a", name="A", issuer="https://a.example",
                 roles=["referrer", "supervisor"])  # fmt: skip
B = IssuerConfig(
    organisation="org-b", name="B", issuer="https://b.example",
    roles=["specialist", "supervisor", "admin"],
    claims=ClaimMap(group_roles={"cardio": "specialist", "ops": "supervisor"}),
)  # fmt: skip
NOW = 1_800_000_000


def claims(**extra) -> dict:
    return {"sub": "x", "iat": NOW, "exp": NOW + 600, "iss": "i", "aud": "jisr", **extra}


def test_each_role_maps_from_its_claim_or_group():
    referrer = principal_from(A, claims(jisr_role="referrer", facility="w7", name="Amal"), "t")
    assert (referrer.role, referrer.sub, referrer.facility, referrer.organisation) == (
        "referrer", "org-a/x", "org-a/w7", "org-a")  # fmt: skip
    assert referrer.name == "Amal"
    specialist = principal_from(B, claims(groups=["staff", "cardio"], specialties=["cardiology"]),
                                "t")  # fmt: skip
    assert (specialist.role, specialist.specialties) == ("specialist", ("cardiology",))
    supervisor = principal_from(B, claims(groups=["ops"]), "t")
    assert supervisor.role == "supervisor" and supervisor.is_overseer
    admin = principal_from(B, claims(jisr_role="admin"), "t")
    assert admin.role == "admin" and admin.is_overseer


@pytest.mark.parametrize(
    "issuer, token_claims, message",
    [
        (A, {"jisr_role": "specialist"}, "not trusted to grant the role specialist"),
        (B, {"jisr_role": "referrer", "facility": "w"}, "not trusted to grant the role referrer"),
        (A, {"jisr_role": "surgeon"}, "no known role"),
        (B, {"groups": ["visitors"]}, "no known role"),
        (A, {"jisr_role": "referrer"}, "must name its facility"),
        (B, {"jisr_role": "specialist", "specialties": "cardiology"}, "list of strings"),
    ],
)
def test_refused_claims(issuer, token_claims, message):
    with pytest.raises(ApiError) as refused:
        principal_from(issuer, claims(**token_claims), "t")
    assert refused.value.code == "token_invalid" and message in refused.value.message


def test_two_organisations_never_collide():
    same = claims(sub="amal", jisr_role="referrer", facility="hospital-1")
    a = principal_from(A, same, "t")
    b = principal_from(IssuerConfig(organisation="org-b", name="B", issuer="https://b.example",
                                    roles=["referrer"]), same, "t")  # fmt: skip
    assert a.sub != b.sub and a.facility != b.facility
    consult = consult_of(a)
    assert can_see_consult(a, consult) and not can_see_consult(b, consult)
    assert may_read_attachments(a, consult) and not may_read_attachments(b, consult)


def test_the_issuers_file_says_what_is_wrong_with_each_entry(tmp_path):
    path = tmp_path / "issuers.json"
    path.write_text(json.dumps({"issuer": [
        {"organisation": "Org A", "name": "A", "issuer": "ftp://a", "roles": ["surgeon"]},
        {"organisation": "b", "name": "B", "issuer": "https://b", "roles": ["admin"],
         "client_id": "jisr"},
        {"organisation": "c", "issuer": "https://c", "roles": ["admin"]},
        {"organisation": "d", "name": "D", "issuer": "https://b", "roles": ["admin"]},
    ]}))  # fmt: skip
    with pytest.raises(IssuersError) as bad:
        load_issuers(path)
    lines = str(bad.value).splitlines()[1:]
    assert any("'Org A'" in line and "organisation must be" in line for line in lines)
    assert any("'Org A'" in line and "http(s) URL" in line for line in lines)
    assert any("'Org A'" in line and "roles must be" in line for line in lines)
    assert any("'b'" in line and "client_secret_file go together" in line for line in lines)
    assert any("issuer #3" in line and "name" in line for line in lines)
    assert any("issuer 'https://b' is listed twice" in line for line in lines)
    toml = tmp_path / "issuers.toml"
    toml.write_text("[[issuer]]\norganisation = 'ok'\nname = 'Ok'\nissuer = 'https://ok'\n"
                    "roles = ['supervisor']\n")  # fmt: skip
    assert [i.organisation for i in load_issuers(toml)] == ["ok"]


def consult_of(referrer, **changes) -> Consult:
    fields = dict(
        id="c1", state=ConsultState.WAITING, specialty="cardiology", urgency=Urgency.CRITICAL,
        summary="s", patient_ref="P-1", facility=referrer.facility, referrer=referrer.person(),
        created_at=1.0, organisation=referrer.organisation,
        routed_to=[referrer.organisation, "org-b"],
    )  # fmt: skip
    return Consult(**{**fields, **changes})


def people() -> dict:
    p = {
        "referrer": principal_from(A, claims(sub="amal", jisr_role="referrer", facility="w"), "t"),
        "sup_a": principal_from(A, claims(sub="sara", jisr_role="supervisor"), "t"),
        "spec_b": principal_from(
            B, claims(sub="karim", groups=["cardio"], specialties=["cardiology"]), "t"
        ),  # fmt: skip
        "sup_b": principal_from(B, claims(sub="leila", groups=["ops"]), "t"),
    }
    c = IssuerConfig(organisation="org-c", name="C", issuer="https://c.example",
                     roles=["specialist", "supervisor"])  # fmt: skip
    p["sup_c"] = principal_from(c, claims(sub="omar", jisr_role="supervisor"), "t")
    p["spec_c"] = principal_from(c, claims(sub="nadia", jisr_role="specialist",
                                           specialties=["cardiology"]), "t")  # fmt: skip
    return p


def test_every_read_is_scoped_to_the_organisations_of_the_consult():
    p = people()
    waiting = consult_of(p["referrer"])
    visible = {name for name, who in p.items() if can_see_consult(who, waiting)}
    assert visible == {"referrer", "sup_a", "spec_b", "sup_b"}
    assert may_take(p["spec_b"], waiting) and may_accept(p["spec_b"], waiting)
    assert not may_take(p["spec_c"], waiting) and not may_accept(p["spec_c"], waiting)
    taken = consult_of(p["referrer"], state=ConsultState.LIVE, specialist=p["spec_b"].person(),
                       specialist_organisation="org-b")  # fmt: skip
    assert {n for n, who in p.items() if can_see_consult(who, taken)} == {
        "referrer", "sup_a", "spec_b", "sup_b"}  # fmt: skip
    assert {n for n, who in p.items() if may_read_attachments(who, taken)} == {
        "referrer", "sup_a", "spec_b", "sup_b"}  # fmt: skip
    session = Session(
        id="s1", consult_id="c1", state=SessionState.LIVE, node="n", facility=taken.facility,
        specialty="cardiology", referrer=p["referrer"].person(),
        specialist=p["spec_b"].person(), created_at=1.0, organisation="org-a",
        specialist_organisation="org-b",
    )  # fmt: skip
    assert {n for n, who in p.items() if n.startswith("sup") and may_see_session(who, session)} == {
        "sup_a", "sup_b"}  # fmt: skip
    recording = {"participants": [{"sub": p["referrer"].sub}], "organisations": ["org-a", "org-b"]}
    assert {n for n, who in p.items() if may_play(who, recording)} == {"referrer", "sup_a", "sup_b"}
    assert may_play(p["sup_a"], {"participants": []}) is False  # an older one: "local"'s


def test_a_consult_within_one_organisation_stays_there():
    p = people()
    own = consult_of(p["referrer"], routed_to=["org-a"])
    assert {n for n, who in p.items() if can_see_consult(who, own)} == {"referrer", "sup_a"}
