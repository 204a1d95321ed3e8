"""Signed HTTP requests (RFC 9421 + RFC 9530, profile cpar-v1): real Ed25519, no mocks."""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping

import http_sf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keys import httpsig
from keys.encoding import b64e, key_id
from keys.errors import (
    BadRequestSignatureError,
    BadSignatureInputError,
    DigestMismatchError,
    EncodingError,
    KeysError,
    MissingSignatureError,
    NonceCacheFullError,
    ReplayedNonceError,
    RequestAuthError,
    SignatureExpiredError,
    UnknownRequestKeyError,
)
from keys.httpsig import (
    NonceCache,
    VerifiedRequest,
    content_digest,
    sign_request,
    signature_base,
    signature_params,
    split_url,
    verify_request,
)
from keys.identity import SigningKey

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z, in seconds
KEY = SigningKey(seed=bytes(range(32)), nbf=0, exp=2**40)
OTHER = SigningKey(seed=bytes(range(1, 33)), nbf=0, exp=2**40)
KEYS = {KEY.kid: KEY.public, OTHER.kid: OTHER.public}
NONCE = bytes(range(16))
URL = "https://relay.example.org/v1/messages?limit=10&after=0"
BODY = b'{"hello":"world"}'
TARGET = {
    "method": "POST",
    "authority": "relay.example.org",
    "path": "/v1/messages",
    "query": "limit=10&after=0",
}

# The worked example for docs/PROTOCOL.md, derived by hand from RFC 9421 section 2.
# kid = key_id(public key of seed 00 01 .. 1f); nonce = b64url(00 01 .. 0f);
# digest = base64(SHA-256(b'{"hello":"world"}')).
EXAMPLE_BASE = (
    '"@method": POST\n'
    '"@authority": relay.example.org\n'
    '"@path": /v1/messages\n'
    '"@query": ?limit=10&after=0\n'
    '"content-digest": sha-256=:k6I5cakU5erL8KjSUVTNownDwccvu5kU1Hxg88toFYg=:\n'
    '"@signature-params": ("@method" "@authority" "@path" "@query" "content-digest")'
    ';created=1767225600;expires=1767225660;nonce="AAECAwQFBgcICQoLDA0ODw"'
    ';keyid="kzdvvj2umnduyauf";alg="ed25519";tag="cpar-v1"'
)
EXAMPLE_HEADERS = {
    "Content-Digest": "sha-256=:k6I5cakU5erL8KjSUVTNownDwccvu5kU1Hxg88toFYg=:",
    "Signature-Input": (
        'sig1=("@method" "@authority" "@path" "@query" "content-digest")'
        ';created=1767225600;expires=1767225660;nonce="AAECAwQFBgcICQoLDA0ODw"'
        ';keyid="kzdvvj2umnduyauf";alg="ed25519";tag="cpar-v1"'
    ),
    "Signature": (
        "sig1=:eooNOe5TGTSQuCEN9kHDDf2LehObdg+bflEUqQZE4fJNLi+07oiJ0Ftpr1ddHNEiLLFe"
        "cazmreRZeJCSFY77Bg==:"
    ),
}


def _sign(
    *,
    method: str = "POST",
    url: str = URL,
    body: bytes = BODY,
    key: SigningKey = KEY,
    now: int = NOW,
    nonce: bytes | None = NONCE,
    ttl: int = 60,
) -> dict[str, str]:
    return sign_request(
        method=method,
        url=url,
        body=body,
        kid=key.kid,
        secret_key=key.secret,
        now=now,
        nonce=nonce,
        ttl=ttl,
    )


def _verify(
    headers: Mapping[str, str],
    *,
    body: bytes = BODY,
    now: int = NOW + 1,
    nonces: NonceCache | None = None,
    keys: Mapping[str, bytes] = KEYS,
    target: Mapping[str, str] | None = None,
    **changes: str,
) -> VerifiedRequest:
    fields = {**TARGET, **(target or {}), **changes}
    return verify_request(
        method=fields["method"],
        authority=fields["authority"],
        path=fields["path"],
        query=fields["query"],
        headers=headers,
        body=body,
        resolve_key=keys.get,
        nonces=NonceCache() if nonces is None else nonces,
        now=now,
    )


def _with(headers: Mapping[str, str], **changes: str) -> dict[str, str]:
    out = dict(headers)
    for name, value in changes.items():
        out[name.replace("_", "-")] = value
    return out


def _input_with(old: str, new: str) -> dict[str, str]:
    headers = _sign()
    assert old in headers["Signature-Input"]
    return _with(headers, Signature_Input=headers["Signature-Input"].replace(old, new))


# ----------------------------------------------------------------------- round trips


def test_round_trip() -> None:
    verified = _verify(_sign())
    assert verified == VerifiedRequest(
        keyid=KEY.kid, created=NOW, expires=NOW + 60, nonce="AAECAwQFBgcICQoLDA0ODw"
    )


def test_round_trip_empty_body_websocket_upgrade() -> None:
    headers = _sign(method="get", url="wss://Relay.Example.org:443/v1/ws", body=b"", nonce=None)
    assert headers["Content-Digest"] == "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"
    verified = _verify(
        headers, method="GET", authority="Relay.Example.org", path="/v1/ws", query="", body=b""
    )
    assert verified.keyid == KEY.kid
    assert len(base64.urlsafe_b64decode(verified.nonce + "==")) == 16


def test_round_trip_non_default_port_and_lowercase_header_names() -> None:
    headers = _sign(url="http://127.0.0.1:8080/v1/x", body=b"abc")
    lower = {k.lower(): v for k, v in headers.items()}
    _verify(lower, authority="127.0.0.1:8080", path="/v1/x", query="", body=b"abc")


def test_default_port_in_host_header_is_dropped() -> None:
    headers = _sign()
    _verify(headers, authority="relay.example.org:443")
    with pytest.raises(BadRequestSignatureError):
        _verify(_sign(nonce=None), authority="relay.example.org:8443")


def test_example_signature_base_and_headers() -> None:
    base = signature_base(
        method="POST",
        authority="relay.example.org",
        path="/v1/messages",
        query="limit=10&after=0",
        digest=content_digest(BODY),
        created=NOW,
        expires=NOW + 60,
        nonce=b64e(NONCE),
        keyid=KEY.kid,
    )
    assert base.decode("ascii") == EXAMPLE_BASE
    assert KEY.kid == "kzdvvj2umnduyauf"
    assert _sign() == EXAMPLE_HEADERS
    assert KEY.sign(EXAMPLE_BASE.encode()) == base64.b64decode(EXAMPLE_HEADERS["Signature"][6:-1])


def test_content_digest_rfc9530_example() -> None:
    # RFC 9530 section 2, the example body {"hello": "world"}.
    assert content_digest(b'{"hello": "world"}') == (
        "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    )


@settings(max_examples=200, deadline=None)
@given(
    created=st.integers(min_value=0, max_value=10**12),
    ttl=st.integers(min_value=1, max_value=300),
    nonce=st.binary(min_size=16, max_size=16),
    pk=st.binary(min_size=32, max_size=32),
)
def test_signature_params_template_equals_http_sf_serialisation(
    created: int, ttl: int, nonce: bytes, pk: bytes
) -> None:
    kid = key_id(pk)
    params: dict[str, http_sf.types.BareItemType] = {
        "created": created,
        "expires": created + ttl,
        "nonce": b64e(nonce),
        "keyid": kid,
        "alg": "ed25519",
        "tag": "cpar-v1",
    }
    components: list[http_sf.ItemType] = [(c, {}) for c in httpsig.COMPONENTS]
    serialised = http_sf.ser({"sig1": (components, params)})
    templated = signature_params(
        created=created, expires=created + ttl, nonce=b64e(nonce), keyid=kid
    )
    assert serialised == "sig1=" + templated
    base = signature_base(
        method="GET",
        authority="relay.example.org",
        path="/",
        query="",
        digest=content_digest(b""),
        created=created,
        expires=created + ttl,
        nonce=b64e(nonce),
        keyid=kid,
    )
    assert base.decode("ascii").endswith('\n"@signature-params": ' + templated)
    # The hot path's regular expression and the full http_sf parse agree.
    fast = httpsig._parse_signature_input(serialised)
    assert fast == httpsig._parse_signature_input_slowly(serialised)
    assert fast == (created, created + ttl, b64e(nonce), kid)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://relay.example.org/a?b=c", ("relay.example.org", "/a", "b=c")),
        ("HTTPS://Relay.EXAMPLE.org:443", ("relay.example.org", "/", "")),
        ("http://relay.example.org:80/?", ("relay.example.org", "/", "")),
        ("http://relay.example.org:443/", ("relay.example.org:443", "/", "")),
        ("wss://relay.example.org:8443/ws", ("relay.example.org:8443", "/ws", "")),
        ("ws://[::1]:8080/ws?x=%20y#frag", ("[::1]:8080", "/ws", "x=%20y")),
        ("https://relay.example.org/a%2Fb/../c", ("relay.example.org", "/a%2Fb/../c", "")),
    ],
)
def test_split_url(url: str, expected: tuple[str, str, str]) -> None:
    assert split_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "ftp://relay.example.org/",
        "https://user:pw@relay.example.org/",
        "https:///path",
        "https://relay.example.org:99999/",
        "/relative/path",
    ],
)
def test_split_url_refuses(url: str) -> None:
    with pytest.raises(EncodingError):
        split_url(url)


def test_signer_refuses_bad_input() -> None:
    with pytest.raises(EncodingError, match="kid"):
        sign_request(method="GET", url=URL, body=b"", kid=OTHER.kid, secret_key=KEY.secret, now=NOW)
    with pytest.raises(EncodingError, match="64-byte"):
        sign_request(method="GET", url=URL, body=b"", kid=KEY.kid, secret_key=KEY.seed, now=NOW)
    with pytest.raises(EncodingError, match="ttl"):
        _sign(ttl=301)
    with pytest.raises(EncodingError, match="ttl"):
        _sign(ttl=0)
    with pytest.raises(EncodingError, match="nonce"):
        _sign(nonce=b"short")
    with pytest.raises(EncodingError, match="method"):
        _sign(method="GE T")
    with pytest.raises(EncodingError, match="path"):
        _sign(url="https://relay.example.org/caf\u00e9")


# ----------------------------------------------------------------------- refusals


@pytest.mark.parametrize("name", ["Signature", "Signature-Input", "Content-Digest"])
def test_missing_header(name: str) -> None:
    headers = _sign()
    del headers[name]
    with pytest.raises(MissingSignatureError, match=name) as info:
        _verify(headers)
    assert info.value.code == "missing_signature"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Signature-Input", "sig1=(("),
        ("Signature-Input", 'sig1=("@method");created=1'),
        ("Signature-Input", "sig1=caf\u00e9"),
        ("Signature", "sig1=:not base64:"),
        ("Signature", "sig1=abc"),
        ("Signature", 'sig1="text"'),
        ("Signature", "sig2=:" + "A" * 86 + "==:"),
    ],
)
def test_unparseable_or_foreign_headers(header: str, value: str) -> None:
    with pytest.raises(BadSignatureInputError) as info:
        _verify(_with(_sign(), **{header.replace("-", "_"): value}))
    assert info.value.code == "bad_signature_input"


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("sig1=", "sig2=", "exactly one signature"),
        ('"@query" "content-digest"', '"content-digest" "@query"', "must cover exactly"),
        ('"@query" "content-digest"', '"@query"', "must cover exactly"),
        ('"@query" "content-digest"', '"@query" "content-digest" "date"', "must cover exactly"),
        ('"@method"', '"@method";req', "must cover exactly"),
        ('"@method"', "method", "must cover exactly"),
        ('alg="ed25519"', 'alg="rsa-pss-sha512"', "alg"),
        ('alg="ed25519"', "alg=ed25519", "alg"),
        ('tag="cpar-v1"', 'tag="cpar-v2"', "tag"),
        (';tag="cpar-v1"', "", "lacks the tag"),
        (";created=1767225600", "", "lacks the created"),
        ('tag="cpar-v1"', 'tag="cpar-v1";extra=1', "unexpected parameter"),
        (
            'alg="ed25519";tag="cpar-v1"',
            'tag="cpar-v1";alg="ed25519"',
            "not in the order",
        ),
        ("created=1767225600", "created=1767225600.0", "integers"),
        ("created=1767225600", 'created="1767225600"', "integers"),
        ("created=1767225600", "created=?1", "integers"),
        ('nonce="AAECAwQFBgcICQoLDA0ODw"', 'nonce="AAECAwQFBgcICQoLDA0ODx"', "nonce"),
        ('nonce="AAECAwQFBgcICQoLDA0ODw"', 'nonce="AAECAwQFBgcICQoLDA0ODw=="', "nonce"),
        ('nonce="AAECAwQFBgcICQoLDA0ODw"', 'nonce="AAECAwQFBgcICQoLDA0O"', "nonce"),
        ('keyid="kzdvvj2umnduyauf"', 'keyid="KZDVVJ2UMNDUYAUF"', "keyid"),
        ('keyid="kzdvvj2umnduyauf"', 'keyid="kzdvvj2umnduyau"', "keyid"),
        ('keyid="kzdvvj2umnduyauf"', 'keyid="kzdvvj2umnduyauf";keyid="x"', "repeats"),
    ],
)
def test_bad_signature_input(old: str, new: str, match: str) -> None:
    with pytest.raises(BadSignatureInputError, match=match) as info:
        _verify(_input_with(old, new))
    assert info.value.code == "bad_signature_input"


def test_second_signature_is_refused() -> None:
    headers = _sign()
    other = _sign(key=OTHER, nonce=None)
    two = _with(
        headers,
        Signature_Input=headers["Signature-Input"]
        + ", "
        + other["Signature-Input"].replace("sig1=", "sig2="),
        Signature=headers["Signature"] + ", " + other["Signature"].replace("sig1=", "sig2="),
    )
    with pytest.raises(BadSignatureInputError, match="exactly one"):
        _verify(two)


class _MultiHeaders(Mapping[str, str]):
    """A minimal case-insensitive multidict, shaped like aiohttp's CIMultiDictProxy."""

    def __init__(self, lines: list[tuple[str, str]]) -> None:
        self._lines = lines

    def __getitem__(self, key: str) -> str:
        for k, v in self._lines:
            if k.lower() == key.lower():
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(k for k, _ in self._lines)

    def __len__(self) -> int:
        return len(self._lines)

    def getall(self, key: str, default: list[str]) -> list[str]:
        found = [v for k, v in self._lines if k.lower() == key.lower()]
        return found or default


def test_repeated_header_lines_are_all_seen() -> None:
    headers = _sign()
    lines = list(headers.items())
    _verify(_MultiHeaders(lines))
    # A second Signature-Input line with the same label is a duplicate key.
    with pytest.raises(BadSignatureInputError, match="repeats"):
        _verify(_MultiHeaders([*lines, ("signature-input", headers["Signature-Input"])]))
    # The same for a plain dict whose keys differ only in case.
    with pytest.raises(BadSignatureInputError, match="repeats"):
        _verify({**headers, "signature": headers["Signature"]})
    # Two Content-Digest lines are not the one expected value.
    with pytest.raises(DigestMismatchError):
        _verify(_MultiHeaders([*lines, ("content-digest", headers["Content-Digest"])]))


def test_equivalent_structured_field_spelling_is_accepted() -> None:
    headers = _sign()
    spaced = headers["Signature-Input"].replace(";", "; ").replace('" "', '"  "')
    unpadded = headers["Signature"].replace("==:", ":")
    _verify(_with(headers, Signature_Input=f" {spaced}\t", Signature=f"{unpadded} "))


def test_non_canonical_base64_in_signature_is_refused() -> None:
    # The last data character "g" carries 2 bits; "h" differs only in the 4 unused
    # bits, so a lenient decoder reads the same 64 bytes from both.
    value = EXAMPLE_HEADERS["Signature"]
    assert value.endswith("Bg==:")
    lenient = value[:-4] + "h==:"
    assert base64.b64decode(lenient[6:-1]) == base64.b64decode(value[6:-1])
    with pytest.raises(BadSignatureInputError, match="canonical"):
        _verify(_with(EXAMPLE_HEADERS, Signature=lenient))


def test_wrong_signature_length() -> None:
    short = "sig1=:" + base64.b64encode(bytes(63)).decode() + ":"
    with pytest.raises(BadRequestSignatureError, match="64 bytes") as info:
        _verify(_with(_sign(), Signature=short))
    assert info.value.code == "bad_request_signature"


def test_created_in_the_future() -> None:
    _verify(_sign(now=NOW + 60), now=NOW)  # exactly the allowed skew
    with pytest.raises(SignatureExpiredError, match="future") as info:
        _verify(_sign(now=NOW + 61), now=NOW)
    assert info.value.code == "signature_expired"


def test_expired() -> None:
    _verify(_sign(ttl=60), now=NOW + 60)  # valid up to and including expires
    with pytest.raises(SignatureExpiredError, match="expired"):
        _verify(_sign(ttl=60), now=NOW + 61)


def test_validity_window_too_long_or_empty() -> None:
    with pytest.raises(SignatureExpiredError, match="more than 300"):
        _verify(_input_with("expires=1767225660", "expires=1767225901"))
    with pytest.raises(SignatureExpiredError, match="before it is created"):
        _verify(_input_with("expires=1767225660", "expires=1767225600"))


def test_replayed_nonce() -> None:
    headers = _sign()
    cache = NonceCache()
    _verify(headers, nonces=cache)
    with pytest.raises(ReplayedNonceError) as info:
        _verify(headers, nonces=cache, now=NOW + 30)
    assert info.value.code == "replayed_nonce"
    # A different request reusing the nonce is refused too.
    with pytest.raises(ReplayedNonceError):
        _verify(_sign(body=b"other", now=NOW + 1), body=b"other", nonces=cache, now=NOW + 30)


def test_unknown_key() -> None:
    with pytest.raises(UnknownRequestKeyError, match=KEY.kid) as info:
        _verify(_sign(), keys={OTHER.kid: OTHER.public})
    assert info.value.code == "unknown_key"


def test_digest_mismatch() -> None:
    with pytest.raises(DigestMismatchError) as info:
        _verify(_sign(), body=BODY + b" ")
    assert info.value.code == "digest_mismatch"
    with pytest.raises(DigestMismatchError):
        _verify(_with(_sign(), Content_Digest="sha-512=:" + "A" * 88 + ":"))


def test_bad_signature() -> None:
    headers = _sign()
    raw = bytearray(base64.b64decode(headers["Signature"][6:-1]))
    raw[10] ^= 1
    flipped = _with(headers, Signature="sig1=:" + base64.b64encode(bytes(raw)).decode() + ":")
    with pytest.raises(BadRequestSignatureError, match="does not verify") as info:
        _verify(flipped)
    assert info.value.code == "bad_request_signature"


def test_signed_by_another_key_under_this_kid() -> None:
    forged = _sign(key=OTHER)
    forged["Signature-Input"] = forged["Signature-Input"].replace(OTHER.kid, KEY.kid)
    with pytest.raises(BadRequestSignatureError, match="does not verify"):
        _verify(forged)


def test_tampered_body_header_pair() -> None:
    """Swapping in a matching Content-Digest for a new body breaks the signature."""
    headers = _with(_sign(), Content_Digest=content_digest(b"evil"))
    with pytest.raises(BadRequestSignatureError):
        _verify(headers, body=b"evil")


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ({"method": "PUT"}, BadRequestSignatureError),
        ({"method": "post"}, BadRequestSignatureError),
        ({"authority": "other.example.org"}, BadRequestSignatureError),
        ({"authority": "relay.example.org:8443"}, BadRequestSignatureError),
        ({"path": "/v1/messages/"}, BadRequestSignatureError),
        ({"path": "/v1/Messages"}, BadRequestSignatureError),
        ({"query": "limit=11&after=0"}, BadRequestSignatureError),
        ({"query": ""}, BadRequestSignatureError),
    ],
)
def test_tampered_request_target(target: dict[str, str], error: type[RequestAuthError]) -> None:
    with pytest.raises(error):
        _verify(_sign(), target=target)


@pytest.mark.parametrize(
    "target",
    [
        {"method": "PO ST"},
        {"method": ""},
        {"authority": "relay.example.org:99999999999999999999"},
        {"authority": "relay.example.org:70000"},
        {"authority": "user@relay.example.org"},
        {"authority": "relay.example.org\n"},
        {"path": "/v1/caf\u00e9"},
        {"path": "v1/messages"},
        {"path": "/v1/x\udcff"},
        {"query": "a b"},
    ],
)
def test_unsignable_request_target(target: dict[str, str]) -> None:
    with pytest.raises(BadRequestSignatureError, match="no signature can cover it"):
        _verify(_sign(), target=target)


def test_error_codes_are_stable() -> None:
    codes = {
        MissingSignatureError: "missing_signature",
        BadSignatureInputError: "bad_signature_input",
        SignatureExpiredError: "signature_expired",
        ReplayedNonceError: "replayed_nonce",
        NonceCacheFullError: "nonce_cache_full",
        UnknownRequestKeyError: "unknown_key",
        DigestMismatchError: "digest_mismatch",
        BadRequestSignatureError: "bad_request_signature",
    }
    for cls, code in codes.items():
        assert issubclass(cls, RequestAuthError)
        assert issubclass(cls, KeysError)
        assert cls.code == code


# ----------------------------------------------------------------------- nonce cache


def test_refused_requests_do_not_consume_nonces() -> None:
    headers = _sign()
    cache = NonceCache(max_entries=1)
    forged = _with(headers, Signature="sig1=:" + base64.b64encode(bytes(64)).decode() + ":")
    with pytest.raises(BadRequestSignatureError):
        _verify(forged, nonces=cache)
    with pytest.raises(DigestMismatchError):
        _verify(headers, nonces=cache, body=b"tampered")
    assert len(cache) == 0
    _verify(headers, nonces=cache)
    assert "AAECAwQFBgcICQoLDA0ODw" in cache


def test_nonce_cache_purges_expired_entries() -> None:
    cache = NonceCache(max_entries=100)
    for i in range(10):
        cache.check_and_remember(f"n{i}", NOW + i, now=NOW)
    assert len(cache) == 10
    assert cache.purge(NOW + 5) == 5  # expires NOW..NOW+4 are gone
    assert len(cache) == 5
    assert "n4" not in cache
    assert "n5" in cache  # valid up to and including its expires
    assert cache.purge(NOW + 5) == 0
    assert cache.purge(NOW + 100) == 5
    assert len(cache) == 0


def test_nonce_cache_memory_stays_bounded() -> None:
    cache = NonceCache(max_entries=50)
    for t in range(NOW, NOW + 2000):
        for j in range(5):
            cache.check_and_remember(f"{t}-{j}", t + 9, now=t)  # at most 10 s x 5 live
        assert len(cache) <= 50
    assert len(cache._buckets) <= 10
    assert len(cache._expiries) <= 10


def test_nonce_cache_full_fails_closed() -> None:
    cache = NonceCache(max_entries=3)
    for i in range(3):
        cache.check_and_remember(f"n{i}", NOW + 60, now=NOW)
    with pytest.raises(NonceCacheFullError) as info:
        cache.check_and_remember("n3", NOW + 60, now=NOW + 10)
    assert info.value.code == "nonce_cache_full"
    with pytest.raises(ReplayedNonceError):  # a replay is still called a replay
        cache.check_and_remember("n0", NOW + 60, now=NOW + 10)
    cache.check_and_remember("n3", NOW + 120, now=NOW + 61)  # the others expired
    assert len(cache) == 1


def test_nonce_cache_full_through_verify() -> None:
    cache = NonceCache(max_entries=1)
    _verify(_sign(nonce=None), nonces=cache)
    with pytest.raises(NonceCacheFullError):
        _verify(_sign(nonce=None), nonces=cache)


def test_nonce_cache_never_forgets_a_still_valid_nonce_when_time_goes_back() -> None:
    cache = NonceCache()
    cache.check_and_remember("n", NOW + 60, now=NOW)
    cache.purge(NOW + 61)
    assert "n" not in cache
    # The clock jumps back: the signature would look valid again, but it is behind
    # the horizon, so it is refused rather than accepted a second time.
    with pytest.raises(SignatureExpiredError, match="horizon"):
        cache.check_and_remember("n", NOW + 60, now=NOW + 30)


def test_nonce_cache_needs_room() -> None:
    with pytest.raises(EncodingError, match="at least 1"):
        NonceCache(max_entries=0)
    assert NonceCache().max_entries == 1_000_000


# ----------------------------------------------------------------------- properties

SIGNED = _sign()
_TRICKY = st.sampled_from(list(' \t\n\r,;=:"\\()0123456789AQgwBaz+/_-*?\x00\x7f\u00e9\udcff'))


@settings(max_examples=600, deadline=None)
@given(
    header=st.sampled_from(["Signature-Input", "Signature", "Content-Digest"]),
    index=st.integers(min_value=0),
    char=st.one_of(_TRICKY, st.characters()),
)
def test_any_single_character_change_is_refused(header: str, index: int, char: str) -> None:
    value = SIGNED[header]
    i = index % len(value)
    if value[i] == char:
        char = "A" if char != "A" else "B"
    tampered = {**SIGNED, header: value[:i] + char + value[i + 1 :]}
    try:
        _verify(tampered)
    except RequestAuthError:
        return
    raise AssertionError(f"{header} character {i} changed to {char!r} was accepted")


def test_the_untampered_property_fixture_verifies() -> None:
    _verify(SIGNED)


def test_every_single_ascii_substitution_is_refused() -> None:
    """Exhaustive: each position of each header, each visible ASCII character, SP and HTAB."""
    alphabet = [chr(c) for c in range(0x20, 0x7F)] + ["\t"]
    accepted = []
    for header in ("Signature-Input", "Signature", "Content-Digest"):
        value = SIGNED[header]
        for i, original in enumerate(value):
            for char in alphabet:
                if char == original:
                    continue
                tampered = {**SIGNED, header: value[:i] + char + value[i + 1 :]}
                try:
                    _verify(tampered)
                except RequestAuthError:
                    continue
                accepted.append((header, i, char))
    assert accepted == []
