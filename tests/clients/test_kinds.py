"""Message kinds: what an officer sends is what the receiving authority reads, or refused."""

from __future__ import annotations

from typing import Any

import pytest

from clients.kinds import (
    HANDLING_CODES,
    Consultation,
    FreeText,
    IdentificationNotice,
    InvalidNoticeError,
    MlaRequest,
    Reply,
    StolenPropertyUpdate,
    deadline,
    describe,
    describe_handling,
    onward_sharing_restrictions,
    parse_notice,
    summary,
)
from tests.netfixture import NOW

SALE = 1_800_036_000_000  # 2027-01-15 18:00 UTC
MSG_ID = "01890a5d-ac96-774b-bcce-b302099a8057"

IDENTIFICATION: dict[str, Any] = {
    "kind": "identification_notice",
    "object_description": "Etruscan bronze mirror with engraved figures, 3rd century BC, from a tomb near Vulci",
    "object_type": "mirror",
    "photos": ["front.jpg"],
    "identified_where": "Online auction, lot 42",
    "identified_at": NOW,
    "sale_deadline": SALE,
    "country_of_origin": "IT",
    "references": [{"system": "INTERPOL Stolen Works of Art", "ref": "2023/1234"}],
}
MLA: dict[str, Any] = {
    "kind": "mla_request",
    "reference": "MLA-2027-0042",
    "legal_basis": "1959 European Convention on Mutual Assistance in Criminal Matters",
    "facts": "The mirror was stolen from a museum store in 2019.",
    "requested_measures": ["seize lot 42", "identify the consignor"],
    "deadline": SALE,
}
CONSULTATION: dict[str, Any] = {
    "kind": "consultation",
    "regarding": "MLA-2027-0042",
    "intended_decision": "refuse",
    "grounds": "dual criminality not established",
    "reply_by": NOW + 86_400_000,
}
STOLEN: dict[str, Any] = {
    "kind": "stolen_property_update",
    "list_name": "IT national database",
    "added": [{"id": "IT-1", "description": "Roman coin hoard", "reported_at": NOW}],
    "removed": ["IT-0"],
}
REPLY: dict[str, Any] = {
    "kind": "reply",
    "in_reply_to": MSG_ID,
    "text": "The lot has been withdrawn.",
    "decision": "granted",
}
FREE: dict[str, Any] = {"kind": "free_text", "text": "Please call our duty desk."}


@pytest.mark.parametrize(
    ("content", "model"),
    [
        (IDENTIFICATION, IdentificationNotice),
        (MLA, MlaRequest),
        (CONSULTATION, Consultation),
        (STOLEN, StolenPropertyUpdate),
        (REPLY, Reply),
        (FREE, FreeText),
    ],
)
def test_every_kind_round_trips(content: dict[str, Any], model: type[Any]) -> None:
    notice = parse_notice(content)
    assert isinstance(notice, model)
    assert notice.model_dump(exclude_unset=True) == content
    # One line, whatever the content.
    assert "\n" not in summary(notice)
    rows = describe(notice)
    assert rows[0][0] == "Kind"
    assert all(isinstance(label, str) and isinstance(value, str) for label, value in rows)


def test_identification_summary_names_object_and_sale_deadline() -> None:
    notice = parse_notice(IDENTIFICATION)
    line = summary(notice)
    assert line.startswith("Identification: Etruscan bronze mirror")
    assert line.endswith("(sale closes 2027-01-15 18:00 UTC)")
    assert "…" in line  # the long description is cut
    assert len(line) < 120
    assert ("Country of origin", "IT") in describe(notice)
    assert ("Reference", "INTERPOL Stolen Works of Art: 2023/1234") in describe(notice)


def test_summary_collapses_newlines() -> None:
    notice = parse_notice({"kind": "free_text", "text": "line one\nline two\r\n\tthree"})
    assert summary(notice) == "Message: line one line two three"


def test_deadline_is_the_one_that_matters_for_each_kind() -> None:
    assert deadline(parse_notice(IDENTIFICATION)) == SALE
    assert deadline(parse_notice(MLA)) == SALE
    assert deadline(parse_notice(CONSULTATION)) == NOW + 86_400_000
    assert deadline(parse_notice({**MLA, "deadline": None})) is None
    assert deadline(parse_notice(REPLY)) is None
    assert deadline(parse_notice(FREE)) is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"text": "no kind"}, "notice has no kind"),
        ({"kind": "gossip", "text": "x"}, "unknown notice kind 'gossip'"),
        ({"kind": 3}, "unknown notice kind 'int'"),
        (
            {k: v for k, v in IDENTIFICATION.items() if k != "object_description"},
            "invalid identification_notice: object_description: Field required",
        ),
        ({**IDENTIFICATION, "country_of_origin": "Italy"}, "country_of_origin"),
        ({**IDENTIFICATION, "secret_field": 1}, "secret_field: Extra inputs are not permitted"),
        ({**MLA, "requested_measures": []}, "requested_measures"),
        ({k: v for k, v in CONSULTATION.items() if k != "reply_by"}, "reply_by: Field required"),
        ({**REPLY, "in_reply_to": "not-an-id"}, "in_reply_to"),
        ({**REPLY, "decision": "maybe"}, "decision"),
        ({**STOLEN, "added": [], "removed": []}, "add or remove at least one item"),
        ({**IDENTIFICATION, "identified_at": -1}, "identified_at"),
        # JSON types are exact, as everywhere in the protocol: no coercion.
        ({**CONSULTATION, "reply_by": str(NOW)}, "reply_by: Input should be a valid integer"),
        ({**CONSULTATION, "reply_by": float(NOW)}, "reply_by: Input should be a valid integer"),
        ({**IDENTIFICATION, "identified_at": True}, "identified_at"),
        ({**FREE, "text": 42}, "text: Input should be a valid string"),
    ],
)
def test_invalid_content_is_refused_with_one_line(content: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidNoticeError) as info:
        parse_notice(content)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_refusal_does_not_quote_the_content() -> None:
    with pytest.raises(InvalidNoticeError) as info:
        parse_notice({**IDENTIFICATION, "country_of_origin": "Secret Atlantis"})
    assert "Atlantis" not in str(info.value)


def test_notices_are_frozen() -> None:
    notice = parse_notice(FREE)
    assert isinstance(notice, FreeText)
    with pytest.raises(ValueError, match="frozen"):
        notice.text = "changed"  # type: ignore[misc]


def test_handling_codes_are_explained_and_unknown_ones_fail_closed() -> None:
    for code in (
        "no-onward-sharing",
        "no-evidential-use",
        "originator-consent-required",
        "law-enforcement-only",
    ):
        assert HANDLING_CODES[code]
    lines = describe_handling(["no-onward-sharing", "H9"])
    assert lines[0].startswith("no-onward-sharing: Do not disseminate")
    assert lines[1] == "unknown handling code H9: treat as restricted"
    assert onward_sharing_restrictions(["no-evidential-use", "law-enforcement-only"]) == []
    assert onward_sharing_restrictions(
        ["no-onward-sharing", "originator-consent-required", "H9", "no-evidential-use"]
    ) == ["no-onward-sharing", "originator-consent-required", "H9"]
