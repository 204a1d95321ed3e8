"""``/openapi.json`` is generated from keys/wire.py, served as generated, and true.

True means: for every route and every status code it documents, a real request to a
real relay produces that status, with the documented media type, and a body that
validates against the documented JSON Schema. A status a route cannot produce must not
be documented; a route the relay serves must be documented.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema_rs
import pytest

from keys.encoding import uuid7
from keys.envelope import SealedEnvelope, seal
from keys.httpsig import sign_request
from keys.identity import Identity
from keys.receipts import sign_receipt
from relay.api.openapi import generate, undocumented
from relay.api.ops import token_digest
from relay.api.state import STORE
from relay.settings import OperatorCredential, RelaySettings
from tests.netfixture import Network
from tests.relayfixture import FakeClock, RelayEnv, start_relay, write_relay_files

NOTICE = {"kind": "free_text", "text": "openapi test"}
OPERATOR_TOKEN = "openapi-operator-token-0123456789abcdefghijklmnop"
MAX_BODY = 16 * 1024
MAX_ATTACHMENT = 2048


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes


Key = tuple[str, str, int]
"""(method, documented path, status)."""


@pytest.fixture
def relay_settings(tmp_path: Path, net: Network) -> RelaySettings:
    base = write_relay_files(tmp_path, net)
    cred = OperatorCredential(name="ops", token_sha256=token_digest(OPERATOR_TOKEN))
    return base.model_copy(
        update={
            "operators": [cred],
            "max_body_bytes": MAX_BODY,
            "max_attachment_bytes": MAX_ATTACHMENT,
        }
    )


@pytest.fixture
def bare_settings(tmp_path: Path, net: Network) -> RelaySettings:
    return write_relay_files(tmp_path / "bare", net)


@pytest.fixture
async def bare(bare_settings: RelaySettings, net: Network) -> AsyncIterator[RelayEnv]:
    """A relay with no operators configured."""
    env = RelayEnv(net=net, settings=bare_settings, clock=FakeClock())
    async for started in start_relay(env):
        yield started


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Caller:
    def __init__(self, env: RelayEnv, http: aiohttp.ClientSession) -> None:
        self.env = env
        self.http = http
        self.seen: dict[Key, Reply] = {}

    async def __call__(
        self,
        key: Key,
        path: str,
        body: bytes = b"",
        *,
        by: str | None = "it-tpc",
        headers: dict[str, str] | None = None,
        upload: bool = False,
    ) -> Reply:
        """Send one request, signed by authority ``by`` (None: unsigned); record it."""
        method = key[0]
        url = self.env.base_url + path
        sent = dict(headers or {})
        if by is not None:
            ident: Identity = self.env.net[by]
            k = ident.signing_key(self.env.clock())
            sent.update(
                sign_request(
                    method=method,
                    url=url,
                    body=body,
                    kid=k.kid,
                    secret_key=k.secret,
                    now=self.env.clock() // 1000,
                )
            )
        if body:
            sent.setdefault(
                "Content-Type", "application/octet-stream" if upload else "application/json"
            )
        async with self.http.request(method, url, data=body, headers=sent) as resp:
            if resp.content_type == "text/event-stream":
                raw = b""  # an endless stream: the headers are the answer
            else:
                raw = await resp.read()
            reply = Reply(resp.status, resp.content_type, raw)
        assert reply.status == key[2], (key, reply.status, reply.body[:300])
        self.seen[key] = reply
        return reply


def envelope(env: RelayEnv, **kw: Any) -> SealedEnvelope:
    kw.setdefault("to", ["fr-oclcc"])
    kw.setdefault("content", NOTICE)
    kw.setdefault("now", env.clock())
    return seal(env.net["it-tpc"], env.net.directory, **kw)


def submit(msg: SealedEnvelope) -> bytes:
    return json.dumps({"envelope": msg.token}).encode()


def receipt_body(env: RelayEnv, msg: SealedEnvelope, by: str, status: Any) -> bytes:
    token = sign_receipt(
        env.net[by], msg_id=msg.id, envelope_hash=msg.hash, status=status, now=env.clock()
    )
    return json.dumps({"receipt": token}).encode()


def blob(size: int) -> tuple[str, bytes]:
    data = os.urandom(size)
    return hashlib.sha256(data).hexdigest(), data


async def exercise(env: RelayEnv, bare: RelayEnv, http: aiohttp.ClientSession) -> Caller:
    """Every documented status of every route, produced by a real request."""
    call = Caller(env, http)
    msg = envelope(env)
    big = b"x" * (MAX_BODY + 1)

    # POST /v1/messages
    m = "/v1/messages"
    await call(("POST", m, 201), m, submit(msg))
    await call(("POST", m, 200), m, submit(msg))
    await call(("POST", m, 400), m, b"{")
    await call(("POST", m, 401), m, submit(envelope(env)), by=None)
    await call(("POST", m, 403), m, submit(envelope(env)), by="de-bka")
    impostor = envelope(env, message_id=msg.id)
    await call(("POST", m, 409), m, submit(impostor))
    await call(("POST", m, 413), m, big)
    expired = envelope(env, ttl_ms=100 * 86_400_000)  # longer than the relay allows
    await call(("POST", m, 422), m, submit(expired))
    batch = json.dumps({"envelopes": [envelope(env).token, expired.token]}).encode()
    answer = await call(("POST", m, 200), m, batch)
    assert [sorted(r) for r in json.loads(answer.body)["results"]] == [
        ["duplicate", "id", "receipt"],
        ["problem"],
    ]

    # GET /v1/messages/{id}
    t = "/v1/messages/{id}"
    await call(("GET", t, 200), f"/v1/messages/{msg.id}")
    await call(("GET", t, 401), f"/v1/messages/{msg.id}", by=None)
    await call(("GET", t, 404), f"/v1/messages/{msg.id}", by="de-bka")

    # GET /v1/messages/{id}/proofs (after the receipts below are stored, too)
    pr = "/v1/messages/{id}/proofs"
    await call(("GET", pr, 400), f"/v1/messages/{msg.id}/proofs?size=0")
    await call(("GET", pr, 401), f"/v1/messages/{msg.id}/proofs", by=None)
    await call(("GET", pr, 404), f"/v1/messages/{msg.id}/proofs", by="de-bka")

    # POST /v1/receipts
    r = "/v1/receipts"
    await call(("POST", r, 202), r, receipt_body(env, msg, "fr-oclcc", "delivered"), by="fr-oclcc")
    await call(("POST", r, 200), r, receipt_body(env, msg, "fr-oclcc", "delivered"), by="fr-oclcc")
    await call(("POST", r, 400), r, b"[]", by="fr-oclcc")
    await call(("POST", r, 401), r, receipt_body(env, msg, "fr-oclcc", "delivered"), by=None)
    await call(("POST", r, 403), r, receipt_body(env, msg, "de-bka", "delivered"), by="fr-oclcc")
    await call(("POST", r, 404), r, receipt_body(env, msg, "de-bka", "delivered"), by="de-bka")
    await call(("POST", r, 413), r, big, by="fr-oclcc")
    await call(("POST", r, 422), r, receipt_body(env, msg, "fr-oclcc", "accepted"), by="fr-oclcc")

    proofs = await call(("GET", pr, 200), f"/v1/messages/{msg.id}/proofs", by="fr-oclcc")
    assert len(json.loads(proofs.body)["entries"]) == 2  # accepted, delivered

    # the log
    lh, lc = "/v1/log/head", "/v1/log/consistency"
    await call(("GET", lh, 200), lh)
    await call(("GET", lh, 401), lh, by=None)
    await call(("GET", lc, 200), lc + "?first=1&second=2")
    await call(("GET", lc, 400), lc + "?first=2&second=1")
    await call(("GET", lc, 401), lc + "?first=1&second=2", by=None)

    # GET /v1/inbox, POST /v1/inbox/ack
    i, a = "/v1/inbox", "/v1/inbox/ack"
    page = await call(("GET", i, 200), i + "?after=0&wait=0&limit=10", by="fr-oclcc")
    seqs = [item["seq"] for item in json.loads(page.body)["items"]]
    assert seqs
    await call(("GET", i, 400), i + "?limit=0", by="fr-oclcc")
    await call(("GET", i, 401), i, by=None)
    await call(("POST", a, 200), a, json.dumps({"seqs": seqs}).encode(), by="fr-oclcc")
    await call(("POST", a, 400), a, b'{"seqs": [-1]}', by="fr-oclcc")
    await call(("POST", a, 401), a, b'{"seqs": []}', by=None)
    await call(("POST", a, 413), a, big, by="fr-oclcc")

    # GET /v1/stream
    s = "/v1/stream"
    stream = await env.client("fr-oclcc").connect_stream()  # the upgrade succeeded: 101
    await stream.close()
    call.seen[("GET", s, 101)] = Reply(101, "", b"")
    await call(("GET", s, 400), s, by="fr-oclcc")
    await call(("GET", s, 401), s, by=None)

    # attachments
    p = "/v1/attachments/{digest}"
    digest, data = blob(1000)
    await call(("PUT", p, 201), f"/v1/attachments/{digest}", data, upload=True)
    await call(("PUT", p, 200), f"/v1/attachments/{digest}", data, upload=True)
    await call(("PUT", p, 400), "/v1/attachments/" + "0" * 64, data, upload=True)
    await call(("PUT", p, 401), f"/v1/attachments/{digest}", data, by=None, upload=True)
    huge, huge_data = blob(MAX_ATTACHMENT + 1)
    await call(("PUT", p, 413), f"/v1/attachments/{huge}", huge_data, upload=True)
    await call(("GET", p, 200), f"/v1/attachments/{digest}")
    await call(("GET", p, 401), f"/v1/attachments/{digest}", by=None)
    await call(("GET", p, 404), f"/v1/attachments/{digest}", by="de-bka")

    # directory, presence, health, this document
    for d in ("/v1/directory", "/v1/directory/history", "/v1/presence", "/v1/policy"):
        await call(("GET", d, 200), d)
        await call(("GET", d, 401), d, by=None)
    await call(("GET", "/healthz", 200), "/healthz", by=None)
    await call(("GET", "/readyz", 200), "/readyz", by=None)
    await call(("GET", "/openapi.json", 200), "/openapi.json", by=None)

    # operators: a token, no token, and a relay with no operators at all
    bearer = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    ops_paths = {
        "/metrics": "/metrics",
        "/ops": "/ops",
        "/ops/events": "/ops/events",
        "/ops/snapshot": "/ops/snapshot",
        "/ops/messages/{id}": f"/ops/messages/{msg.id}",
        "/ops/static/{name}": "/ops/static/ops.css",
    }
    bare_call = Caller(bare, http)
    for doc_path, path in ops_paths.items():
        await call(("GET", doc_path, 200), path, by=None, headers=bearer)
        await call(("GET", doc_path, 401), path, by=None)
        await bare_call(("GET", doc_path, 403), path, by=None, headers=bearer)
    await call(("GET", "/ops/messages/{id}", 404), f"/ops/messages/{uuid7()}", headers=bearer)
    await call(("GET", "/ops/static/{name}", 404), "/ops/static/nope.js", headers=bearer)
    call.seen.update(bare_call.seen)

    # The store goes away: 503 wherever the store is needed.
    assert env.server is not None
    await env.server.app[STORE].close()
    await call(("POST", m, 503), m, submit(envelope(env)))
    await call(("GET", t, 503), f"/v1/messages/{msg.id}")
    await call(("GET", pr, 503), f"/v1/messages/{msg.id}/proofs")
    await call(("GET", lh, 503), lh)
    await call(("GET", lc, 503), lc + "?first=1&second=2")
    await call(
        ("POST", r, 503), r, receipt_body(env, msg, "fr-oclcc", "acknowledged"), by="fr-oclcc"
    )
    await call(("GET", i, 503), i, by="fr-oclcc")
    await call(("POST", a, 503), a, b'{"seqs": [1]}', by="fr-oclcc")
    other, other_data = blob(500)
    await call(("PUT", p, 503), f"/v1/attachments/{other}", other_data, upload=True)
    await call(("GET", p, 503), f"/v1/attachments/{digest}")
    await call(("GET", "/readyz", 503), "/readyz", by=None)
    return call


def documented(doc: dict[str, Any]) -> set[Key]:
    return {
        (method.upper(), path, int(status))
        for path, item in doc["paths"].items()
        for method, op in item.items()
        for status in op["responses"]
    }


def check_against(doc: dict[str, Any], key: Key, reply: Reply) -> None:
    method, path, status = key
    answer = doc["paths"][path][method.lower()]["responses"][str(status)]
    content = answer.get("content")
    if content is None:
        assert status == 101 or not reply.body, (key, reply.body[:200])
        return
    assert reply.content_type in content, (key, reply.content_type, list(content))
    schema = content[reply.content_type].get("schema")
    if schema is None:
        return
    validator = jsonschema_rs.Draft202012Validator(
        {**schema, "components": doc["components"]}, validate_formats=True
    )
    body = json.loads(reply.body)
    errors = [e.message for e in validator.iter_errors(body)]
    assert errors == [], (key, errors, body)


async def test_served_document_is_the_generated_one(relay: RelayEnv) -> None:
    assert relay.server is not None
    app = relay.server.app
    assert undocumented(app) == []
    async with aiohttp.ClientSession() as http, http.get(relay.base_url + "/openapi.json") as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        served = await resp.json()
    assert served == json.loads(json.dumps(generate(app)))
    assert served["openapi"] == "3.1.0"


async def test_every_documented_status_is_real_and_matches_its_schema(
    relay: RelayEnv, bare: RelayEnv, http: aiohttp.ClientSession
) -> None:
    assert relay.server is not None
    doc = json.loads(json.dumps(generate(relay.server.app)))
    call = await exercise(relay, bare, http)
    # Every documented status was produced, and nothing undocumented was.
    assert set(call.seen) == documented(doc)
    for key, reply in call.seen.items():
        check_against(doc, key, reply)
