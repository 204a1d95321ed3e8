"""The JSON Schemas of the notice kinds in docs/schemas: current, and true to the models.

An independent client is written from these files, so they must say what
:func:`clients.kinds.parse_notice` accepts: every kind has one, ``kind`` and the other
required members are required, nothing else is allowed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clients.kinds import (
    KINDS,
    REGENERATE,
    InvalidNoticeError,
    notice_schemas,
    parse_notice,
    write_schemas,
)
from tests.netfixture import NOW

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"

# One valid notice of each kind, with every member the kind has.
FULL: dict[str, dict[str, Any]] = {
    "identification_notice": {
        "kind": "identification_notice",
        "object_description": "Etruscan bronze mirror",
        "object_type": "mirror",
        "photos": ["front.jpg"],
        "identified_where": "Online auction, lot 42",
        "identified_at": NOW,
        "sale_deadline": NOW + 1000,
        "country_of_origin": "IT",
        "references": [{"system": "INTERPOL", "ref": "2024-1234"}],
        "notes": "seen twice",
    },
    "mla_request": {
        "kind": "mla_request",
        "reference": "MLA-1",
        "legal_basis": "1959 Convention",
        "facts": "the facts",
        "requested_measures": ["seize lot 42"],
        "deadline": NOW + 1000,
        "urgency_reason": "the sale closes",
    },
    "consultation": {
        "kind": "consultation",
        "regarding": "MLA-1",
        "intended_decision": "refuse",
        "grounds": "dual criminality",
        "reply_by": NOW + 1000,
    },
    "stolen_property_update": {
        "kind": "stolen_property_update",
        "list_name": "national list",
        "added": [{"id": "A-1", "description": "icon", "reported_at": NOW}],
        "removed": ["B-2"],
    },
    "reply": {
        "kind": "reply",
        "in_reply_to": "01890a5d-ac96-774b-bcce-b302099a8057",
        "text": "granted",
        "decision": "granted",
    },
    "free_text": {"kind": "free_text", "text": "hello"},
}


def test_committed_schemas_are_current() -> None:
    generated = notice_schemas()
    committed = {p.name for p in SCHEMAS.glob("*.schema.json")}
    stale = [
        name
        for name, text in generated.items()
        if not (SCHEMAS / name).is_file() or (SCHEMAS / name).read_text(encoding="utf-8") != text
    ]
    extra = sorted(committed - set(generated))
    assert not stale and not extra, (
        f"docs/schemas is not current (differs: {stale}, no such kind: {extra}); "
        f"regenerate with: {REGENERATE}"
    )


def test_every_kind_has_a_schema_named_after_it() -> None:
    assert set(notice_schemas()) == {f"{kind}.schema.json" for kind in KINDS}
    assert set(FULL) == set(KINDS)


def test_write_schemas_writes_what_is_generated(tmp_path: Path) -> None:
    written = write_schemas(tmp_path / "out")
    assert {p.name: p.read_text(encoding="utf-8") for p in written} == notice_schemas()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_schema_says_what_parse_notice_accepts(kind: str) -> None:
    schema = json.loads(notice_schemas()[f"{kind}.schema.json"])
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["properties"]["kind"]["const"] == kind
    required = schema["required"]
    assert required[0] == "kind"

    full = FULL[kind]
    assert set(full) == set(schema["properties"])  # the example uses every member
    parse_notice(full)
    # Each required member is needed; each optional one may be left out.
    for name in schema["properties"]:
        partial = {k: v for k, v in full.items() if k != name}
        if name in required:
            with pytest.raises(InvalidNoticeError):
                parse_notice(partial)
        elif kind != "stolen_property_update":  # it needs one of added/removed
            parse_notice(partial)
    # Nothing outside the schema is allowed.
    with pytest.raises(InvalidNoticeError):
        parse_notice({**full, "unlisted": 1})
