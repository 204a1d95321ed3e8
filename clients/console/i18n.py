"""The console's languages: one gettext catalogue, English and French shipped.

Every text of the console's pages is an English message id: in the templates (``{%
trans %}``, ``_()``), in Python marked with :func:`N_` and translated where it is shown,
and the labels that come from the notice models (:func:`dynamic_messages`). The French
translations live in ``clients/console/locale/fr.po`` (package data), read and compiled
with Babel when the console starts. ``python -m clients.console.catalogue`` (``make
messages``) extracts every message id again into ``locale/console.pot`` and merges it
into ``fr.po``, keeping the translations made (:mod:`clients.console.catalogue`); a test
refuses a catalogue that leaves a message untranslated.

The language of a page: the ``cpar_lang`` cookie (the language links at the foot of
every page), else the browser's ``Accept-Language``, else English.
"""

from __future__ import annotations

import gettext
import io
from importlib import resources

from babel import negotiate_locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

__all__ = ["DEFAULT", "DOMAIN", "LANGUAGES", "N_", "catalogues", "choose"]

LANGUAGES: dict[str, str] = {"en": "English", "fr": "Français"}
"""The languages shipped: code and the language's own name for itself."""
DEFAULT = "en"
DOMAIN = "console"


def N_(message: str) -> str:  # noqa: N802 - the conventional name extractors look for
    """Mark a text for the catalogue; it is translated where it is shown."""
    return message


def catalogues() -> dict[str, gettext.NullTranslations]:
    """Each shipped language's translations (English is the message ids themselves)."""
    out: dict[str, gettext.NullTranslations] = {DEFAULT: gettext.NullTranslations()}
    folder = resources.files("clients.console").joinpath("locale")
    for code in LANGUAGES:
        if code == DEFAULT:
            continue
        with folder.joinpath(f"{code}.po").open("rb") as fh:
            catalog = read_po(fh, locale=code, domain=DOMAIN)
        compiled = io.BytesIO()
        write_mo(compiled, catalog, use_fuzzy=False)
        compiled.seek(0)
        out[code] = gettext.GNUTranslations(compiled)
    return out


def choose(cookie: str | None, accept_language: str | None) -> str:
    """The page's language: the cookie's when it names a shipped one, else the browser's
    preference (``Accept-Language``, by quality), else English."""
    if cookie in LANGUAGES:
        return cookie
    wanted = []
    for part in (accept_language or "").split(","):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and quality > 0:
            wanted.append((quality, tag.replace("-", "_")))
    wanted.sort(key=lambda qt: -qt[0])
    found = negotiate_locale([t for _, t in wanted], list(LANGUAGES), sep="_")
    if found is None:  # "fr_CA" asks for French too
        bases = [t.split("_")[0].lower() for _, t in wanted]
        found = next((b for b in bases if b in LANGUAGES), None)
    return found or DEFAULT
