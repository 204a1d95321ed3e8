"""Schema-based fuzzing: schemathesis against the served ``/openapi.json`` of a real relay.

The relay runs on loopback, once on SQLite and once on Redis, in its own thread and
event loop (schemathesis calls it synchronously, through ``requests``). Every ``/v1/`` request is signed (RFC 9421,
keys/httpsig.py) by a real authority identity of the test network, so the requests
reach the handlers instead of stopping at authentication. Both valid and invalid
requests are generated (positive and negative modes). Each answer is checked: never a
5xx, the status and media type documented, the body valid against its schema, and
invalid input refused with a 4xx.

Bounded: a few examples per operation, no deadline, no example database.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi import checks as openapi_checks

from keys.errors import KeysError
from keys.httpsig import sign_request
from keys.identity import Identity
from relay.api.openapi import ROUTES
from relay.app import create_app
from relay.settings import RelaySettings
from tests.netfixture import make_network
from tests.relayfixture import FakeClock, write_relay_files

EXAMPLES_PER_OPERATION = 50


class ThreadedRelay:
    """A relay serving on 127.0.0.1 from its own thread and event loop."""

    def __init__(self, settings: RelaySettings, clock: FakeClock) -> None:
        self.settings = settings
        self.clock = clock
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="relay", daemon=True)
        self.runner: web.AppRunner | None = None
        self.port = 0

    def start(self) -> None:
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)

    async def _start(self) -> int:
        self.runner = web.AppRunner(create_app(self.settings, clock=self.clock))
        await self.runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self.runner, sock).start()
        return int(sock.getsockname()[1])

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


class Signed(requests.auth.AuthBase):
    """Signs every ``/v1/`` request as ``identity`` (RFC 9421, profile cpar-v1)."""

    def __init__(self, identity: Identity, clock: FakeClock) -> None:
        self.identity = identity
        self.clock = clock

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        assert r.url is not None and r.method is not None
        if not urlsplit(r.url).path.startswith("/v1/"):
            return r
        body = r.body if r.body is not None else b""
        if isinstance(body, str):
            body = body.encode()
        assert isinstance(body, bytes), type(body)
        key = self.identity.signing_key(self.clock())
        try:
            headers = sign_request(
                method=r.method,
                url=r.url,
                body=body,
                kid=key.kid,
                secret_key=key.secret,
                now=self.clock() // 1000,
            )
        except KeysError:
            return r  # a URL the signature profile cannot express: sent unsigned (401)
        r.headers.update(headers)
        return r


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def fuzzed_relay(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Signed]]:
    """The relay under test, on each store (Redis: the session's private server)."""
    net = make_network()
    clock = FakeClock()
    # A long-poll with wait=N is clamped to this maximum: the fuzzer does not wait.
    update: dict[str, object] = {"longpoll_max_wait_s": 0.01}
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        server.flushall_sync()
        update |= {"store": "redis", "redis_url": server.url}
    settings = write_relay_files(tmp_path_factory.mktemp("fuzz"), net).model_copy(update=update)
    relay = ThreadedRelay(settings, clock)
    relay.start()
    try:
        yield f"http://127.0.0.1:{relay.port}", Signed(net["it-tpc"], clock)
    finally:
        relay.stop()


@pytest.fixture(scope="module")
def relay_schema(fuzzed_relay: tuple[str, Signed]) -> BaseSchema:
    base_url, _ = fuzzed_relay
    loaded = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    # The signature is added by the session's auth hook (Signed), after generation: a
    # request generated without it would be signed anyway. Missing and bad signatures
    # are covered by tests/test_openapi.py and tests/test_httpsig.py.
    loaded.config.generation.update(with_security_parameters=False)
    return loaded


@pytest.fixture(scope="module")
def signed_session(fuzzed_relay: tuple[str, Signed]) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.auth = fuzzed_relay[1]
        yield session


# Checks that need state the fuzzer does not have (valid signed envelopes, resources it
# created) or that judge something this API does not promise.
EXCLUDED = [
    openapi_checks.positive_data_acceptance,  # a well-formed random envelope is refused (422)
    openapi_checks.use_after_free,
    openapi_checks.ensure_resource_availability,
    # Every request is signed by the session, even the one meant to go without: refusals
    # of missing and bad signatures are tested route by route in tests/test_openapi.py.
    openapi_checks.ignored_auth,
]
# Operator routes are not signed requests (and /ops/events never ends); the rest is fuzzed.
# Invalid requests only where there is an input to make invalid.
OPERATIONS = [
    (mode, method, path)
    for (method, path), route in sorted(ROUTES.items())
    if not path.startswith(("/ops", "/metrics"))
    for mode in GenerationMode
    if mode == GenerationMode.POSITIVE or route.body or route.query or route.path
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "method", "path"), OPERATIONS, ids=[f"{m} {o} {p}" for m, o, p in OPERATIONS]
)
def test_no_5xx_and_no_answer_contradicts_the_schema(
    relay_schema: BaseSchema,
    signed_session: requests.Session,
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    operation = relay_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Case) -> None:
        case.call_and_validate(session=signed_session, excluded_checks=EXCLUDED, timeout=10)

    fuzz()
