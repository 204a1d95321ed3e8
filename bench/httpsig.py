"""RFC 9421 request signatures: ``keys.httpsig`` against ``http-message-signatures``.

Measures, per request and in interleaved rounds (a noisy machine slows both alike),
signing and then verifying one ``cpar-v1`` request as the client and the relay do:
``@method @authority @path @query content-digest``, ``created``/``expires``/``nonce``/
``keyid``/``alg``/``tag`` parameters, Ed25519. Two requests: a ``POST /v1/messages``
with a 2 KiB JSON body, and a bodiless ``GET /v1/inbox?after=17&wait=25&limit=256``.

* ours: ``keys.httpsig.sign_request`` then ``verify_request`` (with its nonce cache,
  key resolution through a callback, and the checks the relay needs: profile, window,
  nonce shape, Content-Digest against the body);
* library: ``http_message_signatures`` 3.x ``HTTPMessageSigner.sign`` then
  ``HTTPMessageVerifier.verify(..., body=...)`` on a ``requests.PreparedRequest``, with
  a set for the nonces (replay detection is the caller's in that library).

Prints microseconds per request (sign, verify, both) for each, the median over the
rounds, and whether a request signed by the library is accepted by ours. The library
is not a dependency of the project: ``pip install 'http-message-signatures>=3,<4'``.

Run: ``.venv/bin/python bench/httpsig.py [--rounds N] [--iterations N] [--json]``.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

import nacl.bindings

from keys.encoding import key_id
from keys.errors import KeysError
from keys.httpsig import LABEL, NonceCache, sign_request, verify_request

try:
    import requests
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from http_message_signatures import (
        HTTPMessageSigner,
        HTTPMessageVerifier,
        HTTPSignatureKeyResolver,
        algorithms,
    )
except ImportError:  # pragma: no cover - the optional side of the comparison
    print("pip install 'http-message-signatures>=3,<4' to compare", file=sys.stderr)
    raise

NOW = int(time.time())  # the library checks "created" against the wall clock
KID = ""  # the key id of the benchmark's key (set in main)
COMPONENTS = ("@method", "@authority", "@path", "@query", "content-digest")
POST_URL = "http://relay.example:8080/v1/messages"
GET_URL = "http://relay.example:8080/v1/inbox?after=17&wait=25&limit=256"
BODY = json.dumps({"envelope": "e" * 2048}).encode()


class Keys(HTTPSignatureKeyResolver):  # type: ignore[misc]
    def __init__(self, seed: bytes) -> None:
        self.private = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        self.public = self.private.public_key()

    def resolve_private_key(self, key_id: str) -> ed25519.Ed25519PrivateKey:
        return self.private

    def resolve_public_key(self, key_id: str) -> ed25519.Ed25519PublicKey:
        return self.public


Timing = dict[str, float]
"""Seconds spent per phase: sign, verify (and, for the library, building its message)."""


def ours(pk: bytes, sk: bytes) -> Callable[[str, str, bytes, Timing], None]:
    nonces = NonceCache()

    def run(method: str, url: str, body: bytes, t: Timing) -> None:
        t0 = time.perf_counter()
        headers = sign_request(method=method, url=url, body=body, kid=KID, secret_key=sk, now=NOW)
        t1 = time.perf_counter()
        path, _, query = url.split("://", 1)[1].partition("/")[2].partition("?")
        verify_request(
            method=method,
            authority="relay.example:8080",
            path="/" + path,
            query=query,
            headers=headers,
            body=body,
            resolve_key=lambda kid: pk if kid == KID else None,
            nonces=nonces,
            now=NOW,
            scheme="http",
        )
        t2 = time.perf_counter()
        t["sign"] += t1 - t0
        t["verify"] += t2 - t1

    return run


def library(seed: bytes) -> Callable[[str, str, bytes, Timing], None]:
    keys = Keys(seed)
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=keys)
    verifier = HTTPMessageVerifier(signature_algorithm=algorithms.ED25519, key_resolver=keys)
    created = dt.datetime.fromtimestamp(NOW, dt.UTC)
    seen: set[str] = set()

    def run(method: str, url: str, body: bytes, t: Timing) -> None:
        t0 = time.perf_counter()
        message = requests.Request(method, url, data=body).prepare()
        t1 = time.perf_counter()
        nonce = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        signer.sign(
            message,
            key_id=KID,
            created=created,
            expires=created + dt.timedelta(seconds=60),
            nonce=nonce,
            label=LABEL,
            tag="cpar-v1",
            covered_component_ids=COMPONENTS,
            body=body,
        )
        t2 = time.perf_counter()
        (result,) = verifier.verify(
            message, max_age=None, expect_tag="cpar-v1", require_components=COMPONENTS, body=body
        )
        got = result.parameters["nonce"]
        if got in seen:
            raise RuntimeError("replayed nonce")
        seen.add(got)
        t3 = time.perf_counter()
        t["message"] += t1 - t0
        t["sign"] += t2 - t1
        t["verify"] += t3 - t2

    return run


def per_request_us(run: Callable[[str, str, bytes, Timing], None], iterations: int) -> Timing:
    t: Timing = {"message": 0.0, "sign": 0.0, "verify": 0.0}
    for i in range(iterations):
        if i % 2:
            run("GET", GET_URL, b"", t)
        else:
            run("POST", POST_URL, BODY, t)
    return {k: v / iterations * 1e6 for k, v in t.items()}


def interoperates(seed: bytes, pk: bytes) -> str:
    """Does ``verify_request`` accept a request the library signed the same way?"""
    message = requests.Request("POST", POST_URL, data=BODY).prepare()
    created = dt.datetime.fromtimestamp(NOW, dt.UTC)
    HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=Keys(seed)).sign(
        message,
        key_id=KID,
        created=created,
        expires=created + dt.timedelta(seconds=60),
        nonce=base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode(),
        label=LABEL,
        tag="cpar-v1",
        covered_component_ids=COMPONENTS,
        body=BODY,
    )
    try:
        verify_request(
            method="POST",
            authority="relay.example:8080",
            path="/v1/messages",
            query="",
            headers=dict(message.headers),
            body=BODY,
            resolve_key=lambda kid: pk,
            nonces=NonceCache(),
            now=NOW,
            scheme="http",
        )
    except KeysError as exc:
        return f"no: {exc}"
    return "yes"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    seed = os.urandom(32)
    pk, sk = nacl.bindings.crypto_sign_seed_keypair(seed)
    global KID
    KID = key_id(pk)
    runs = {"keys.httpsig": ours(pk, sk), "http-message-signatures": library(seed)}
    for run in runs.values():  # warm up
        per_request_us(run, 200)
    samples: dict[str, list[Timing]] = {name: [] for name in runs}
    gc.disable()
    try:
        for _ in range(args.rounds):
            for name, run in runs.items():
                samples[name].append(per_request_us(run, args.iterations))
    finally:
        gc.enable()
    figures: dict[str, object] = {}
    for name, rounds in samples.items():
        for phase in ("sign", "verify"):
            figures[f"{name} {phase} us"] = round(statistics.median(r[phase] for r in rounds), 1)
        figures[f"{name} sign+verify us"] = round(
            statistics.median(r["sign"] + r["verify"] for r in rounds), 1
        )
    figures["(library: building its request object) us"] = round(
        statistics.median(r["message"] for r in samples["http-message-signatures"]), 1
    )
    ours_us = figures["keys.httpsig sign+verify us"]
    lib_us = figures["http-message-signatures sign+verify us"]
    assert isinstance(ours_us, float) and isinstance(lib_us, float)
    figures["ratio library/ours"] = round(lib_us / ours_us, 2)
    figures["ours accepts library-signed"] = interoperates(seed, pk)
    if args.json:
        print(json.dumps(figures))
    else:
        print("per request, median of rounds (POST with 2 KiB body and GET alternate)")
        for k, v in figures.items():
            print(f"{k:>44}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
