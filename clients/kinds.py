"""Message kinds: what travels inside the encrypted payload (``Plaintext.content``).

The relay never sees any of this. Every notice is a JSON object whose ``kind`` field
selects its model; all models are frozen and forbid unknown fields (fail closed):

=========================  ==============================================================
kind                       purpose (CCPCJ resolution 27/5)
=========================  ==============================================================
identification_notice      an object that may have left its country of origin has been
                           identified, e.g. at an (online) auction (paras 9, 11)
mla_request                a request for mutual legal assistance (paras 5, 12)
consultation               consultation before refusal: the requested State consults the
                           requesting State before refusing an MLA request (para 18)
stolen_property_update     additions to / removals from a shared stolen-property list
                           (para 15)
reply                      an answer to an earlier message, optionally with a decision
free_text                  anything else
=========================  ==============================================================

Times are integer milliseconds since the Unix epoch (UTC), as everywhere in the protocol.

Handling codes (SIENA-style) travel beside the content, in ``Plaintext.handling``; the
recipient's daemon enforces them (see :mod:`clients.hooks`). :data:`HANDLING_CODES`
explains each known code; an unknown code is treated as restrictive.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from keys.encoding import MESSAGE_ID_PATTERN

__all__ = [
    "BLOCKS_ONWARD_SHARING",
    "HANDLING_CODES",
    "KINDS",
    "Consultation",
    "FreeText",
    "IdentificationNotice",
    "InvalidNoticeError",
    "MlaRequest",
    "Notice",
    "Reference",
    "Reply",
    "StolenItem",
    "StolenPropertyUpdate",
    "deadline",
    "describe",
    "describe_handling",
    "format_ms",
    "notice_schemas",
    "onward_sharing_restrictions",
    "parse_notice",
    "summary",
    "write_schemas",
]

Millis = Annotated[int, Field(ge=0, lt=2**53)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=100_000)]
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
MessageId = Annotated[str, StringConstraints(pattern=MESSAGE_ID_PATTERN)]


class InvalidNoticeError(ValueError):
    """The content is not a valid notice. The message is one line and quotes no content."""


class _Kind(BaseModel):
    # Attribute docstrings become descriptions in the generated JSON Schemas.
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class Reference(_Kind):
    """A record in another system, e.g. INTERPOL Stolen Works of Art or a national database."""

    system: ShortText
    ref: ShortText


class IdentificationNotice(_Kind):
    """An object that may have been removed from its country of origin has been identified."""

    kind: Literal["identification_notice"] = "identification_notice"
    object_description: Text
    object_type: ShortText | None = None
    photos: list[ShortText] = Field(default_factory=list, max_length=32)
    """Names of attachments of the same message (``AttachmentManifestEntry.name``)."""
    identified_where: Text
    """Where the object was seen: auction house, URL, lot number."""
    identified_at: Millis
    sale_deadline: Millis | None = None
    country_of_origin: CountryCode | None = None
    references: list[Reference] = Field(default_factory=list, max_length=64)
    notes: Text | None = None


class MlaRequest(_Kind):
    """A request for mutual legal assistance."""

    kind: Literal["mla_request"] = "mla_request"
    reference: ShortText
    legal_basis: Text
    facts: Text
    requested_measures: list[Text] = Field(min_length=1, max_length=64)
    deadline: Millis | None = None
    urgency_reason: Text | None = None


class Consultation(_Kind):
    """Consultation before refusal (resolution 27/5, para 18): a reply is due by ``reply_by``."""

    kind: Literal["consultation"] = "consultation"
    regarding: ShortText
    """The message id of the request, or its MLA reference."""
    intended_decision: Text
    grounds: Text
    reply_by: Millis


class StolenItem(_Kind):
    """One item of a stolen-property list."""

    id: ShortText
    description: Text
    reported_at: Millis | None = None


class StolenPropertyUpdate(_Kind):
    """Additions to and removals from a shared list of stolen or lost property.

    At least one of ``added`` and ``removed`` must be non-empty.
    """

    kind: Literal["stolen_property_update"] = "stolen_property_update"
    list_name: ShortText
    added: list[StolenItem] = Field(default_factory=list, max_length=10_000)
    removed: list[ShortText] = Field(default_factory=list, max_length=10_000)

    @model_validator(mode="after")
    def _not_empty(self) -> StolenPropertyUpdate:
        if not self.added and not self.removed:
            raise ValueError("an update must add or remove at least one item")
        return self


class Reply(_Kind):
    """An answer to an earlier message; ``decision`` answers a request or consultation."""

    kind: Literal["reply"] = "reply"
    in_reply_to: MessageId
    text: Text
    decision: Literal["granted", "refused", "partial", "information"] | None = None


class FreeText(_Kind):
    """Anything else, as text."""

    kind: Literal["free_text"] = "free_text"
    text: Text


Notice: TypeAlias = Annotated[
    IdentificationNotice | MlaRequest | Consultation | StolenPropertyUpdate | Reply | FreeText,
    Field(discriminator="kind"),
]
_NOTICE: TypeAdapter[Notice] = TypeAdapter(Notice)

KINDS: dict[str, str] = {
    "identification_notice": "Identification",
    "mla_request": "MLA request",
    "consultation": "Consultation before refusal",
    "stolen_property_update": "Stolen property update",
    "reply": "Reply",
    "free_text": "Message",
}
"""Each kind and its label for humans."""


def parse_notice(content: Mapping[str, Any]) -> Notice:
    """Validate decrypted content as a notice, or raise :class:`InvalidNoticeError`."""
    if not isinstance(content, Mapping):
        raise InvalidNoticeError("notice content must be a JSON object")
    kind = content.get("kind")
    if kind is None:
        raise InvalidNoticeError("notice has no kind")
    if not isinstance(kind, str) or kind not in KINDS:
        shown = kind[:40] if isinstance(kind, str) else type(kind).__name__
        raise InvalidNoticeError(f"unknown notice kind {shown!r}")
    try:
        # Strict: a JSON string, float or boolean is never taken for an integer.
        return _NOTICE.validate_python(dict(content), strict=True)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"][1:]) or "notice"
        raise InvalidNoticeError(f"invalid {kind}: {loc}: {err['msg']}") from None


# --- presentation ---------------------------------------------------------------------


def format_ms(ms: int) -> str:
    """``2027-01-15 18:00 UTC`` for an epoch-milliseconds time."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


_SPACES = re.compile(r"\s+")


def _short(text: str, width: int = 60) -> str:
    """One line of at most ``width`` characters, ending with an ellipsis when cut."""
    line = _SPACES.sub(" ", text).strip()
    return line if len(line) <= width else line[: width - 1].rstrip() + "…"


def summary(notice: Notice) -> str:
    """One line for a table, e.g. ``Identification: Etruscan bronze mirror (sale closes …)``."""
    label = KINDS[notice.kind]
    match notice:
        case IdentificationNotice():
            text = f"{label}: {_short(notice.object_description)}"
            if notice.sale_deadline is not None:
                text += f" (sale closes {format_ms(notice.sale_deadline)})"
        case MlaRequest():
            n = len(notice.requested_measures)
            text = f"{label} {_short(notice.reference, 40)}: {n} measure{'s' if n != 1 else ''}"
            if notice.deadline is not None:
                text += f" (deadline {format_ms(notice.deadline)})"
        case Consultation():
            text = (
                f"{label} re {_short(notice.regarding, 40)}: "
                f"{_short(notice.intended_decision, 40)} (reply by {format_ms(notice.reply_by)})"
            )
        case StolenPropertyUpdate():
            text = f"{label} {_short(notice.list_name, 40)}: +{len(notice.added)} / -{len(notice.removed)}"
        case Reply():
            decision = f" [{notice.decision}]" if notice.decision else ""
            text = f"{label} to {notice.in_reply_to}{decision}: {_short(notice.text, 40)}"
        case FreeText():
            text = f"{label}: {_short(notice.text)}"
    return text


def _opt_time(ms: int | None) -> str:
    return "—" if ms is None else format_ms(ms)


def describe(notice: Notice) -> list[tuple[str, str]]:
    """Label/value rows for a detail view, in reading order. Values may span lines."""
    rows: list[tuple[str, str]] = [("Kind", KINDS[notice.kind])]
    match notice:
        case IdentificationNotice():
            rows += [
                ("Object", notice.object_description),
                ("Object type", notice.object_type or "—"),
                ("Identified at", notice.identified_where),
                ("Identified on", format_ms(notice.identified_at)),
                ("Sale closes", _opt_time(notice.sale_deadline)),
                ("Country of origin", notice.country_of_origin or "—"),
            ]
            rows += [("Reference", f"{r.system}: {r.ref}") for r in notice.references]
            if notice.photos:
                rows.append(("Photos", ", ".join(notice.photos)))
            if notice.notes:
                rows.append(("Notes", notice.notes))
        case MlaRequest():
            rows += [
                ("Reference", notice.reference),
                ("Legal basis", notice.legal_basis),
                ("Facts", notice.facts),
            ]
            rows += [(f"Measure {i}", m) for i, m in enumerate(notice.requested_measures, start=1)]
            rows.append(("Deadline", _opt_time(notice.deadline)))
            if notice.urgency_reason:
                rows.append(("Why urgent", notice.urgency_reason))
        case Consultation():
            rows += [
                ("Regarding", notice.regarding),
                ("Intended decision", notice.intended_decision),
                ("Grounds", notice.grounds),
                ("Reply by", format_ms(notice.reply_by)),
            ]
        case StolenPropertyUpdate():
            rows.append(("List", notice.list_name))
            for item in notice.added:
                when = (
                    f" (reported {format_ms(item.reported_at)})"
                    if item.reported_at is not None
                    else ""
                )
                rows.append(("Added", f"{item.id}: {item.description}{when}"))
            rows += [("Removed", item_id) for item_id in notice.removed]
        case Reply():
            rows += [
                ("In reply to", notice.in_reply_to),
                ("Decision", notice.decision or "—"),
                ("Text", notice.text),
            ]
        case FreeText():
            rows.append(("Text", notice.text))
    return rows


def deadline(notice: Notice) -> int | None:
    """The earliest deadline that matters for this notice (ms), or None.

    An identification's sale deadline, an MLA request's deadline, a consultation's
    reply-by time.
    """
    candidates: list[int | None]
    match notice:
        case IdentificationNotice():
            candidates = [notice.sale_deadline]
        case MlaRequest():
            candidates = [notice.deadline]
        case Consultation():
            candidates = [notice.reply_by]
        case _:
            candidates = []
    present = [c for c in candidates if c is not None]
    return min(present) if present else None


# --- handling codes ---------------------------------------------------------------------

HANDLING_CODES: dict[str, str] = {
    "no-onward-sharing": (
        "Do not disseminate outside the receiving authority without the originator's "
        "permission (like SIENA H2)."
    ),
    "no-evidential-use": (
        "Not to be used as evidence in judicial proceedings without the originator's "
        "permission (like SIENA H1)."
    ),
    "originator-consent-required": (
        "Any further use of this information needs the originator's consent (like SIENA H3)."
    ),
    "law-enforcement-only": "For law-enforcement use only.",
}
"""Known handling codes and what each means, in plain language."""

BLOCKS_ONWARD_SHARING: frozenset[str] = frozenset(
    {"no-onward-sharing", "originator-consent-required"}
)
"""Known codes under which a message must not be handed to a system that shares onward."""


def describe_handling(codes: Iterable[str]) -> list[str]:
    """One line per code: ``code: meaning``; unknown codes are to be treated as restricted."""
    return [
        f"{code}: {HANDLING_CODES[code]}"
        if code in HANDLING_CODES
        else f"unknown handling code {code}: treat as restricted"
        for code in codes
    ]


def onward_sharing_restrictions(codes: Iterable[str]) -> list[str]:
    """The codes that forbid onward sharing: the blocking known codes and every unknown one.

    Unknown codes fail closed: a code this software does not understand may be a
    restriction, so it is honoured as one.
    """
    return [c for c in codes if c in BLOCKS_ONWARD_SHARING or c not in HANDLING_CODES]


# --- JSON Schemas -----------------------------------------------------------------------

_MODELS: dict[str, type[_Kind]] = {
    "identification_notice": IdentificationNotice,
    "mla_request": MlaRequest,
    "consultation": Consultation,
    "stolen_property_update": StolenPropertyUpdate,
    "reply": Reply,
    "free_text": FreeText,
}
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
REGENERATE = "python -m clients.kinds --write-schemas docs/schemas"


def notice_schemas() -> dict[str, str]:
    """``<kind>.schema.json`` -> its JSON Schema text, for every kind (what a sender sends).

    ``kind`` is required in each (it selects the model), although the Python models
    default it.
    """
    out: dict[str, str] = {}
    for kind, model in _MODELS.items():
        schema: dict[str, Any] = {"$schema": SCHEMA_DIALECT}
        schema.update(model.model_json_schema(mode="validation"))
        schema["required"] = ["kind", *(r for r in schema.get("required", []) if r != "kind")]
        schema["properties"]["kind"].pop("default", None)
        out[f"{kind}.schema.json"] = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    return out


def write_schemas(directory: Path) -> list[Path]:
    """Write :func:`notice_schemas` into ``directory`` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in notice_schemas().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m clients.kinds --write-schemas DIR``: regenerate the notice JSON Schemas."""
    parser = argparse.ArgumentParser(
        prog="python -m clients.kinds",
        description="Write the JSON Schema of every notice kind as DIR/<kind>.schema.json.",
    )
    parser.add_argument("--write-schemas", metavar="DIR", type=Path, required=True)
    args = parser.parse_args(argv)
    for path in write_schemas(args.write_schemas):
        print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
