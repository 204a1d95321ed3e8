"""Every bad input the relay can get: a 4xx problem+json (RFC 9457), never a 5xx, no data lost.

Each refusal test ends with :func:`assert_intact`: a fresh message still goes through,
and every message accepted earlier is still in its sender's timeline and in the
recipient's queue. Requests RelayClient cannot produce are sent raw, signed with
``keys.httpsig.sign_request`` (or deliberately not).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from clients.errors import NotFoundError, RelayProblem
from keys.attachments import decrypt_stream, encrypt_stream
from keys.encoding import b64e, dumps, uuid7
from keys.envelope import SealedEnvelope, open_envelope, seal
from keys.httpsig import sign_request
from keys.identity import Identity
from keys.jws import sign_compact
from keys.models import AttachmentManifestEntry
from keys.receipts import sign_receipt, verify_receipt
from relay.settings import RelaySettings
from tests.netfixture import NOW, Network
from tests.relayfixture import FakeClock, RelayEnv, start_relay

NOTICE = {"kind": "free_text", "text": "refusal test"}
PROBLEM_MEMBERS = {"type", "title", "status", "detail", "code"}


# --- helpers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def assert_problem(reply: Reply, status: int, *codes: str) -> dict[str, Any]:
    """An RFC 9457 problem document with a stable code (one of ``codes`` if given)."""
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.content_type == "application/problem+json", reply.content_type
    body = reply.json()
    assert isinstance(body, dict) and set(body) >= PROBLEM_MEMBERS, body
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["code"], str) and body["code"]
    assert body["type"] == f"urn:cpar:problem:{body['code']}"
    if codes:
        assert body["code"] in codes, body
    return body


def seal_to(
    env: RelayEnv,
    sender: str = "it-tpc",
    to: tuple[str, ...] = ("fr-oclcc",),
    net: Network | None = None,
    **kw: Any,
) -> SealedEnvelope:
    net = net or env.net
    kw.setdefault("content", NOTICE)
    return seal(net[sender], net.directory, to=list(to), now=env.clock(), **kw)


def signed_headers(
    env: RelayEnv,
    method: str,
    url: str,
    body: bytes | None,
    *,
    ident: Identity | None = None,
    body_sha256: bytes | None = None,
) -> dict[str, str]:
    ident = ident or env.net["it-tpc"]
    key = ident.signing_key(env.clock())
    return sign_request(
        method=method,
        url=url,
        body=body,
        body_sha256=body_sha256,
        kid=key.kid,
        secret_key=key.secret,
        now=env.clock() // 1000,
    )


async def send_raw(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> Reply:
    async with http.request(method, url, data=body, headers=headers or {}) as resp:
        return Reply(resp.status, resp.content_type, dict(resp.headers), await resp.read())


async def signed_raw(
    env: RelayEnv,
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    ident: Identity | None = None,
) -> Reply:
    url = env.base_url + path
    headers = signed_headers(env, method, url, body, ident=ident)
    if body:
        headers["Content-Type"] = "application/json"
    return await send_raw(http, method, url, body, headers)


async def assert_intact(env: RelayEnv, earlier: list[SealedEnvelope]) -> None:
    """No accepted data lost: a new message goes through, earlier ones are still there."""
    sender = env.client("it-tpc")
    fresh = seal_to(env)
    result = await sender.send(fresh.token)
    assert result.id == fresh.id and not result.duplicate
    queued = {i.id: i for i in await env.client("fr-oclcc").poll(limit=500)}
    for msg in [*earlier, fresh]:
        timeline = await sender.timeline(msg.id)
        assert timeline.envelope_hash == msg.hash
        assert queued[msg.id].envelope == msg.token


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def accepted(relay: RelayEnv) -> list[SealedEnvelope]:
    """One message accepted before the bad request under test."""
    msg = seal_to(relay)
    result = await relay.client("it-tpc").send(msg.token)
    assert not result.duplicate
    return [msg]


def _tamper(segment: str, index: int = 10) -> str:
    """Change one base64url character in the middle of a segment (still canonical)."""
    ch = segment[index]
    return segment[:index] + ("B" if ch == "A" else "A") + segment[index + 1 :]


def tamper_payload(token: str) -> str:
    head, payload, sig = token.split(".")
    return f"{head}.{_tamper(payload)}.{sig}"


def tamper_signature(token: str) -> str:
    head, payload, sig = token.split(".")
    return f"{head}.{payload}.{_tamper(sig)}"


# --- request bodies for POST /v1/messages -----------------------------------------------

BAD_SUBMIT_BODIES = {
    "not-json": b"{not json",
    "truncated-json": b'{"envelope": "x"',
    "empty-body": b"",
    "invalid-utf8": b'{"envelope": "\xff\xfe"}',
    "deeply-nested-json": b"[" * 100_000 + b"]" * 100_000,
    "json-array": b"[1]",
    "json-string": b'"x"',
    "json-null": b"null",
    "json-number": b"42",
    "envelope-int": b'{"envelope": 5}',
    "envelope-null": b'{"envelope": null}',
    "envelope-list": b'{"envelope": ["a.b.c"]}',
    "envelopes-string": b'{"envelopes": "x"}',
    "envelopes-empty": b'{"envelopes": []}',
    "envelopes-ints": b'{"envelopes": [1]}',
    "envelopes-mixed": b'{"envelopes": ["a.b.c", 1]}',
    "envelopes-object": b'{"envelopes": {"a": "b"}}',
    "both-keys": b'{"envelope": "a.b.c", "envelopes": ["a.b.c"]}',
    "unknown-fields-only": b'{"message": "a.b.c", "extra": 1}',
    "empty-object": b"{}",
    "not-a-jws": b'{"envelope": "hello"}',
    "jws-bad-base64": b'{"envelope": "a.b.c"}',
    "non-ascii-token": '{"envelope": "\u00e9.\u00e9.\u00e9"}'.encode(),
    "lone-surrogate-token": b'{"envelope": "\\ud800.\\udfff.x"}',
}


@pytest.mark.parametrize("body", BAD_SUBMIT_BODIES.values(), ids=BAD_SUBMIT_BODIES.keys())
async def test_malformed_submit_body_is_400(
    relay: RelayEnv, http: aiohttp.ClientSession, accepted: list[SealedEnvelope], body: bytes
) -> None:
    reply = await signed_raw(relay, http, "POST", "/v1/messages", body)
    assert_problem(reply, 400, "malformed")
    await assert_intact(relay, accepted)


async def test_batch_of_bad_tokens_reports_each_one(
    relay: RelayEnv, http: aiohttp.ClientSession, accepted: list[SealedEnvelope]
) -> None:
    body = json.dumps({"envelopes": ["hello", "a.b.c", ""]}).encode()
    reply = await signed_raw(relay, http, "POST", "/v1/messages", body)
    assert reply.status == 200
    results = reply.json()["results"]
    assert len(results) == 3
    for item in results:
        assert item["problem"]["status"] == 400 and item["problem"]["code"] == "malformed"
    await assert_intact(relay, accepted)


def _big_header_token(env: RelayEnv, n_to: int) -> str:
    """A correctly signed envelope whose header names ``n_to`` recipients."""
    ident = env.net["it-tpc"]
    key = ident.signing_key(env.clock())
    names = [f"zz-{i:03d}" for i in range(n_to)]
    wk = b64e(bytes(80))
    header = {
        "alg": "Ed25519",
        "typ": "cpar-envelope+jws",
        "kid": key.kid,
        "v": 1,
        "id": uuid7(ms=env.clock()),
        "from": "it-tpc",
        "to": names,
        "created": env.clock(),
        "expires": env.clock() + 3_600_000,
        "prio": "routine",
        "rcpt": [{"aid": a, "kid": "a" * 16, "role": "to", "wk": wk} for a in names],
    }
    return sign_compact(dumps(header), bytes(64), key.secret)


async def test_too_many_recipients_is_refused(
    relay: RelayEnv, accepted: list[SealedEnvelope]
) -> None:
    with pytest.raises(RelayProblem) as err:
        await relay.client("it-tpc").send(_big_header_token(relay, 65))
    assert err.value.status == 400 and err.value.code == "malformed"
    assert "to" in err.value.detail
    await assert_intact(relay, accepted)


async def test_batch_over_max_batch_is_400(relay: RelayEnv, accepted: list[SealedEnvelope]) -> None:
    too_many = [accepted[0].token] * (relay.settings.max_batch + 1)
    with pytest.raises(RelayProblem) as err:
        await relay.client("it-tpc").send_batch(too_many)
    assert err.value.status == 400 and err.value.code == "malformed"
    # Exactly max_batch is fine (all duplicates of the accepted message).
    results = await relay.client("it-tpc").send_batch(too_many[:-1])
    assert all(not isinstance(r, RelayProblem) and r.duplicate for r in results)
    await assert_intact(relay, accepted)


# --- oversized bodies -------------------------------------------------------------------


@pytest.fixture
def small_settings(relay_settings: RelaySettings) -> RelaySettings:
    return RelaySettings(
        **{
            **relay_settings.model_dump(),
            "max_body_bytes": 64 * 1024,
            "max_attachment_bytes": 32 * 1024,
            "max_batch": 3,
        }
    )


@pytest.fixture
async def small_relay(small_settings: RelaySettings, net: Network) -> AsyncIterator[RelayEnv]:
    env = RelayEnv(net=net, settings=small_settings, clock=FakeClock())
    async for started in start_relay(env):
        yield started


async def test_oversized_body_is_413(small_relay: RelayEnv, http: aiohttp.ClientSession) -> None:
    env = small_relay
    first = seal_to(env)
    await env.client("it-tpc").send(first.token)
    body = json.dumps({"envelope": "x" * (env.settings.max_body_bytes + 1)}).encode()
    reply = await signed_raw(env, http, "POST", "/v1/messages", body)
    assert_problem(reply, 413, "too_large")
    # An unsigned oversized body is refused too, without a crash.
    reply = await send_raw(http, "POST", env.base_url + "/v1/messages", body)
    assert_problem(reply, 413, "too_large")  # the size is checked before the signature
    await assert_intact(env, [first])


async def test_batch_over_a_configured_max_batch_is_400(small_relay: RelayEnv) -> None:
    env = small_relay
    msgs = [seal_to(env) for _ in range(4)]
    with pytest.raises(RelayProblem) as err:
        await env.client("it-tpc").send_batch([m.token for m in msgs])
    assert err.value.status == 400 and err.value.code == "malformed"
    assert "3" in err.value.detail
    # Nothing of the refused batch was accepted.
    for m in msgs:
        with pytest.raises(NotFoundError):
            await env.client("it-tpc").timeline(m.id)
    await assert_intact(env, [])


# --- envelope refusals ------------------------------------------------------------------


def _extended_network(net: Network, newcomer: str) -> Network:
    """A copy of ``net`` whose newest directory lists ``newcomer`` (the relay's does not)."""
    other = replace(net, ids=dict(net.ids), history=list(net.history))
    other.republish(replace=[Identity.generate(newcomer, now=NOW - 1000)])
    return other


async def test_recipient_missing_from_the_relays_directory_is_422(
    relay: RelayEnv, accepted: list[SealedEnvelope]
) -> None:
    other = _extended_network(relay.net, "nl-politie")
    msg = seal_to(relay, to=("fr-oclcc", "nl-politie"), net=other)
    with pytest.raises(RelayProblem) as err:
        await relay.client("it-tpc").send(msg.token)
    assert err.value.status == 422 and err.value.code == "unknown_recipient"
    assert "nl-politie" in err.value.detail
    with pytest.raises(NotFoundError):
        await relay.client("it-tpc").timeline(msg.id)
    await assert_intact(relay, accepted)


async def test_fallback_missing_from_the_relays_directory_is_422(
    relay: RelayEnv, accepted: list[SealedEnvelope]
) -> None:
    other = _extended_network(relay.net, "nl-politie")
    msg = seal_to(relay, net=other, fallback=["nl-politie"])
    with pytest.raises(RelayProblem) as err:
        await relay.client("it-tpc").send(msg.token)
    assert err.value.status == 422 and err.value.code == "unknown_recipient"
    await assert_intact(relay, accepted)


async def test_tampered_envelope_is_422_bad_signature(
    relay: RelayEnv, accepted: list[SealedEnvelope]
) -> None:
    msg = seal_to(relay)
    with pytest.raises(RelayProblem) as err:
        await relay.client("it-tpc").send(tamper_payload(msg.token))
    assert err.value.status == 422 and err.value.code == "bad_signature"
    # A recipient swapped in the header breaks the signature as well.
    head, payload, sig = msg.token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    header["to"] = ["de-bka"]
    header["rcpt"][0]["aid"] = "de-bka"
    forged = f"{b64e(dumps(header))}.{payload}.{sig}"
    with pytest.raises(RelayProblem) as err:
        await relay.client("it-tpc").send(forged)
    assert err.value.status == 422 and err.value.code == "bad_signature"
    with pytest.raises(NotFoundError):
        await relay.client("it-tpc").timeline(msg.id)
    await assert_intact(relay, accepted)


def _resigned(env: RelayEnv, token: str, edit: Any) -> str:
    """``token`` with its header edited by ``edit`` and correctly re-signed by it-tpc."""
    head, payload, _ = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    edit(header)
    key = env.net["it-tpc"].signing_key(env.clock())
    body = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return sign_compact(dumps(header), body, key.secret)


async def test_validly_signed_envelope_to_a_non_recipient_is_422(
    relay: RelayEnv, accepted: list[SealedEnvelope]
) -> None:
    msg = seal_to(relay)

    def to_relay(header: dict[str, Any]) -> None:
        header["to"] = ["relay-eu"]
        header["rcpt"][0]["aid"] = "relay-eu"

    def foreign_key(header: dict[str, Any]) -> None:
        header["rcpt"][0]["kid"] = relay.net["de-bka"].encryption_keys[0].kid

    sender = relay.client("it-tpc")
    with pytest.raises(RelayProblem) as err:
        await sender.send(_resigned(relay, msg.token, to_relay))
    assert err.value.status == 422 and err.value.code == "unknown_recipient"
    with pytest.raises(RelayProblem) as err:
        await sender.send(_resigned(relay, msg.token, foreign_key))
    assert err.value.status == 422 and err.value.code == "unknown_recipient_key"
    await assert_intact(relay, accepted)


async def test_envelope_lifetime_and_clock_refusals(
    relay: RelayEnv, accepted: list[SealedEnvelope]
) -> None:
    sender = relay.client("it-tpc")
    too_long = seal_to(relay, ttl_ms=relay.settings.max_message_lifetime_ms + 1)
    with pytest.raises(RelayProblem) as err:
        await sender.send(too_long.token)
    assert err.value.status == 422 and err.value.code == "lifetime_too_long"
    future = seal(
        relay.net["it-tpc"],
        relay.net.directory,
        to=["fr-oclcc"],
        content=NOTICE,
        now=relay.clock() + relay.settings.clock_skew_ms + 60_000,
    )
    with pytest.raises(RelayProblem) as err:
        await sender.send(future.token)
    assert err.value.status == 422 and err.value.code == "not_yet_valid"
    await assert_intact(relay, accepted)


async def test_expired_envelope_is_422(relay: RelayEnv, accepted: list[SealedEnvelope]) -> None:
    msg = seal_to(relay, ttl_ms=60_000)
    relay.clock.advance(60_001)
    with pytest.raises(RelayProblem) as err:
        await relay.client("it-tpc").send(msg.token)
    assert err.value.status == 422 and err.value.code == "message_expired"
    await assert_intact(relay, accepted)


async def test_envelope_from_another_authority_is_403(
    relay: RelayEnv, accepted: list[SealedEnvelope]
) -> None:
    msg = seal_to(relay, sender="fr-oclcc", to=("de-bka",))
    with pytest.raises(RelayProblem) as err:
        await relay.client("it-tpc").send(msg.token)
    assert err.value.status == 403 and err.value.code == "sender_mismatch"
    assert await relay.client("de-bka").poll() == []
    await assert_intact(relay, accepted)


async def test_duplicate_id_with_another_envelope_is_409(
    relay: RelayEnv, accepted: list[SealedEnvelope]
) -> None:
    original = accepted[0]
    impostor = seal_to(relay, message_id=original.id, content={"kind": "free_text", "text": "x"})
    assert impostor.hash != original.hash
    with pytest.raises(RelayProblem) as err:
        await relay.client("it-tpc").send(impostor.token)
    assert err.value.status == 409 and err.value.code == "id_conflict"
    timeline = await relay.client("it-tpc").timeline(original.id)
    assert timeline.envelope_hash == original.hash
    await assert_intact(relay, accepted)


async def test_batch_mixes_accepted_envelopes_and_per_item_problems(
    relay: RelayEnv, accepted: list[SealedEnvelope]
) -> None:
    good1, good2 = seal_to(relay), seal_to(relay, to=("de-bka",))
    foreign = seal_to(relay, sender="fr-oclcc", to=("de-bka",))
    tampered = tamper_payload(seal_to(relay).token)
    conflict = seal_to(relay, message_id=good1.id, content={"kind": "free_text", "text": "x"})
    tokens = [
        good1.token,
        tampered,
        foreign.token,
        "hello",
        accepted[0].token,
        good2.token,
        good1.token,
        conflict.token,
    ]
    results = await relay.client("it-tpc").send_batch(tokens)
    assert len(results) == len(tokens)
    r_good1, r_tampered, r_foreign, r_hello, r_old, r_good2, r_again, r_conflict = results
    assert not isinstance(r_good1, RelayProblem) and r_good1.id == good1.id
    assert not r_good1.duplicate
    assert isinstance(r_tampered, RelayProblem) and r_tampered.code == "bad_signature"
    assert r_tampered.status == 422
    assert isinstance(r_foreign, RelayProblem) and r_foreign.code == "sender_mismatch"
    assert r_foreign.status == 403
    assert isinstance(r_hello, RelayProblem) and r_hello.code == "malformed"
    assert not isinstance(r_old, RelayProblem) and r_old.duplicate and r_old.id == accepted[0].id
    assert not isinstance(r_good2, RelayProblem) and not r_good2.duplicate
    assert not isinstance(r_again, RelayProblem) and r_again.duplicate
    assert r_again.receipt == r_good1.receipt
    # The same id with another envelope in the same batch is a conflict, not a success.
    assert isinstance(r_conflict, RelayProblem), r_conflict
    assert r_conflict.status == 409 and r_conflict.code == "id_conflict"
    # Receipts of accepted items verify against their own envelope.
    verify_receipt(
        r_good1.receipt, relay.net.directory, header=good1.header, envelope_hash=good1.hash
    )
    timeline = await relay.client("it-tpc").timeline(good1.id)
    assert timeline.envelope_hash == good1.hash
    assert [i.id for i in await relay.client("de-bka").poll()] == [good2.id]
    await assert_intact(relay, [*accepted, good1])


# --- request authentication -------------------------------------------------------------


async def test_missing_signature_is_401(
    relay: RelayEnv, http: aiohttp.ClientSession, accepted: list[SealedEnvelope]
) -> None:
    body = json.dumps({"envelope": seal_to(relay).token}).encode()
    url = relay.base_url + "/v1/messages"
    assert_problem(await send_raw(http, "POST", url, body), 401, "missing_signature")
    # Each of the three headers is required.
    full = signed_headers(relay, "POST", url, body)
    for name in full:
        partial = {k: v for k, v in full.items() if k != name}
        assert_problem(await send_raw(http, "POST", url, body, partial), 401, "missing_signature")
    for path in ("/v1/inbox", "/v1/directory", "/v1/messages/" + accepted[0].id):
        reply = await send_raw(http, "GET", relay.base_url + path)
        assert_problem(reply, 401, "missing_signature")
    await assert_intact(relay, accepted)


async def test_bad_signature_is_401(
    relay: RelayEnv, http: aiohttp.ClientSession, accepted: list[SealedEnvelope]
) -> None:
    msg = seal_to(relay)
    body = json.dumps({"envelope": msg.token}).encode()
    url = relay.base_url + "/v1/messages"
    # Signed for another path.
    headers = signed_headers(relay, "POST", relay.base_url + "/v1/receipts", body)
    reply = await send_raw(http, "POST", url, body, headers)
    assert_problem(reply, 401, "bad_request_signature")
    # A flipped signature byte.
    headers = signed_headers(relay, "POST", url, body)
    raw = bytearray(base64.b64decode(headers["Signature"][len("sig1=:") : -1]))
    raw[0] ^= 1
    headers["Signature"] = f"sig1=:{base64.b64encode(bytes(raw)).decode()}:"
    assert_problem(await send_raw(http, "POST", url, body, headers), 401, "bad_request_signature")
    # The body changed after signing.
    headers = signed_headers(relay, "POST", url, b'{"envelope":"x"}')
    assert_problem(await send_raw(http, "POST", url, body, headers), 401, "digest_mismatch")
    # Not the cpar-v1 profile.
    headers = signed_headers(relay, "POST", url, body)
    headers["Signature-Input"] = headers["Signature-Input"].replace("cpar-v1", "cpar-v2")
    assert_problem(await send_raw(http, "POST", url, body, headers), 401, "bad_signature_input")
    headers["Signature-Input"] = "garbage((("
    assert_problem(await send_raw(http, "POST", url, body, headers), 401, "bad_signature_input")
    with pytest.raises(NotFoundError):
        await relay.client("it-tpc").timeline(msg.id)
    await assert_intact(relay, accepted)


async def test_replayed_nonce_is_401(
    relay: RelayEnv, http: aiohttp.ClientSession, accepted: list[SealedEnvelope]
) -> None:
    msg = seal_to(relay)
    body = json.dumps({"envelope": msg.token}).encode()
    url = relay.base_url + "/v1/messages"
    headers = signed_headers(relay, "POST", url, body)
    headers["Content-Type"] = "application/json"
    first = await send_raw(http, "POST", url, body, headers)
    assert first.status == 201
    assert_problem(await send_raw(http, "POST", url, body, headers), 401, "replayed_nonce")
    # Also for a read.
    url = relay.base_url + "/v1/inbox"
    headers = signed_headers(relay, "GET", url, b"")
    assert (await send_raw(http, "GET", url, b"", headers)).status == 200
    assert_problem(await send_raw(http, "GET", url, b"", headers), 401, "replayed_nonce")
    await assert_intact(relay, [*accepted, msg])


async def test_expired_request_signature_is_401(
    relay: RelayEnv, http: aiohttp.ClientSession, accepted: list[SealedEnvelope]
) -> None:
    msg = seal_to(relay)
    body = json.dumps({"envelope": msg.token}).encode()
    url = relay.base_url + "/v1/messages"
    headers = signed_headers(relay, "POST", url, body)
    relay.clock.advance(301_000)
    assert_problem(await send_raw(http, "POST", url, body, headers), 401, "signature_expired")
    # Signed too far in the future.
    relay.clock.advance(-120_000)
    future = signed_headers(relay, "POST", url, body)
    relay.clock.advance(-120_000)
    assert_problem(await send_raw(http, "POST", url, body, future), 401, "signature_expired")
    relay.clock.advance(240_000)
    await assert_intact(relay, accepted)


async def test_key_not_in_the_directory_is_401(
    relay: RelayEnv, http: aiohttp.ClientSession, accepted: list[SealedEnvelope]
) -> None:
    stranger = Identity.generate("it-tpc", now=NOW - 1000)  # same name, unlisted key
    body = json.dumps({"envelope": seal_to(relay).token}).encode()
    reply = await signed_raw(relay, http, "POST", "/v1/messages", body, ident=stranger)
    assert_problem(reply, 401, "unknown_key")
    # The relay's own key is in the directory but cannot call the API as an authority.
    reply = await signed_raw(relay, http, "GET", "/v1/inbox", ident=relay.net.relay)
    assert_problem(reply, 401, "unknown_key")
    await assert_intact(relay, accepted)


# --- reading messages -------------------------------------------------------------------


async def test_unknown_message_id_is_404(
    relay: RelayEnv, http: aiohttp.ClientSession, accepted: list[SealedEnvelope]
) -> None:
    for msg_id in (uuid7(ms=NOW), "not-a-uuid", "x" * 300, "%00"):
        reply = await signed_raw(relay, http, "GET", f"/v1/messages/{msg_id}")
        assert_problem(reply, 404, "unknown_message")
    await assert_intact(relay, accepted)


async def test_message_of_someone_else_is_404_not_403(
    relay: RelayEnv, http: aiohttp.ClientSession, accepted: list[SealedEnvelope]
) -> None:
    msg_id = accepted[0].id
    unknown = await signed_raw(relay, http, "GET", f"/v1/messages/{uuid7(ms=NOW)}")
    for aid in ("fr-oclcc", "de-bka"):  # the recipient, and a stranger
        reply = await signed_raw(relay, http, "GET", f"/v1/messages/{msg_id}", ident=relay.net[aid])
        body = assert_problem(reply, 404, "unknown_message")
        # Indistinguishable from an id that does not exist.
        assert body["title"] == unknown.json()["title"]
    await assert_intact(relay, accepted)


# --- receipts ---------------------------------------------------------------------------

BAD_RECEIPT_BODIES = {
    "not-json": b"nope",
    "not-object": b'["x"]',
    "no-receipt": b"{}",
    "receipt-int": b'{"receipt": 1}',
    "receipt-garbage": b'{"receipt": "garbage"}',
    "receipt-three-parts": b'{"receipt": "a.b.c"}',
    "receipt-surrogate": b'{"receipt": "\\ud800"}',
}


@pytest.mark.parametrize("body", BAD_RECEIPT_BODIES.values(), ids=BAD_RECEIPT_BODIES.keys())
async def test_garbage_receipt_is_400(
    relay: RelayEnv, http: aiohttp.ClientSession, accepted: list[SealedEnvelope], body: bytes
) -> None:
    reply = await signed_raw(relay, http, "POST", "/v1/receipts", body, ident=relay.net["fr-oclcc"])
    assert_problem(reply, 400, "malformed")
    await assert_intact(relay, accepted)


async def test_receipt_refusals(relay: RelayEnv, accepted: list[SealedEnvelope]) -> None:
    net, msg = relay.net, accepted[0]
    fr, de = relay.client("fr-oclcc"), relay.client("de-bka")

    def receipt(aid: str, status: Any = "delivered", **kw: Any) -> str:
        kw.setdefault("msg_id", msg.id)
        kw.setdefault("envelope_hash", msg.hash)
        return sign_receipt(net[aid], status=status, now=relay.clock(), **kw)

    # A non-recipient cannot post a receipt about the message.
    with pytest.raises(RelayProblem) as err:
        await de.send_receipt(receipt("de-bka"))
    # ...and is told no more than for a message that does not exist.
    assert (err.value.status, err.value.code) == (404, "unknown_message")
    # A relay-only status signed by an authority.
    for status in ("accepted", "expired", "escalated"):
        with pytest.raises(RelayProblem) as err:
            await fr.send_receipt(receipt("fr-oclcc", status))
        assert (err.value.status, err.value.code) == (422, "receipt_invalid"), status
        assert "must be signed by a relay" in err.value.detail
    # About another envelope under the same id.
    with pytest.raises(RelayProblem) as err:
        await fr.send_receipt(receipt("fr-oclcc", envelope_hash="0" * 64))
    assert err.value.status == 422 and err.value.code == "receipt_mismatch"
    # About a message that does not exist.
    with pytest.raises(RelayProblem) as err:
        await fr.send_receipt(receipt("fr-oclcc", msg_id=uuid7(ms=NOW)))
    assert err.value.status == 404 and err.value.code == "unknown_message"
    # Signed by someone other than the requester.
    with pytest.raises(RelayProblem) as err:
        await de.send_receipt(receipt("fr-oclcc"))
    assert err.value.status == 403 and err.value.code == "signer_mismatch"
    # Tampered.
    with pytest.raises(RelayProblem) as err:
        await fr.send_receipt(tamper_signature(receipt("fr-oclcc")))
    assert err.value.status == 422 and err.value.code == "bad_signature"
    # Nothing of that reached the sender, and the message state did not move.
    sender = relay.client("it-tpc")
    assert [i for i in await sender.poll() if i.type == "receipt"] == []
    timeline = await sender.timeline(msg.id)
    assert timeline.state == "accepted" and len(timeline.receipts) == 1
    # The real recipient's receipt is still accepted, once.
    good = receipt("fr-oclcc")
    assert await fr.send_receipt(good) is True
    assert await fr.send_receipt(good) is False
    assert (await sender.timeline(msg.id)).receipts[1:] == [good]
    await assert_intact(relay, accepted)


# --- inbox ------------------------------------------------------------------------------

BAD_INBOX_QUERIES = [
    {"after": -1},
    {"after": "abc"},
    {"after": 2**63},
    {"wait": "abc"},
    {"wait": -1},
    {"wait": 10_000},
    {"wait": "1.5"},
    {"limit": 100_000},
    {"limit": 0},
    {"limit": ""},
]


@pytest.mark.parametrize("params", BAD_INBOX_QUERIES, ids=[str(p) for p in BAD_INBOX_QUERIES])
async def test_bad_inbox_query_is_400(
    relay: RelayEnv, accepted: list[SealedEnvelope], params: dict[str, Any]
) -> None:
    with pytest.raises(RelayProblem) as err:
        await relay.client("fr-oclcc").request("GET", "/v1/inbox", params=params)
    assert err.value.status == 400 and err.value.code == "malformed"
    name = next(iter(params))
    assert name in err.value.detail
    await assert_intact(relay, accepted)


BAD_ACKS = {
    "not-json": b"[",
    "not-object": b"[1, 2]",
    "no-seqs": b"{}",
    "seqs-string": b'{"seqs": "1"}',
    "seqs-null": b'{"seqs": null}',
    "negative": b'{"seqs": [-1]}',
    "float": b'{"seqs": [1.5]}',
    "bool": b'{"seqs": [true]}',
    "string-item": b'{"seqs": ["1"]}',
    "too-big-for-sqlite": b'{"seqs": [18446744073709551616]}',
    "too-many": json.dumps({"seqs": list(range(10_001))}).encode(),
}


@pytest.mark.parametrize("body", BAD_ACKS.values(), ids=BAD_ACKS.keys())
async def test_bad_ack_is_400_and_acks_nothing(
    relay: RelayEnv, http: aiohttp.ClientSession, accepted: list[SealedEnvelope], body: bytes
) -> None:
    reply = await signed_raw(
        relay, http, "POST", "/v1/inbox/ack", body, ident=relay.net["fr-oclcc"]
    )
    assert_problem(reply, 400, "malformed")
    await assert_intact(relay, accepted)


async def test_ack_of_unknown_or_foreign_seqs_removes_nothing(
    relay: RelayEnv, accepted: list[SealedEnvelope]
) -> None:
    (item,) = await relay.client("fr-oclcc").poll()
    # Another authority cannot acknowledge fr-oclcc's item.
    assert await relay.client("de-bka").ack([item.seq]) == 0
    assert await relay.client("fr-oclcc").ack([item.seq + 1000, 0]) == 0
    assert await relay.client("fr-oclcc").ack([]) == 0
    await assert_intact(relay, accepted)


# --- routing ----------------------------------------------------------------------------


async def test_unknown_route_is_404_problem(
    relay: RelayEnv, http: aiohttp.ClientSession, accepted: list[SealedEnvelope]
) -> None:
    assert_problem(await signed_raw(relay, http, "GET", "/v1/nothing-here"), 404, "not_found")
    assert_problem(await send_raw(http, "GET", relay.base_url + "/nothing"), 404, "not_found")
    assert_problem(await send_raw(http, "GET", relay.base_url + "/"), 404, "not_found")
    await assert_intact(relay, accepted)


async def test_wrong_method_is_405_problem(
    relay: RelayEnv, http: aiohttp.ClientSession, accepted: list[SealedEnvelope]
) -> None:
    reply = await signed_raw(relay, http, "DELETE", "/v1/messages")
    assert_problem(reply, 405, "method_not_allowed")
    assert "POST" in reply.headers.get("Allow", "")
    reply = await signed_raw(relay, http, "PUT", f"/v1/messages/{accepted[0].id}")
    assert_problem(reply, 405, "method_not_allowed")
    reply = await send_raw(http, "POST", relay.base_url + "/healthz")
    assert_problem(reply, 405, "method_not_allowed")
    await assert_intact(relay, accepted)


async def test_health_ready_and_openapi(relay: RelayEnv, http: aiohttp.ClientSession) -> None:
    healthz = await send_raw(http, "GET", relay.base_url + "/healthz")
    assert healthz.status == 200 and healthz.json() == {"status": "ok"}
    readyz = await send_raw(http, "GET", relay.base_url + "/readyz")
    assert readyz.status == 200 and readyz.json()["status"] == "ready"
    spec = await send_raw(http, "GET", relay.base_url + "/openapi.json")
    assert spec.status == 200 and spec.content_type == "application/json"
    doc = spec.json()
    assert doc["openapi"].startswith("3.")
    assert "post" in doc["paths"]["/v1/messages"]
    for path in ("/v1/receipts", "/v1/inbox", "/v1/stream", "/v1/attachments/{digest}"):
        assert path in doc["paths"], path


# --- attachments ------------------------------------------------------------------------


@dataclass(frozen=True)
class Attachment:
    entry: AttachmentManifestEntry
    ciphertext: bytes
    path: Path


def make_attachment(folder: Path, plaintext: bytes, name: str = "photo.jpg") -> Attachment:
    out = io.BytesIO()
    entry = encrypt_stream(io.BytesIO(plaintext), out, name=name, media_type="image/jpeg")
    path = folder / entry.h
    path.write_bytes(out.getvalue())
    return Attachment(entry, out.getvalue(), path)


@pytest.fixture
def photo(tmp_path: Path) -> Attachment:
    (tmp_path / "outbox").mkdir()
    return make_attachment(tmp_path / "outbox", os.urandom(100_000))


async def put_raw(
    env: RelayEnv, http: aiohttp.ClientSession, digest: str, body: bytes, aid: str = "it-tpc"
) -> Reply:
    url = f"{env.base_url}/v1/attachments/{digest}"
    headers = signed_headers(env, "PUT", url, body, ident=env.net[aid])
    headers["Content-Type"] = "application/octet-stream"
    return await send_raw(http, "PUT", url, body, headers)


def _incoming(env: RelayEnv) -> list[Path]:
    folder = env.settings.data_dir / "attachments" / "incoming"
    return list(folder.iterdir()) if folder.exists() else []


async def test_attachment_refusals(
    relay: RelayEnv, http: aiohttp.ClientSession, accepted: list[SealedEnvelope], photo: Attachment
) -> None:
    # The body does not hash to the address.
    reply = await put_raw(relay, http, "ab" * 32, photo.ciphertext)
    assert_problem(reply, 400, "digest_mismatch")
    # Not a lower-case hex SHA-256.
    reply = await put_raw(relay, http, photo.entry.h.upper(), photo.ciphertext)
    assert_problem(reply, 400, "malformed")
    # Never uploaded.
    reply = await signed_raw(relay, http, "GET", f"/v1/attachments/{photo.entry.h}")
    assert_problem(reply, 404, "unknown_attachment")
    reply = await signed_raw(relay, http, "GET", "/v1/attachments/nothex")
    assert_problem(reply, 404, "unknown_attachment")
    # An envelope referencing it before it is uploaded.
    msg = seal_to(relay, attachments=[photo.entry])
    with pytest.raises(RelayProblem) as err:
        await relay.client("it-tpc").send(msg.token)
    assert err.value.status == 422 and err.value.code == "attachment_missing"
    # Refused uploads leave no temporary file behind.
    assert await asyncio.to_thread(_incoming, relay) == []
    await assert_intact(relay, accepted)


async def test_attachment_upload_message_and_access_control(
    relay: RelayEnv, http: aiohttp.ClientSession, accepted: list[SealedEnvelope], photo: Attachment
) -> None:
    sender = relay.client("it-tpc")
    await sender.upload_attachment(photo.path, photo.entry.h)
    again = await put_raw(relay, http, photo.entry.h, photo.ciphertext)
    assert again.status == 200
    msg = seal_to(relay, to=("fr-oclcc",), fallback=["fr-desk"], attachments=[photo.entry])
    assert not (await sender.send(msg.token)).duplicate
    for aid in ("fr-oclcc", "fr-desk", "it-tpc"):  # recipient, fallback, uploader
        reply = await signed_raw(
            relay, http, "GET", f"/v1/attachments/{photo.entry.h}", ident=relay.net[aid]
        )
        assert reply.status == 200, aid
        assert reply.body == photo.ciphertext
        assert hashlib.sha256(reply.body).hexdigest() == photo.entry.h
    reply = await signed_raw(
        relay, http, "GET", f"/v1/attachments/{photo.entry.h}", ident=relay.net["de-bka"]
    )
    assert_problem(reply, 404, "unknown_attachment")
    await assert_intact(relay, [*accepted, msg])


async def test_an_envelope_may_reference_only_its_senders_own_uploads(
    relay: RelayEnv, accepted: list[SealedEnvelope], photo: Attachment
) -> None:
    """Knowing another authority's digest must not make its ciphertext readable by one's
    own recipients."""
    await relay.client("de-bka").upload_attachment(photo.path, photo.entry.h)
    theft = seal_to(relay, sender="it-tpc", to=("fr-oclcc",), attachments=[photo.entry])
    with pytest.raises(RelayProblem) as err:
        await relay.client("it-tpc").send(theft.token)
    assert (err.value.status, err.value.code) == (422, "attachment_missing")
    assert "not been uploaded by it-tpc" in str(err.value)
    assert all(getattr(i, "id", None) != theft.id for i in await relay.client("fr-oclcc").poll())
    own = seal_to(relay, sender="de-bka", to=("fr-oclcc",), attachments=[photo.entry])
    assert not (await relay.client("de-bka").send(own.token)).duplicate
    await assert_intact(relay, accepted)


async def test_oversized_attachment_is_413_and_leaves_nothing(
    small_relay: RelayEnv, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    env = small_relay
    first = seal_to(env)
    await env.client("it-tpc").send(first.token)
    big = os.urandom(env.settings.max_attachment_bytes + 1)
    digest = hashlib.sha256(big).hexdigest()
    reply = await put_raw(env, http, digest, big)
    assert_problem(reply, 413, "too_large")
    reply = await signed_raw(env, http, "GET", f"/v1/attachments/{digest}")
    assert_problem(reply, 404, "unknown_attachment")
    assert await asyncio.to_thread(_incoming, env) == []
    await assert_intact(env, [first])


# --- no plaintext at the relay -------------------------------------------------------------


def _encodings(marker: bytes) -> list[bytes]:
    out = [marker, base64.b64encode(marker), base64.urlsafe_b64encode(marker)]
    # Every alignment of the marker inside a longer base64 text, minus the edge characters.
    for shift in range(3):
        padded = b"\x00" * shift + marker
        for enc in (base64.b64encode(padded), base64.urlsafe_b64encode(padded)):
            inner = enc.rstrip(b"=")
            out.append(inner[(shift * 4 + 2) // 3 + 1 : -2])
    return [e for e in out if len(e) >= 16]


def _files_containing(root: Path, needles: list[bytes]) -> list[str]:
    hits = []
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files, f"nothing stored under {root}"
    for path in files:
        data = path.read_bytes()
        hits += [f"{path.name}: {n!r}" for n in needles if n in data]
    return hits


async def test_no_plaintext_at_the_relay(relay: RelayEnv, tmp_path: Path) -> None:
    marker = b"MARKER-" + os.urandom(12).hex().encode()
    outbox = tmp_path / "outbox"
    await asyncio.to_thread(outbox.mkdir)
    photo = await asyncio.to_thread(
        make_attachment, outbox, b"photo of the stolen icon " + marker * 50, "icon.jpg"
    )
    sender = relay.client("it-tpc")
    await sender.upload_attachment(photo.path, photo.entry.h)
    msg = seal_to(
        relay,
        content={"kind": "free_text", "text": f"see {marker.decode()} now"},
        attachments=[photo.entry],
    )
    await sender.send(msg.token)
    fr = relay.client("fr-oclcc")
    (item,) = [i for i in await fr.poll() if i.id == msg.id]
    assert item.envelope == msg.token
    dest = tmp_path / "inbox" / "icon.bin"
    await fr.download_attachment(photo.entry.h, dest)
    # Sanity: the recipient really gets the marker back.
    opened = open_envelope(item.envelope, relay.net.directory, relay.net["fr-oclcc"], now=NOW)
    assert marker.decode() in opened.content["text"]
    plain = io.BytesIO()
    ct = await asyncio.to_thread(dest.read_bytes)
    decrypt_stream(io.BytesIO(ct), plain, opened.plaintext.attachments[0])
    assert marker in plain.getvalue()
    # Nothing under the relay's data directory holds the marker, in any encoding.
    hits = await asyncio.to_thread(_files_containing, relay.settings.data_dir, _encodings(marker))
    assert hits == []


def test_encodings_helper_finds_embedded_base64() -> None:
    marker = b"MARKER-0123456789abcdef"
    for prefix in (b"", b"x", b"xy", b"xyz"):
        blob = base64.urlsafe_b64encode(prefix + marker + b"tail")
        assert any(e in blob for e in _encodings(marker)), prefix
