"""The console's message catalogue, as a tool: extract every text, merge, check.

``python -m clients.console.catalogue`` (``make messages``) extracts the message ids of
the console's templates and Python (Babel's extractors, Jinja2's for the templates)
and the texts that come from the notice models (:func:`dynamic_messages`) into
``clients/console/locale/console.pot``, then merges them into each language's ``.po``
file, keeping the translations made and leaving new ones empty; it exits 1 while any
message is untranslated. tests/clients/test_console_pages.py holds the shipped
catalogue to the same rule.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from clients.console.compose import FORMS
from clients.console.i18n import DEFAULT, DOMAIN, LANGUAGES
from clients.kinds import HANDLING_CODES, KINDS

__all__ = ["dynamic_messages", "extracted_messages", "main", "untranslated"]

# --- the catalogue ------------------------------------------------------------------------

_LABELS = (
    # clients.kinds.describe: the labels of a notice's rows
    "Kind", "Object", "Object type", "Identified at", "Identified on", "Sale closes",
    "Country of origin", "Reference", "Photos", "Notes", "Legal basis", "Facts",
    "Measure", "Deadline", "Why urgent", "Regarding", "Intended decision", "Grounds",
    "Reply by", "List", "Added", "Removed", "In reply to", "Decision", "Text", "Content",
    # priorities and states, shown as words
    "urgent", "high", "routine", "new", "acknowledged", "rejected", "expired",
    "queued", "accepted", "delivered", "escalated", "sent", "failed",
    "deputy", "duty desk", "supervisor", "contact", "authority", "relay",
)  # fmt: skip


def dynamic_messages() -> list[str]:
    """Message ids that come from the notice models rather than the console's own text:
    kind labels, form field labels and help, row labels, handling codes' meanings."""
    out = list(KINDS.values()) + list(HANDLING_CODES.values()) + list(_LABELS)
    for form in FORMS.values():
        for f in form.fields:
            out.append(f.label)
            out += [s.label for s in f.items] + list(f.choices)
    return list(dict.fromkeys(out))


def extracted_messages() -> list[str | tuple[str, str]]:
    """Every message id of the console: its templates and Python, then the dynamic ones."""
    root = Path(__file__).resolve().parent
    method_map = [("templates/**.html", "jinja2"), ("**.py", "python")]
    options = {"templates/**.html": {"trimmed": "true"}}
    found: list[str | tuple[str, str]] = []
    for _file, _line, message, _comments, _context in extract_from_dir(
        root, method_map, options_map=options
    ):
        if isinstance(message, str):
            found.append(message)
        elif len(message) == 2 and all(message):  # (singular, plural) of ngettext
            found.append((str(message[0]), str(message[1])))
    return list(dict.fromkeys([*found, *dynamic_messages()]))


def _template(messages: Iterable[str | tuple[str, str]]) -> Catalog:
    # A fixed date: extracting again changes the files only when a message changes.
    catalog = Catalog(
        domain=DOMAIN,
        project="cpar officer console",
        fuzzy=False,
        creation_date=datetime(2026, 12, 1, tzinfo=UTC),
    )
    for message in messages:
        catalog.add(message)
    return catalog


def untranslated(catalog: Catalog) -> Iterator[str]:
    """The message ids of ``catalog`` with no translation (or only a fuzzy one)."""
    for m in catalog:
        strings = m.string if isinstance(m.string, tuple | list) else (m.string,)
        if m.id and (not all(strings) or m.fuzzy):
            yield str(m.id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clients.console.catalogue",
        description="Extract the console's message ids into locale/console.pot and merge "
        "them into each language's .po file (translations kept; new ids left empty).",
    )
    parser.parse_args(argv)
    folder = Path(__file__).resolve().parent / "locale"
    template = _template(extracted_messages())
    with (folder / "console.pot").open("wb") as fh:
        write_po(fh, template, omit_header=False, sort_output=True, width=88)
    missing = 0
    for code in LANGUAGES:
        if code == DEFAULT:
            continue
        path = folder / f"{code}.po"
        with path.open("rb") as fh:
            catalog = read_po(fh, locale=code, domain=DOMAIN)
        catalog.update(template, no_fuzzy_matching=True)
        with path.open("wb") as fh:
            write_po(fh, catalog, ignore_obsolete=True, sort_output=True, width=88)
        todo = list(untranslated(catalog))
        missing += len(todo)
        for message in todo:
            print(f"{code}: untranslated: {message}", file=sys.stderr)
    print(f"{len(template)} messages; {missing} untranslated")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
