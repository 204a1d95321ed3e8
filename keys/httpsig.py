"""Signed HTTP requests: RFC 9421 message signatures over an RFC 9530 Content-Digest.

Every request a client sends to the relay, the WebSocket upgrade ``GET`` included,
carries three headers made by :func:`sign_request`, and the relay checks them with
:func:`verify_request`. The profile, tagged ``cpar-v1``, is fixed and the verifier
refuses anything else:

* one signature, labelled ``sig1``, in ``Signature-Input`` and ``Signature``;
* covered components, exactly and in this order:
  ``("@method" "@authority" "@path" "@query" "content-digest")``;
* ``Content-Digest: sha-256=:<base64 of SHA-256(body)>:``, also for an empty body;
* parameters, in this order: ``created``, ``expires`` (``created < expires <=
  created + 300``), ``nonce`` (unpadded base64url of 16 random bytes), ``keyid`` (the
  16-character kid of an Ed25519 signing key), ``alg="ed25519"``, ``tag="cpar-v1"``;
* the signature: Ed25519 (libsodium) over the RFC 9421 signature base, sent as
  ``sig1=:<base64>:``.

Structured fields are parsed and serialised with ``http_sf`` (RFC 9651). On the
verifier's hot path the canonical form this module emits is recognised by one
anchored regular expression; anything else falls back to the full ``http_sf`` parse,
so an equivalent but differently spaced header is judged exactly like the canonical
one, and every refusal names what is wrong. Nothing here reads a clock: callers pass
``now`` in integer Unix seconds. Nothing here knows about a web framework either:
callers pass the method, authority, path, query, headers and body as plain values.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NoReturn
from urllib.parse import urlsplit

import http_sf

from keys.encoding import b64e, key_id
from keys.errors import (
    BadRequestSignatureError,
    BadSignatureInputError,
    DigestMismatchError,
    EncodingError,
    MissingSignatureError,
    NonceCacheFullError,
    ReplayedNonceError,
    SignatureExpiredError,
    UnknownRequestKeyError,
)
from keys.jws import SIGNATURE_BYTES, ed25519_sign, ed25519_verify

LABEL: Final = "sig1"
TAG: Final = "cpar-v1"
ALG: Final = "ed25519"
COMPONENTS: Final = ("@method", "@authority", "@path", "@query", "content-digest")
PARAMETERS: Final = ("created", "expires", "nonce", "keyid", "alg", "tag")
NONCE_BYTES: Final = 16
DEFAULT_TTL: Final = 60
MAX_VALIDITY: Final = 300
"""Longest allowed ``expires - created``, in seconds."""
MAX_CLOCK_SKEW: Final = 60
"""How far in the future ``created`` may be, in seconds."""
DEFAULT_NONCE_CACHE_SIZE: Final = 1_000_000
DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}

CONTENT_DIGEST: Final = "Content-Digest"
SIGNATURE_INPUT: Final = "Signature-Input"
SIGNATURE: Final = "Signature"

ResolveKey = Callable[[str], bytes | None]
"""Map a kid to the 32-byte Ed25519 public key it names, or ``None`` if unknown."""

_COMPONENT_LIST = "(" + " ".join(f'"{c}"' for c in COMPONENTS) + ")"
_OWS = " \t"
_NONCE_PATTERN = r"[A-Za-z0-9_-]{21}[AQgw]"  # 16 bytes; the last character's 4 low bits are 0
_KID_PATTERN = r"[a-z2-7]{16}"  # keys.encoding.key_id: lower-case base32 of 10 bytes
_NONCE_RE = re.compile(_NONCE_PATTERN)
_KID_RE = re.compile(_KID_PATTERN)
_FAST_INPUT_RE = re.compile(
    re.escape(f"{LABEL}={_COMPONENT_LIST}")
    + rf";created=([0-9]{{1,15}});expires=([0-9]{{1,15}});nonce=\"({_NONCE_PATTERN})\""
    + rf';keyid="({_KID_PATTERN})";alg="{ALG}";tag="{TAG}"'
)
# 64 bytes: 85 characters, one carrying 2 bits (its 4 low bits 0), then "==".
_FAST_SIGNATURE_RE = re.compile(rf"{LABEL}=:([A-Za-z0-9+/]{{85}}[AQgw]==):")
# RFC 9110 token, for the method.
_METHOD_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# host (reg-name, IPv4, or a bracketed IPv6 literal) and an optional port.
_AUTHORITY_RE = re.compile(
    r"(\[[0-9a-f:.]+\]|[a-z0-9._~!$&'()*+,;=%-]+)(?::([0-9]{0,5}))?", flags=re.ASCII
)
# Visible ASCII; a path has no "?" or "#", a query no "#".
_PATH_RE = re.compile(r"/[\x21\x22\x24-\x3e\x40-\x7e]*")
_QUERY_RE = re.compile(r"[\x21\x22\x24-\x7e]*")


@dataclass(frozen=True, slots=True)
class VerifiedRequest:
    """What a verified request's signature says: who signed it, when, and its nonce."""

    keyid: str
    created: int
    expires: int
    nonce: str


# --------------------------------------------------------------------------- digest


def content_digest(body: bytes) -> str:
    """The ``Content-Digest`` value for ``body`` (RFC 9530): ``sha-256=:<base64>:``."""
    return f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode('ascii')}:"


# --------------------------------------------------------------------------- components


def split_url(url: str) -> tuple[str, str, str]:
    """``(authority, path, query)`` of an absolute http(s)/ws(s) URL, as RFC 9421 derives them.

    The authority is the lower-case host with the port unless it is the scheme's
    default; the path is ``/`` when empty; the query is without its ``?``. The URL must
    be the one that goes on the wire: already percent-encoded, as the HTTP client sends it.
    Raises :class:`EncodingError`.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise EncodingError("the URL's scheme is not http, https, ws or wss")
    if parts.username is not None or parts.password is not None:
        raise EncodingError("the URL must not carry user information")
    host = parts.hostname
    if not host:
        raise EncodingError("the URL has no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise EncodingError("the URL's port is not a number from 0 to 65535") from exc
    if ":" in host:
        host = f"[{host}]"
    authority = host if port is None or port == DEFAULT_PORTS[scheme] else f"{host}:{port}"
    return authority, parts.path or "/", parts.query


def normalize_authority(authority: str, *, scheme: str = "https") -> str:
    """``@authority`` as RFC 9421 derives it: lower case, the scheme's default port dropped.

    Raises :class:`EncodingError` for anything that is not ``host[:port]``.
    """
    value = authority.lower()
    match = _AUTHORITY_RE.fullmatch(value)
    if match is None:
        raise EncodingError("the request's authority is not host[:port] in visible ASCII")
    host, port = match.groups()
    if port is None:
        return value
    if port == "" or int(port) == DEFAULT_PORTS.get(scheme.lower()):
        return host
    if int(port) > 65535:
        raise EncodingError("the request's authority has a port above 65535")
    return f"{host}:{int(port)}"


def _check_components(method: str, authority: str, path: str, query: str) -> None:
    """Refuse values that cannot appear in a signature base (RFC 9421 section 2.5)."""
    if _METHOD_RE.fullmatch(method) is None:
        raise EncodingError("the request's method is not an HTTP token")
    if _AUTHORITY_RE.fullmatch(authority) is None:
        raise EncodingError("the request's authority is not lower-case host[:port]")
    if _PATH_RE.fullmatch(path) is None:
        raise EncodingError(
            "the request's path is not an absolute path of visible ASCII characters"
        )
    if _QUERY_RE.fullmatch(query) is None:
        raise EncodingError("the request's query is not made of visible ASCII characters")


def signature_params(*, created: int, expires: int, nonce: str, keyid: str) -> str:
    """The ``@signature-params`` value: the serialised ``sig1`` inner list and parameters.

    ``nonce`` and ``keyid`` must already be valid (base64url and base32 characters
    only), so no structured-field escaping is needed; the tests check this equals
    ``http_sf``'s serialisation.
    """
    return (
        f'{_COMPONENT_LIST};created={created};expires={expires};nonce="{nonce}"'
        f';keyid="{keyid}";alg="{ALG}";tag="{TAG}"'
    )


def signature_base(
    *,
    method: str,
    authority: str,
    path: str,
    query: str,
    digest: str,
    created: int,
    expires: int,
    nonce: str,
    keyid: str,
) -> bytes:
    """The RFC 9421 signature base for this profile: six lines, no trailing newline.

    ``authority`` must be normalised (see :func:`normalize_authority`) and ``query``
    is without its ``?``. Raises :class:`EncodingError` for values that cannot be signed.
    """
    _check_components(method, authority, path, query)
    if _NONCE_RE.fullmatch(nonce) is None or _KID_RE.fullmatch(keyid) is None:
        raise EncodingError("the nonce or keyid is not of the cpar-v1 profile")
    return _base(method, authority, path, query, digest, created, expires, nonce, keyid)


def _base(
    method: str,
    authority: str,
    path: str,
    query: str,
    digest: str,
    created: int,
    expires: int,
    nonce: str,
    keyid: str,
) -> bytes:
    # One f-string: this runs for every request the relay receives. Its last line is
    # signature_params(), which the tests hold equal to http_sf's serialisation.
    return (
        f'"@method": {method}\n"@authority": {authority}\n"@path": {path}\n'
        f'"@query": ?{query}\n"content-digest": {digest}\n'
        f'"@signature-params": {_COMPONENT_LIST};created={created};expires={expires}'
        f';nonce="{nonce}";keyid="{keyid}";alg="{ALG}";tag="{TAG}"'
    ).encode("ascii")


# --------------------------------------------------------------------------- signing


def sign_request(
    *,
    method: str,
    url: str,
    body: bytes | None,
    kid: str,
    secret_key: bytes,
    now: int,
    nonce: bytes | None = None,
    ttl: int = DEFAULT_TTL,
    body_sha256: bytes | None = None,
) -> dict[str, str]:
    """Sign a request; return the ``Content-Digest``, ``Signature-Input`` and ``Signature``
    headers to add to it.

    ``method`` is sent upper-case (the signature covers the upper-cased method), ``url``
    is the absolute URL exactly as it goes on the wire, ``body`` the exact body bytes
    (``b""`` for none; or ``None`` with ``body_sha256`` for a body streamed from a
    file), ``secret_key`` the 64-byte libsodium Ed25519 secret key whose
    public half ``kid`` names, ``now`` the current Unix time in seconds. ``nonce``
    (16 bytes) is random unless given; ``ttl`` (1 to 300 seconds) sets ``expires``.
    Raises :class:`EncodingError`.
    """
    if len(secret_key) != 64:
        raise EncodingError("the signing key is not a 64-byte Ed25519 secret key")
    if key_id(secret_key[32:]) != kid:
        raise EncodingError("kid does not name the public half of the signing key")
    if not 0 < ttl <= MAX_VALIDITY:
        raise EncodingError(f"ttl must be from 1 to {MAX_VALIDITY} seconds")
    if nonce is None:
        nonce = os.urandom(NONCE_BYTES)
    elif len(nonce) != NONCE_BYTES:
        raise EncodingError(f"the nonce must be {NONCE_BYTES} bytes")
    method = method.upper()
    authority, path, query = split_url(url)
    _check_components(method, authority, path, query)
    if body is not None:
        digest = content_digest(body)
    elif body_sha256 is not None and len(body_sha256) == 32:
        digest = f"sha-256=:{base64.b64encode(body_sha256).decode('ascii')}:"
    else:
        raise EncodingError("sign_request needs the body or its 32-byte SHA-256")
    # Every value here is a token, an integer or a base64url string we produced, so the
    # canonical structured-field serialisation is plain formatting (tested against http-sf).
    params_line = (
        "(" + " ".join(f'"{c}"' for c in COMPONENTS) + ")"
        f';created={now};expires={now + ttl};nonce="{b64e(nonce)}";keyid="{kid}"'
        f';alg="{ALG}";tag="{TAG}"'
    )
    sig_input = f"{LABEL}={params_line}"
    base = (
        f'"@method": {method}\n'
        f'"@authority": {authority}\n'
        f'"@path": {path}\n'
        f'"@query": ?{query}\n'
        f'"content-digest": {digest}\n'
        f'"@signature-params": {params_line}'
    ).encode("ascii")
    signature = ed25519_sign(secret_key, base)
    return {
        CONTENT_DIGEST: digest,
        SIGNATURE_INPUT: sig_input,
        SIGNATURE: f"{LABEL}=:{base64.b64encode(signature).decode('ascii')}:",
    }


# --------------------------------------------------------------------------- parsing


_SIGNATURE_FIELDS: Final = ("signature-input", "signature", "content-digest")


def _signature_fields(headers: Mapping[str, str]) -> list[str | None]:
    """``Signature-Input``, ``Signature`` and ``Content-Digest``, each ``None`` if absent.

    Repeated lines of a field are joined with ``", "`` (RFC 9110 section 5.3), so a
    second signature cannot hide behind the first. A multidict (aiohttp's
    ``CIMultiDictProxy``) is asked with ``getall``; any other mapping is scanned once,
    case-insensitively.
    """
    getall = getattr(headers, "getall", None)
    if getall is not None:
        lines: list[list[str]] = [getall(name, []) for name in _SIGNATURE_FIELDS]
    else:
        found: dict[str, list[str]] = {}
        for name, value in headers.items():
            lower = name.lower()
            if lower in _SIGNATURE_FIELDS:
                found.setdefault(lower, []).append(value)
        lines = [found.get(name, []) for name in _SIGNATURE_FIELDS]
    return [
        None if not values else values[0] if len(values) == 1 else ", ".join(values)
        for values in lines
    ]


def _refuse_input(message: str) -> NoReturn:
    raise BadSignatureInputError(message)


def _parse_dictionary(value: str, what: str) -> dict[str, Any]:
    if not value.isascii():
        _refuse_input(f"the {what} header is not ASCII")

    def duplicate(key: str, context: str) -> None:
        _refuse_input(f"the {what} header repeats the key {key!r}")

    try:
        parsed = http_sf.parse(
            value.encode("ascii"), tltype="dictionary", on_duplicate_key=duplicate
        )
    except ValueError as exc:  # http_sf.StructuredFieldError
        raise BadSignatureInputError(
            f"the {what} header is not a structured-field dictionary"
        ) from exc
    assert isinstance(parsed, dict)
    if list(parsed) != [LABEL]:
        _refuse_input(f"the {what} header must hold exactly one signature, labelled {LABEL}")
    return parsed


def _parse_signature_input(value: str) -> tuple[int, int, str, str]:
    """``(created, expires, nonce, keyid)`` from ``Signature-Input``, or a refusal."""
    value = value.strip(_OWS)
    match = _FAST_INPUT_RE.fullmatch(value)
    if match is not None:
        created, expires, nonce, keyid = match.groups()
        return int(created), int(expires), nonce, keyid
    return _parse_signature_input_slowly(value)


def _parse_signature_input_slowly(value: str) -> tuple[int, int, str, str]:
    member = _parse_dictionary(value, SIGNATURE_INPUT)[LABEL]
    inner, params = member
    if not isinstance(inner, list):
        _refuse_input(f"{SIGNATURE_INPUT} {LABEL} is not an inner list of components")
    names = tuple(
        name if type(name) is str and not item_params else None for name, item_params in inner
    )
    if names != COMPONENTS:
        _refuse_input(f"{SIGNATURE_INPUT} {LABEL} must cover exactly {_COMPONENT_LIST}")
    for name in PARAMETERS:
        if name not in params:
            _refuse_input(f"{SIGNATURE_INPUT} {LABEL} lacks the {name} parameter")
    for name in params:
        if name not in PARAMETERS:
            _refuse_input(f"{SIGNATURE_INPUT} {LABEL} has the unexpected parameter {name}")
    if tuple(params) != PARAMETERS:
        _refuse_input(f"{SIGNATURE_INPUT} parameters are not in the order {', '.join(PARAMETERS)}")
    created, expires = params["created"], params["expires"]
    if type(created) is not int or type(expires) is not int:
        _refuse_input(f"{SIGNATURE_INPUT} created and expires must be integers")
    nonce, keyid, alg, tag = params["nonce"], params["keyid"], params["alg"], params["tag"]
    if alg != ALG or type(alg) is not str:
        _refuse_input(f'{SIGNATURE_INPUT} alg must be "{ALG}"')
    if tag != TAG or type(tag) is not str:
        _refuse_input(f'{SIGNATURE_INPUT} tag must be "{TAG}"')
    if type(nonce) is not str or _NONCE_RE.fullmatch(nonce) is None:
        _refuse_input(f"{SIGNATURE_INPUT} nonce is not unpadded base64url of {NONCE_BYTES} bytes")
    if type(keyid) is not str or _KID_RE.fullmatch(keyid) is None:
        _refuse_input(f"{SIGNATURE_INPUT} keyid is not a 16-character key id")
    return created, expires, nonce, keyid


def _parse_signature(value: str) -> bytes:
    """The 64 signature bytes from ``Signature``, or a refusal."""
    value = value.strip(_OWS)
    match = _FAST_SIGNATURE_RE.fullmatch(value)
    if match is not None:
        return binascii.a2b_base64(match.group(1))
    value_bytes, params = _parse_dictionary(value, SIGNATURE)[LABEL]
    if type(value_bytes) is not bytes or params:
        _refuse_input(f"{SIGNATURE} {LABEL} is not a byte sequence without parameters")
    # One member, no parameters: the value is exactly "sig1=:<base64>:". http_sf
    # tolerates missing padding (as RFC 9651 asks) but also non-zero trailing bits,
    # which would let two texts carry the same signature; refuse those.
    text = value[len(LABEL) + 2 : -1].rstrip("=")
    if base64.b64encode(value_bytes).decode("ascii").rstrip("=") != text:
        _refuse_input(f"{SIGNATURE} {LABEL} is not canonical base64")
    if len(value_bytes) != SIGNATURE_BYTES:
        raise BadRequestSignatureError(f"the request signature is not {SIGNATURE_BYTES} bytes long")
    return value_bytes


# --------------------------------------------------------------------------- nonces


class NonceCache:
    """Remembers each accepted nonce until its signature expires, in bounded memory.

    Entries are grouped in one bucket per ``expires`` second, with a heap of those
    seconds, so a check is a set lookup and an append, and purging pops whole buckets
    in expiry order. Nothing reads a clock: every call takes ``now``. The cache never
    forgets a nonce whose signature could still be valid: ``now`` only moves it
    forward (the horizon), and a signature that expired before the horizon is refused
    outright, even if time seems to go back. When ``max_entries`` unexpired nonces are
    held, new signatures are refused (fail closed) until some expire. Nonces are
    random 128-bit values, so one set serves every key. Not thread-safe: use it from
    one event loop.

    Memory is about 150 bytes per entry (the 22-character nonce string, its set slot
    and its bucket slot): some 150 MB at the default one million entries, which is
    2,700 requests a second sustained over the longest (300 s + 60 s) window.
    """

    __slots__ = ("_buckets", "_expiries", "_horizon", "_max_entries", "_seen")

    def __init__(self, max_entries: int = DEFAULT_NONCE_CACHE_SIZE) -> None:
        if max_entries < 1:
            raise EncodingError("a nonce cache needs max_entries of at least 1")
        self._max_entries = max_entries
        self._seen: set[str] = set()
        self._buckets: dict[int, list[str]] = {}
        self._expiries: list[int] = []  # heap of the keys of _buckets
        self._horizon: int | None = None

    @property
    def max_entries(self) -> int:
        return self._max_entries

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, nonce: object) -> bool:
        return nonce in self._seen

    def purge(self, now: int) -> int:
        """Forget every nonce whose signature expired before ``now``; return how many."""
        if self._horizon is not None and now <= self._horizon:
            return 0
        self._horizon = now
        expiries, buckets, seen = self._expiries, self._buckets, self._seen
        removed = 0
        while expiries and expiries[0] < now:
            bucket = buckets.pop(heapq.heappop(expiries))
            seen.difference_update(bucket)
            removed += len(bucket)
        return removed

    def check_and_remember(self, nonce: str, expires: int, *, now: int) -> None:
        """Remember ``nonce`` until ``expires``, or refuse it.

        Raises :class:`ReplayedNonceError` if it is already held,
        :class:`SignatureExpiredError` if ``expires`` is before the horizon, and
        :class:`NonceCacheFullError` if the cache is full of unexpired nonces.
        """
        self.purge(now)
        if self._horizon is not None and expires < self._horizon:
            raise SignatureExpiredError("the signature expired before the replay cache's horizon")
        seen = self._seen
        if nonce in seen:
            raise ReplayedNonceError("the request's nonce was already used by a valid signature")
        if len(seen) >= self._max_entries:
            raise NonceCacheFullError(
                "the replay cache is full of unexpired nonces, so no new request can be accepted yet"
            )
        seen.add(nonce)
        bucket = self._buckets.get(expires)
        if bucket is None:
            self._buckets[expires] = [nonce]
            heapq.heappush(self._expiries, expires)
        else:
            bucket.append(nonce)


# --------------------------------------------------------------------------- verifying


def verify_request(
    *,
    method: str,
    authority: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes | None,
    resolve_key: ResolveKey,
    nonces: NonceCache,
    now: int,
    scheme: str = "https",
    body_sha256: bytes | None = None,
) -> VerifiedRequest:
    """Check a request's ``cpar-v1`` signature; return what it attests, or refuse.

    ``method`` is the method as received (not normalised); ``authority`` the received
    ``Host`` (lower-cased here, the ``scheme``'s default port dropped); ``path`` the raw,
    still percent-encoded path; ``query`` the raw query string without its ``?`` (``""``
    for none); ``headers`` any mapping, looked up case-insensitively; ``body`` the exact
    bytes received (or ``None`` with ``body_sha256``, the digest of a body the caller
    streamed to disk itself); ``resolve_key`` maps a kid to its 32-byte Ed25519 public key or
    ``None``; ``now`` is the Unix time in seconds. The nonce is remembered only once
    everything else has checked out. Raises a :class:`keys.errors.RequestAuthError`
    subclass, and nothing else but what ``resolve_key`` itself raises.
    """
    sig_input, sig_value, digest = _signature_fields(headers)
    if sig_input is None or sig_value is None or digest is None:
        missing = [
            name
            for name, got in (
                (SIGNATURE_INPUT, sig_input),
                (SIGNATURE, sig_value),
                (CONTENT_DIGEST, digest),
            )
            if got is None
        ]
        raise MissingSignatureError(f"the request has no {' or '.join(missing)} header")
    created, expires, nonce, keyid = _parse_signature_input(sig_input)
    signature = _parse_signature(sig_value)

    if expires <= created:
        raise SignatureExpiredError("the signature expires before it is created")
    if expires - created > MAX_VALIDITY:
        raise SignatureExpiredError(f"the signature is valid for more than {MAX_VALIDITY} seconds")
    if created > now + MAX_CLOCK_SKEW:
        raise SignatureExpiredError(
            f"the signature was created more than {MAX_CLOCK_SKEW} seconds in the future"
        )
    if expires < now:
        raise SignatureExpiredError("the signature has expired")

    try:
        authority = normalize_authority(authority, scheme=scheme)
        if not path:
            path = "/"
        _check_components(method, authority, path, query)
    except EncodingError as exc:
        raise BadRequestSignatureError(f"{exc}, so no signature can cover it") from exc

    if body is not None:
        expected_digest = content_digest(body)
    elif body_sha256 is not None and len(body_sha256) == 32:
        expected_digest = f"sha-256=:{base64.b64encode(body_sha256).decode('ascii')}:"
    else:
        raise ValueError("verify_request needs body or a 32-byte body_sha256")
    if digest.strip(_OWS) != expected_digest:
        raise DigestMismatchError("the Content-Digest header is not the SHA-256 of the body")

    public_key = resolve_key(keyid)
    if public_key is None:
        raise UnknownRequestKeyError(f"the request is signed with the unknown key {keyid}")
    base = _base(method, authority, path, query, expected_digest, created, expires, nonce, keyid)
    if not ed25519_verify(public_key, base, signature):
        raise BadRequestSignatureError("the request signature does not verify")

    nonces.check_and_remember(nonce, expires, now=now)
    return VerifiedRequest(keyid=keyid, created=created, expires=expires, nonce=nonce)
