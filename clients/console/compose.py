"""The console's compose form: one form per notice kind, generated from the kind's model.

Each field of the kind's pydantic model (its JSON Schema) becomes an input: short text
an ``input``, long text a ``textarea``, a time (``Millis``) a ``datetime-local`` read as
UTC, a list of texts a ``textarea`` with one per line, a choice a ``select``. Lists of
structured items (references, stolen items) are left out of the form (the ``notice``
CLI takes them). The same model validates what was typed, and its messages are shown
beside the fields. Photos (identification notices) are uploaded with the form, named in
the notice, encrypted and sent as attachments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from clients.kinds import (
    KINDS,
    Consultation,
    FreeText,
    IdentificationNotice,
    InvalidNoticeError,
    MlaRequest,
    Notice,
    Reply,
    StolenPropertyUpdate,
    parse_notice,
)

__all__ = ["FORMS", "Field", "KindForm", "read_form"]

_MODELS: tuple[type[BaseModel], ...] = (
    IdentificationNotice,
    MlaRequest,
    Consultation,
    StolenPropertyUpdate,
    Reply,
    FreeText,
)


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    widget: str
    """``input``, ``textarea``, ``lines`` (one per line), ``time`` or ``select``."""
    required: bool
    choices: tuple[str, ...] = ()
    max_length: int | None = None
    pattern: str | None = None


@dataclass(frozen=True)
class KindForm:
    kind: str
    label: str
    fields: tuple[Field, ...]
    photos: bool


def _field(name: str, spec: dict[str, Any], required: bool) -> Field | None:
    options = spec.get("anyOf", [spec])
    main: dict[str, Any] = next((o for o in options if o.get("type") != "null"), {})
    label = name.replace("_", " ").capitalize()
    kind = main.get("type")
    if "enum" in main:
        return Field(name, label, "select", required, tuple(main["enum"]))
    if kind == "integer":
        return Field(name, label + " (UTC)", "time", required)
    if kind == "array":
        items = main.get("items", {})
        if items.get("type") != "string":
            return None  # structured items: not in the form
        return Field(
            name, label + " (one per line)", "lines", required or bool(main.get("minItems"))
        )
    if kind == "string":
        length = main.get("maxLength")
        short = "pattern" in main or (length is not None and length <= 200)
        widget = "input" if short else "textarea"
        return Field(name, label, widget, required, (), length, main.get("pattern"))
    return None


def _form(model: type[BaseModel]) -> KindForm:
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    fields = []
    for name, spec in schema["properties"].items():
        if name in ("kind", "photos"):
            continue
        f = _field(name, spec, name in required)
        if f is not None:
            fields.append(f)
    kind = str(schema["properties"]["kind"]["const"])
    return KindForm(kind, KINDS[kind], tuple(fields), "photos" in schema["properties"])


FORMS: dict[str, KindForm] = {f.kind: f for f in (_form(m) for m in _MODELS)}
_MODEL_OF: dict[str, type[BaseModel]] = {
    str(m.model_json_schema()["properties"]["kind"]["const"]): m for m in _MODELS
}


def _time(text: str) -> int:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def read_form(
    kind: str, values: dict[str, str], photos: list[str]
) -> tuple[Notice | None, dict[str, str]]:
    """The notice the form describes, or None and one message per field that is wrong."""
    form = FORMS.get(kind)
    if form is None:
        return None, {"kind": "Choose a kind of notice."}
    content: dict[str, Any] = {"kind": kind}
    errors: dict[str, str] = {}
    for f in form.fields:
        raw = values.get(f.name, "").strip()
        if not raw:
            continue
        if f.widget == "time":
            try:
                content[f.name] = _time(raw)
            except ValueError:
                errors[f.name] = "Give a date and time."
        elif f.widget == "lines":
            content[f.name] = [line.strip() for line in raw.splitlines() if line.strip()]
        else:
            content[f.name] = raw
    if form.photos and photos:
        content["photos"] = photos
    if errors:
        return None, errors
    try:  # the kind's own model, for a message per field
        _MODEL_OF[kind].model_validate(content, strict=True)
    except ValidationError as exc:
        for e in exc.errors():
            where = str(e["loc"][0]) if e["loc"] else "kind"
            errors.setdefault(where if where in values or where == "photos" else "kind", e["msg"])
        return None, errors
    try:
        return parse_notice(content), {}
    except InvalidNoticeError as exc:
        return None, {"kind": str(exc)}
