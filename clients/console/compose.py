"""The console's compose form: one form per notice kind, generated from the kind's model.

Each field of the kind's pydantic model (its JSON Schema) becomes an input: short text
an ``input``, long text a ``textarea``, a time (``Millis``) a ``datetime-local`` read as
UTC, a list of texts a ``textarea`` with one per line, a choice a ``select``, and a list
of structured items (an identification's references, a stolen-property list's items) a
table with one row per item and one input per member (``name.ROW.member``; empty rows
are ignored). The same model validates what was typed, and its messages are shown
beside the fields. Photos (identification notices) are uploaded with the form, named in
the notice, encrypted and sent as attachments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from clients.console.i18n import N_
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

__all__ = ["FORMS", "Field", "KindForm", "item_rows", "read_form"]

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
    """``input``, ``textarea``, ``lines`` (one per line), ``time``, ``select`` or
    ``items`` (a table of structured items, one input per member in ``items``)."""
    required: bool
    choices: tuple[str, ...] = ()
    max_length: int | None = None
    pattern: str | None = None
    items: tuple[Field, ...] = ()
    """The members of each item (``items`` only)."""


@dataclass(frozen=True)
class KindForm:
    kind: str
    label: str
    fields: tuple[Field, ...]
    photos: bool


ITEM_ROWS = 3
"""Empty rows shown for a list of structured items (the page's script adds more)."""
_LABELS = {"ref": "Reference", "id": "Identifier", "system": "System"}


def _field(
    name: str, spec: dict[str, Any], required: bool, defs: dict[str, Any] | None = None
) -> Field | None:
    options = spec.get("anyOf", [spec])
    main: dict[str, Any] = next((o for o in options if o.get("type") != "null"), {})
    label = _LABELS.get(name) or name.replace("_", " ").capitalize()
    kind = main.get("type")
    if "enum" in main:
        return Field(name, label, "select", required, tuple(main["enum"]))
    if kind == "integer":
        return Field(name, label + " (UTC)", "time", required)
    if kind == "array":
        items = main.get("items", {})
        if "$ref" in items and defs is not None:
            item = defs[items["$ref"].rsplit("/", 1)[-1]]
            wanted = set(item.get("required", []))
            members = tuple(
                f
                for member, sub in item["properties"].items()
                if (f := _field(member, sub, member in wanted)) is not None
            )
            return Field(name, label, "items", required, items=members)
        if items.get("type") != "string":
            return None
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
        f = _field(name, spec, name in required, schema.get("$defs", {}))
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


def _same(text: str) -> str:
    return text


def read_form(
    kind: str,
    values: dict[str, str],
    photos: list[str],
    tr: Callable[[str], str] = _same,
) -> tuple[Notice | None, dict[str, str]]:
    """The notice the form describes, or None and one message per field that is wrong
    (the console's own messages in the language ``tr`` translates to; the model's
    validation messages are pydantic's, in English)."""
    form = FORMS.get(kind)
    if form is None:
        return None, {"kind": tr(N_("Choose a kind of notice."))}
    content: dict[str, Any] = {"kind": kind}
    errors: dict[str, str] = {}
    for f in form.fields:
        if f.widget == "items":
            rows, wrong = _items(f, values, tr)
            if wrong:
                errors[f.name] = wrong
            elif rows:
                content[f.name] = rows
            continue
        raw = values.get(f.name, "").strip()
        if not raw:
            continue
        if f.widget == "time":
            try:
                content[f.name] = _time(raw)
            except ValueError:
                errors[f.name] = tr(N_("Give a date and time."))
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
        names = {f.name for f in form.fields} | {"photos"}
        for e in exc.errors():
            where = str(e["loc"][0]) if e["loc"] else "kind"
            errors.setdefault(where if where in names else "kind", e["msg"])
        return None, errors
    try:
        return parse_notice(content), {}
    except InvalidNoticeError as exc:
        return None, {"kind": str(exc)}


def item_rows(f: Field, values: dict[str, str]) -> int:
    """How many rows to show for a list of items: those typed, then empty ones."""
    used = [i for i in range(MAX_ITEM_ROWS) if any(values.get(_key(f, i, m)) for m in f.items)]
    return (max(used) + 1 if used else 0) + ITEM_ROWS


MAX_ITEM_ROWS = 1000
"""The most rows of one list the form reads."""


def _key(f: Field, row: int, member: Field) -> str:
    return f"{f.name}.{row}.{member.name}"


def _items(
    f: Field, values: dict[str, str], tr: Callable[[str], str]
) -> tuple[list[dict[str, Any]], str]:
    """The items typed in a table (empty rows skipped), or a message about the first
    row that is wrong."""
    out: list[dict[str, Any]] = []
    for row in range(MAX_ITEM_ROWS):
        typed = {m.name: values.get(_key(f, row, m), "").strip() for m in f.items}
        if not any(typed.values()):
            continue
        item: dict[str, Any] = {}
        for m in f.items:
            raw = typed[m.name]
            if not raw:
                if m.required:
                    wanted = tr(N_("Row %(row)s: %(field)s is required."))
                    return [], wanted % {"row": row + 1, "field": tr(m.label)}
                continue
            if m.widget == "time":
                try:
                    item[m.name] = _time(raw)
                except ValueError:
                    wanted = tr(N_("Row %(row)s: %(field)s: give a date and time."))
                    return [], wanted % {"row": row + 1, "field": tr(m.label)}
            else:
                item[m.name] = raw
        out.append(item)
    return out, ""
