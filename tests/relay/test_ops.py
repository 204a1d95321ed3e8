"""The operator side: credentials, /metrics, /ops snapshot and events, message timelines,
and `relay status`, against an in-process relay with a fake clock."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import socket
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from clients.client import RelayStream
from clients.errors import AuthenticationError
from keys import wire
from keys.encoding import b64e
from keys.receipts import sign_probe
from relay import cli
from relay.api import ops
from relay.api.ops import match_operator, token_digest
from relay.api.state import DIRECTORY
from relay.settings import OperatorCredential, RelaySettings, load_settings
from tests.netfixture import AUTHORITIES, NOW, Network
from tests.opsfixture import (
    OPERATOR_TOKEN,
    REMIND_URGENT_MS,
    answer,
    connect,
    core_of,
    open_escalation,
    seal_to,
    send,
)
from tests.relayfixture import FakeClock, RelayEnv, start_relay, write_relay_files
from tests.waiting import until


@pytest.fixture
def relay_settings(tmp_path: Path, net: Network) -> RelaySettings:
    """The conftest relay, with one operator configured."""
    base = write_relay_files(tmp_path, net)
    cred = OperatorCredential(name="ops-alice", token_sha256=token_digest(OPERATOR_TOKEN))
    return base.model_copy(update={"operators": [cred]})


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    @property
    def content_type(self) -> str:
        return str(self.headers.get("Content-Type", "")).split(";")[0]

    def json(self) -> Any:
        return json.loads(self.body)


def bearer(token: str = OPERATOR_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(password: str, user: str = "ops-alice") -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


async def get(
    http: aiohttp.ClientSession, env: RelayEnv, path: str, headers: dict[str, str] | None = None
) -> Reply:
    async with http.get(env.base_url + path, headers=headers or {}) as resp:
        return Reply(resp.status, resp.headers, await resp.read())


def assert_problem(reply: Reply, status: int, code: str) -> dict[str, Any]:
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.content_type == "application/problem+json"
    body = reply.json()
    assert body["status"] == status and body["code"] == code and body["detail"]
    return body  # type: ignore[no-any-return]


def by_id(snap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["id"]: a for a in snap["authorities"]}


# -- credentials -------------------------------------------------------------------------

OPERATOR_PATHS = [
    "/metrics",
    "/ops",
    "/ops/static/ops.js",
    "/ops/snapshot",
    "/ops/events",
    "/ops/messages/some-id",
]


@pytest.mark.parametrize("path", OPERATOR_PATHS)
async def test_operator_endpoints_need_an_operator_token(
    relay: RelayEnv, http: aiohttp.ClientSession, path: str
) -> None:
    reply = await get(http, relay, path)
    body = assert_problem(reply, 401, "operator_auth_required")
    assert "Bearer" in body["detail"]
    challenges = reply.headers.getall("WWW-Authenticate")
    assert any(c.startswith("Basic ") for c in challenges)  # a browser can log in
    for wrong in (
        bearer("not-the-token"),
        basic("not-the-token"),
        {"Authorization": "Basic !!not base64!!"},
        {"Authorization": f"Token {OPERATOR_TOKEN}"},
        bearer(OPERATOR_TOKEN[:-1]),
    ):
        assert_problem(await get(http, relay, path, wrong), 401, "operator_auth_required")


async def test_operator_token_opens_them_by_bearer_and_by_basic(
    relay: RelayEnv, http: aiohttp.ClientSession
) -> None:
    for headers in (bearer(), basic(OPERATOR_TOKEN), basic(OPERATOR_TOKEN, user="anyone")):
        reply = await get(http, relay, "/ops/snapshot", headers)
        assert reply.status == 200 and reply.content_type == "application/json"
        page = await get(http, relay, "/ops", headers)
        assert page.status == 200 and page.content_type == "text/html"
        metrics = await get(http, relay, "/metrics", headers)
        assert metrics.status == 200 and b"cpar_messages_accepted_total" in metrics.body


async def test_an_authority_signature_does_not_open_operator_endpoints(relay: RelayEnv) -> None:
    client = relay.client("it-tpc")
    for path in ("/ops/snapshot", "/metrics", "/ops/messages/x"):
        with pytest.raises(AuthenticationError) as err:
            await client.request("GET", path)
        assert err.value.code == "operator_auth_required"
    # ...while the very same signed client is accepted on the authority API.
    assert (await client.request("GET", "/v1/directory"))[0] == 200


async def test_no_operator_configured_disables_the_endpoints(
    tmp_path: Path, net: Network, http: aiohttp.ClientSession
) -> None:
    settings = await asyncio.to_thread(write_relay_files, tmp_path / "plain", net)
    assert settings.operators == []
    env = RelayEnv(net=net, settings=settings, clock=FakeClock())
    async for started in start_relay(env):
        for path in OPERATOR_PATHS:
            body = assert_problem(
                await get(http, started, path, bearer()), 403, "operators_disabled"
            )
            assert "relay operator-token --name" in body["detail"]
            assert "[[operators]]" in body["detail"]
        assert (await get(http, started, "/healthz")).status == 200


def test_operator_token_command_prints_a_token_and_its_config_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], net: Network
) -> None:
    assert cli.main(["operator-token", "--name", "ops-bob"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    token = lines[1]
    assert len(token) >= 43 and re.fullmatch(r"[A-Za-z0-9_-]+", token)
    snippet = out[out.index("[[operators]]") :]
    entry = tomllib.loads(snippet)["operators"][0]
    assert entry == {"name": "ops-bob", "token_sha256": hashlib.sha256(token.encode()).hexdigest()}
    assert token not in snippet  # the config holds the digest only
    # The snippet pasted into a relay config file loads, and the printed token matches it.
    config = tmp_path / "relay.toml"
    config.write_text(f'root_key = "{b64e(net.root.signing_key().public)}"\n\n{snippet}')
    settings = load_settings(config)
    assert match_operator(settings.operators, token) == "ops-bob"
    assert match_operator(settings.operators, token + "x") is None
    # Every run makes a new token.
    assert cli.main(["operator-token", "--name", "ops-bob"]) == 0
    assert capsys.readouterr().out.splitlines()[1] != token
    # A name that could not go in the config is refused.
    assert cli.main(["operator-token", "--name", "bad name!"]) == 2
    assert "--name" in capsys.readouterr().err


# -- /metrics ----------------------------------------------------------------------------


async def test_metrics_after_traffic(relay: RelayEnv, http: aiohttp.ClientSession) -> None:
    ws = await connect(relay, "fr-oclcc")
    try:
        first, second = seal_to(relay), seal_to(relay)
        await send(relay, first)
        await send(relay, second)
        relay.clock.advance(1500)
        await answer(relay, first, "delivered")
        relay.clock.advance(4000)
        reply = await get(http, relay, "/metrics", bearer())
    finally:
        await ws.close()
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(reply.body.decode())}
    for name, family in families.items():
        assert name.startswith("cpar_"), name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), name

    def value(name: str, sample: str | None = None, **labels: str) -> float:
        for s in families[name].samples:
            if s.name == (sample or name) and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
        raise AssertionError(f"no sample {sample or name} {labels}")

    assert families["cpar_messages_accepted"].type == "counter"
    assert value("cpar_messages_accepted", "cpar_messages_accepted_total") == 2
    assert value("cpar_receipts", "cpar_receipts_total", status="delivered") == 1
    assert value("cpar_receipts", "cpar_receipts_total", status="acknowledged") == 0
    latency = "cpar_delivery_latency_seconds"
    assert families[latency].type == "histogram"
    assert value(latency, latency + "_count") == 1
    assert value(latency, latency + "_sum") == pytest.approx(1.5)
    assert value(latency, latency + "_bucket", le="1.0") == 0
    assert value(latency, latency + "_bucket", le="2.5") == 1
    for gauge in (
        "cpar_pending_messages",
        "cpar_oldest_unacknowledged_age_seconds",
        "cpar_connected_daemons",
        "cpar_pending_timers",
        "cpar_overdue_timers",
    ):
        assert families[gauge].type == "gauge", gauge
    # Two envelopes wait for fr-oclcc's acknowledgement, one receipt for it-tpc.
    assert value("cpar_pending_messages") == 3
    assert value("cpar_oldest_unacknowledged_age_seconds") == pytest.approx(5.5)
    assert value("cpar_connected_daemons") == 1
    assert value("cpar_pending_timers") == 4  # first step and expiry, per message
    assert value("cpar_overdue_timers") == 0
    # Per authority: one series per authority of the directory (a bounded label set),
    # never a per-message label.
    assert value("cpar_authority_queue_depth", authority="fr-oclcc") == 2
    assert value("cpar_authority_queue_depth", authority="it-tpc") == 1
    assert value("cpar_authority_oldest_unacknowledged_age_seconds", authority="fr-oclcc") == (
        pytest.approx(5.5)
    )
    assert value("cpar_authority_open_escalations", authority="fr-oclcc") == 0
    assert value("cpar_store_up") == 1
    assert value("cpar_messages_at_notify_step") == 0
    listed = {e.id for e in relay.net.directory.authorities if e.role != "relay"}
    for name in ("cpar_authority_connected", "cpar_authority_reachable"):
        labelled = {smp.labels["authority"] for smp in families[name].samples}
        assert labelled == listed, name
    assert first.id not in reply.body.decode()


async def test_metrics_gauges_follow_the_relay_between_scrapes(
    relay: RelayEnv, http: aiohttp.ClientSession
) -> None:
    msg = seal_to(relay, to="de-bka")
    await send(relay, msg)
    body = (await get(http, relay, "/metrics", bearer())).body.decode()
    assert "cpar_pending_messages 1.0" in body and "cpar_connected_daemons 0.0" in body
    # A daemon on the long-poll fallback counts as connected while it waits.
    client = relay.client("fr-oclcc")
    waiting = asyncio.create_task(client.poll(wait=1))

    async def attached() -> bool:
        return core_of(relay).delivery.hub.connected("fr-oclcc")

    await until(attached)
    body = (await get(http, relay, "/metrics", bearer())).body.decode()
    assert "cpar_connected_daemons 1.0" in body
    assert await waiting == []
    items = await relay.client("de-bka").poll()
    assert await relay.client("de-bka").ack([i.seq for i in items]) == 1
    body = (await get(http, relay, "/metrics", bearer())).body.decode()
    assert "cpar_connected_daemons 0.0" in body
    assert "cpar_pending_messages 0.0" in body
    assert "cpar_oldest_unacknowledged_age_seconds 0.0" in body


# -- /ops/snapshot -----------------------------------------------------------------------


async def test_snapshot_lists_every_authority_with_presence_and_queue(
    relay: RelayEnv, http: aiohttp.ClientSession
) -> None:
    ws = await connect(relay, "de-bka")
    try:
        msg = seal_to(relay)  # fr-oclcc is not connected: its copy waits
        await send(relay, msg)
        relay.clock.advance(7000)
        snap = (await get(http, relay, "/ops/snapshot", bearer())).json()
    finally:
        await ws.close()
    assert snap["relay"] == relay.net.relay.id
    assert snap["healthy"] is True and snap["problems"] == []
    rows = by_id(snap)
    assert set(rows) == set(AUTHORITIES)  # every authority in the directory, not the relay
    assert rows["de-bka"]["connected"] is True and rows["de-bka"]["last_seen"] == relay.clock()
    assert rows["fr-oclcc"]["connected"] is False and rows["fr-oclcc"]["last_seen"] is None
    assert rows["fr-oclcc"]["queue_depth"] == 1
    assert rows["fr-oclcc"]["oldest_unacked_age_s"] == 7.0
    assert rows["de-bka"]["queue_depth"] == 0 and rows["de-bka"]["oldest_unacked_age_s"] is None
    assert rows["fr-oclcc"]["name"] == AUTHORITIES["fr-oclcc"][0]
    assert snap["queued"] == 1 and snap["connected_daemons"] == 1
    assert snap["timers"]["pending"] == 2 and snap["timers"]["overdue"] == 0
    assert snap["escalations"] == []


async def test_snapshot_shows_when_an_offline_daemon_was_last_seen(
    relay: RelayEnv, http: aiohttp.ClientSession
) -> None:
    # A long-poll that ends: the daemon was there, then went away.
    assert await relay.client("de-bka").poll(wait=1) == []
    left_at = relay.clock()
    relay.clock.advance(60_000)
    rows = by_id((await get(http, relay, "/ops/snapshot", bearer())).json())
    assert rows["de-bka"]["connected"] is False
    assert rows["de-bka"]["last_seen"] == left_at
    assert rows["fr-oclcc"]["last_seen"] is None  # never seen since the relay started


async def test_a_daemon_that_closes_its_websocket_is_shown_offline(
    relay: RelayEnv, http: aiohttp.ClientSession
) -> None:
    ws = await connect(relay, "de-bka")
    await ws.close()

    async def gone() -> bool:
        return not core_of(relay).delivery.hub.connected("de-bka")

    await until(gone, limit_s=2)
    rows = by_id((await get(http, relay, "/ops/snapshot", bearer())).json())
    assert rows["de-bka"]["connected"] is False and rows["de-bka"]["last_seen"] is not None


async def test_snapshot_shows_open_escalations_with_their_timeline(
    relay: RelayEnv, http: aiohttp.ClientSession
) -> None:
    msg = await open_escalation(relay)
    reply = await get(http, relay, "/ops/snapshot", bearer())
    snap = reply.json()
    (esc,) = snap["escalations"]
    assert esc["id"] == msg.id and esc["sender"] == "it-tpc" and esc["to"] == ["fr-oclcc"]
    assert esc["priority"] == "urgent" and esc["escalation_step"] == "remind"
    statuses = [(e["status"], e.get("step")) for e in esc["timeline"]]
    assert statuses == [("accepted", None), ("escalated", "remind")]
    assert esc["timeline"][1]["by"] == relay.net.relay.id
    assert esc["timeline"][1]["at"] >= msg.header.created + REMIND_URGENT_MS
    assert by_id(snap)["fr-oclcc"]["open_escalations"] == 1
    assert by_id(snap)["it-tpc"]["open_escalations"] == 0
    # Metadata only: neither the envelope nor any receipt token leaves the relay here.
    assert msg.token not in reply.body.decode()
    assert msg.token.split(".")[1] not in reply.body.decode()

    # Acknowledging closes it.
    await answer(relay, msg, "acknowledged")
    snap = (await get(http, relay, "/ops/snapshot", bearer())).json()
    assert snap["escalations"] == [] and by_id(snap)["fr-oclcc"]["open_escalations"] == 0


async def test_snapshot_reports_delivery_latency_per_authority(
    relay: RelayEnv, http: aiohttp.ClientSession
) -> None:
    msgs = [seal_to(relay) for _ in range(4)] + [seal_to(relay, to="de-bka")]
    for m in msgs:
        await send(relay, m)
    # Snapshot once before any receipt: the messages are being followed.
    rows = by_id((await get(http, relay, "/ops/snapshot", bearer())).json())
    assert rows["fr-oclcc"]["latency_p50_s"] is None and rows["fr-oclcc"]["latency_samples"] == 0
    for i, m in enumerate(msgs[:4]):
        relay.clock.advance(1000 if i < 3 else 9000)
        await answer(relay, m, "delivered")
    rows = by_id((await get(http, relay, "/ops/snapshot", bearer())).json())
    fr = rows["fr-oclcc"]
    # Latencies 1, 2, 3 and 12 seconds.
    assert fr["latency_samples"] == 4
    assert fr["latency_p50_s"] == 2.0 and fr["latency_p95_s"] == 12.0
    assert rows["de-bka"]["latency_p50_s"] is None  # never answered
    # A later acknowledgement does not count as a second delivery.
    await answer(relay, msgs[0], "acknowledged")
    rows = by_id((await get(http, relay, "/ops/snapshot", bearer())).json())
    assert rows["fr-oclcc"]["latency_samples"] == 4


async def test_snapshot_shows_the_last_probe_answer(
    relay: RelayEnv, http: aiohttp.ClientSession
) -> None:
    rows = by_id((await get(http, relay, "/ops/snapshot", bearer())).json())
    assert rows["fr-oclcc"]["probe_answered_at"] is None
    core = core_of(relay)
    core.prober.answers["fr-oclcc"] = relay.clock() - 3000
    core.prober.rtt_ms["fr-oclcc"] = 42
    rows = by_id((await get(http, relay, "/ops/snapshot", bearer())).json())
    assert rows["fr-oclcc"]["probe_answered_at"] == relay.clock() - 3000
    assert rows["fr-oclcc"]["probe_rtt_ms"] == 42
    assert rows["fr-oclcc"]["reachable"] is True
    assert rows["de-bka"]["reachable"] is False


# -- /ops/messages/{id} ------------------------------------------------------------------


async def test_message_timeline_lookup(relay: RelayEnv, http: aiohttp.ClientSession) -> None:
    msg = seal_to(relay, priority="high")
    await send(relay, msg)
    relay.clock.advance(2000)
    delivered = await answer(relay, msg, "delivered")
    relay.clock.advance(30_000)
    acked = await answer(relay, msg, "acknowledged")
    reply = await get(http, relay, f"/ops/messages/{msg.id}", bearer())
    assert reply.status == 200
    m = reply.json()
    assert m["id"] == msg.id and m["sender"] == "it-tpc" and m["to"] == ["fr-oclcc"]
    assert m["priority"] == "high" and m["state"] == "acknowledged"
    assert m["envelope_hash"] == msg.hash
    events = [(e["status"], e["by"]) for e in m["timeline"]]
    assert events == [
        ("accepted", relay.net.relay.id),
        ("delivered", "fr-oclcc"),
        ("acknowledged", "fr-oclcc"),
    ]
    accepted_at = m["accepted_at"]
    assert m["timeline"][1]["received_at"] == accepted_at + 2000
    assert m["timeline"][2]["received_at"] == accepted_at + 32_000
    text = reply.body.decode()
    for secret in (msg.token, delivered, acked):
        assert secret not in text

    missing = await get(http, relay, "/ops/messages/no-such-message", bearer())
    assert_problem(missing, 404, "unknown_message")
    # The page renders the same timeline for ?message=..., escaped.
    page = (await get(http, relay, f"/ops?message={msg.id}", bearer())).body.decode()
    assert '<td class="id">fr-oclcc</td>' in page and "acknowledged" in page


# -- /ops page ---------------------------------------------------------------------------


async def test_dashboard_is_self_contained_and_escapes_what_it_shows(
    relay: RelayEnv, http: aiohttp.ClientSession
) -> None:
    msg = await open_escalation(relay)
    reply = await get(http, relay, "/ops?message=%3Cscript%3Ealert(1)%3C/script%3E", bearer())
    assert reply.status == 200
    page = reply.body.decode()
    csp = reply.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    # Nothing inline: the page's only style and script are its own files.
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "unsafe-inline" not in csp and "nonce-" not in csp
    assert re.findall(r"<script[^>]*>", page) == ['<script src="ops/static/ops.js">']
    assert re.findall(r"<link[^>]*>", page) == [
        '<link rel="icon" href="data:,">',
        '<link rel="stylesheet" href="ops/static/ops.css">',
    ]
    assert "<style" not in page and " style=" not in page and "@import" not in page
    assert not re.search(r"(src|href)=\"?https?:", page)
    for aid in AUTHORITIES:
        assert f'data-authority="{aid}"' in page
    assert f'data-message="{msg.id}"' in page and "escalated (remind)" in page
    # The looked-up id is shown escaped, never as markup.
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert msg.token not in page


@pytest.mark.parametrize(
    ("name", "media_type"), [("ops.css", "text/css"), ("ops.js", "text/javascript")]
)
async def test_dashboard_files_are_served_from_the_package(
    relay: RelayEnv, http: aiohttp.ClientSession, name: str, media_type: str
) -> None:
    reply = await get(http, relay, f"/ops/static/{name}", bearer())
    assert reply.status == 200 and reply.content_type == media_type
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert "https:" not in reply.body.decode() and "http:" not in reply.body.decode()
    missing = await get(http, relay, "/ops/static/..%2Fops_page.py", bearer())
    assert_problem(missing, 404, "not_found")


async def test_the_page_and_the_live_updates_show_the_same_formatted_text(
    relay: RelayEnv, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Times are formatted once, by the relay: the page and each SSE event carry the
    same strings, so the script has nothing to format."""
    monkeypatch.setattr(ops, "SSE_INTERVAL_S", 60)
    msg = await open_escalation(relay)
    page = (await get(http, relay, "/ops", bearer())).body.decode()
    async with http.get(relay.base_url + "/ops/events", headers=bearer()) as resp:
        _, snap = await read_event(resp)
    view = snap["view"]
    as_of = view["summary"]["as-of"]["text"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", as_of)
    assert f'<span id="as-of">{as_of}</span>' in page
    (row,) = [m for m in view["escalations"] if m["id"] == msg.id]
    for line in row["timeline"]:
        assert f"<li>{line}</li>" in page
    assert any(line.startswith("escalated (remind) by relay-eu at ") for line in row["timeline"])
    fr = next(a for a in view["authorities"] if a["id"] == "fr-oclcc")
    assert [c["text"] for c in fr["cells"]][:2] == [
        "offline, unreachable since 2027-01-15 08:00:00Z",
        "—",
    ]
    script = (await get(http, relay, "/ops/static/ops.js", bearer())).body.decode()
    assert "getUTC" not in script and "Date(" not in script and "toFixed" not in script


# -- /ops/events (SSE) -------------------------------------------------------------------


async def read_event(resp: aiohttp.ClientResponse) -> tuple[str, Any]:
    event, data = "message", ""
    while True:
        line = (await asyncio.wait_for(resp.content.readline(), 5)).decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line == "" and data:
            return event, json.loads(data)


async def test_events_stream_sends_a_snapshot_on_connect_and_then_updates(
    relay: RelayEnv, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ops, "SSE_INTERVAL_S", 0.05)
    async with http.get(relay.base_url + "/ops/events", headers=bearer()) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        event, snap = await read_event(resp)
        assert event == "snapshot"
        assert set(by_id(snap)) == set(AUTHORITIES)
        assert by_id(snap)["fr-oclcc"]["connected"] is False
        ws = await connect(relay, "fr-oclcc")
        try:
            for _ in range(100):
                event, snap = await read_event(resp)
                if by_id(snap)["fr-oclcc"]["connected"]:
                    break
            else:
                raise AssertionError("the stream never showed fr-oclcc connected")
        finally:
            await ws.close()


async def test_events_stream_ends_when_the_relay_shuts_down(
    relay: RelayEnv, http: aiohttp.ClientSession
) -> None:
    async with http.get(relay.base_url + "/ops/events", headers=bearer()) as resp:
        await read_event(resp)
        assert relay.server is not None
        async with asyncio.timeout(5):  # well within the 10 s shutdown grace
            await relay.server.close()
            assert await resp.content.read() is not None


# -- relay status ------------------------------------------------------------------------


@dataclass
class Run:
    code: int
    out: str
    err: str


async def status(capsys: pytest.CaptureFixture[str], *args: str) -> Run:
    code = await asyncio.to_thread(cli.main, ["status", *args])
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


@pytest.fixture
async def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "operator.token"
    await asyncio.to_thread(path.write_text, OPERATOR_TOKEN + "\n")
    return path


async def test_relay_status_prints_tables_and_exits_0_when_healthy(
    relay: RelayEnv, token_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Offline for ten minutes is within this network's threshold (an hour): not a problem.
    core_of(relay).read.unreachable_after_ms = 3_600_000
    ws = await connect(relay, "de-bka")
    try:
        msg = await open_escalation(relay)
        run = await status(capsys, "--url", relay.base_url, "--token-file", str(token_file))
        as_json = await status(
            capsys, "--url", relay.base_url, "--token-file", str(token_file), "--json"
        )
    finally:
        await ws.close()
    assert run.code == 0, run.err
    assert run.err == ""
    for title in ("Authorities", "Open escalations", "Escalation timers"):
        assert title in run.out
    rows = {
        cells[0]: cells
        for line in run.out.splitlines()
        if len(cells := [c.strip() for c in line.split("│")[1:-1]]) == 9
    }
    assert set(AUTHORITIES) <= set(rows)
    # Connected, but the clock jumped ten minutes with no probe answered in between.
    assert rows["de-bka"][1:3] == ["connected, unreachable since 2027-01-15 08:00:00Z", "now"]
    # fr-oclcc: offline, two items queued (the notice and its reminder), one open escalation.
    assert rows["fr-oclcc"][1] == "offline, unreachable since 2027-01-15 08:00:00Z"
    assert rows["fr-oclcc"][4:7] == ["2", "10m 01s", "1"]
    assert "healthy" in run.out
    assert msg.id in run.out and "remind" in run.out and "urgent" in run.out

    assert as_json.code == 0
    snap = json.loads(as_json.out)
    assert snap["healthy"] is True
    assert by_id(snap)["de-bka"]["connected"] is True
    assert [e["id"] for e in snap["escalations"]] == [msg.id]


async def test_relay_status_exits_1_when_a_timer_is_overdue(
    relay: RelayEnv,
    token_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    core = core_of(relay)

    async def stuck() -> int:  # the escalation worker has stopped firing timers
        return 0

    monkeypatch.setattr(core.escalation, "tick", stuck)
    core.read.unreachable_after_ms = 3_600_000  # only the timer is a problem here
    await send(relay, seal_to(relay, priority="urgent"))
    relay.clock.advance(REMIND_URGENT_MS + 5000)
    run = await status(capsys, "--url", relay.base_url, "--token-file", str(token_file))
    assert run.code == 1
    assert run.err.strip().splitlines() == [
        "relay: error: degraded: 1 escalation timer is overdue by more than 1000 ms"
    ]
    assert "Escalation timers" in run.out  # the tables are still printed
    run = await status(capsys, "--url", relay.base_url, "--token-file", str(token_file), "--json")
    assert run.code == 1
    snap = json.loads(run.out)
    assert snap["healthy"] is False and snap["timers"]["overdue"] == 1


async def test_relay_status_exits_1_when_the_relay_is_unreachable(
    token_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = await status(capsys, "--url", f"http://127.0.0.1:{port}", "--token-file", str(token_file))
    assert run.code == 1
    assert run.out == ""
    (line,) = run.err.strip().splitlines()
    assert line.startswith("relay: error: cannot reach the relay at http://127.0.0.1:")


async def test_relay_status_exits_1_with_a_refused_token(
    relay: RelayEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = tmp_path / "wrong.token"
    await asyncio.to_thread(wrong.write_text, "not-an-operator-token")
    run = await status(capsys, "--url", relay.base_url, "--token-file", str(wrong))
    assert run.code == 1 and run.out == ""
    (line,) = run.err.strip().splitlines()
    assert "answered 401" in line and "not configured" in line


# -- degraded health -----------------------------------------------------------------------


async def answer_probes(env: RelayEnv, sockets: dict[str, RelayStream]) -> None:
    """One probe round, answered by each connected test daemon as a real daemon does."""
    core = core_of(env)
    assert await core.prober.round() == len(sockets)
    for aid, ws in sockets.items():
        async with asyncio.timeout(5):
            while not isinstance(frame := await ws.receive(), wire.Probe):
                pass
        token = sign_probe(env.net[aid], nonce=frame.nonce, now=env.clock())
        await ws.answer_probe(frame.nonce, token)

    async def answered() -> bool:
        return all(core.prober.reachable(aid, env.clock()) for aid in sockets)

    await until(answered)


async def test_an_authority_unreachable_past_the_threshold_makes_health_degraded(
    relay: RelayEnv,
    http: aiohttp.ClientSession,
    token_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    others = [a for a in AUTHORITIES if a != "fr-oclcc"]
    sockets = {aid: await connect(relay, aid) for aid in others}
    try:
        await answer_probes(relay, sockets)
        relay.clock.advance(9 * 60_000)  # fr-oclcc: never seen, but within 10 minutes
        await answer_probes(relay, sockets)
        run = await status(capsys, "--url", relay.base_url, "--token-file", str(token_file))
        assert run.code == 0, run.err
        relay.clock.advance(2 * 60_000)
        await answer_probes(relay, sockets)
        run = await status(capsys, "--url", relay.base_url, "--token-file", str(token_file))
        snap = json.loads(
            (
                await status(
                    capsys, "--url", relay.base_url, "--token-file", str(token_file), "--json"
                )
            ).out
        )
        page = (await get(http, relay, "/ops", bearer())).body.decode()
    finally:
        for ws in sockets.values():
            await ws.close()
    assert run.code == 1
    assert run.err.strip().splitlines() == [
        "relay: error: degraded: fr-oclcc unreachable for 11m 00s (since 2027-01-15 08:00:00Z)"
    ]
    assert "degraded" in run.out
    assert snap["status"] == "degraded" and snap["healthy"] is False
    fr = by_id(snap)["fr-oclcc"]
    assert (fr["reachable"], fr["unreachable_since"]) == (False, NOW)
    assert by_id(snap)["de-bka"]["reachable"] is True
    assert "degraded: fr-oclcc unreachable for 11m 00s" in page


async def test_a_message_at_the_notify_step_makes_health_degraded(
    relay: RelayEnv,
    http: aiohttp.ClientSession,
    token_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    core_of(relay).read.unreachable_after_ms = 30 * 86_400_000  # only the message matters here
    msg = seal_to(relay, priority="urgent")
    await send(relay, msg)
    for minutes in (11, 20, 90):  # remind, release, notify
        relay.clock.advance(minutes * 60_000)
        await core_of(relay).escalation.tick()
    run = await status(capsys, "--url", relay.base_url, "--token-file", str(token_file), "--json")
    assert run.code == 1
    assert run.err.strip().splitlines() == [
        f"relay: error: degraded: message {msg.id} from it-tpc to fr-oclcc reached the notify step"
    ]
    snap = json.loads(run.out)
    (esc,) = snap["escalations"]
    assert (esc["escalation_step"], esc["next_step"], esc["next_due"]) == ("notify", None, None)
    assert esc["overdue_by_s"] == pytest.approx((121 - 10) * 60)  # since the first step was due
    metrics = (await get(http, relay, "/metrics", bearer())).body.decode()
    assert "cpar_messages_at_notify_step 1.0" in metrics
    assert "cpar_degraded 1.0" in metrics


async def test_open_escalations_are_sorted_by_urgency_with_their_next_step(
    relay: RelayEnv, token_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    core_of(relay).read.unreachable_after_ms = 30 * 86_400_000
    high = seal_to(relay, priority="high")
    await send(relay, high)
    relay.clock.advance(60_000)
    urgent = seal_to(relay, priority="urgent")
    await send(relay, urgent)
    relay.clock.advance(2 * 3_600_000 + 60_000)  # both past their reminder
    await core_of(relay).escalation.tick()
    run = await status(capsys, "--url", relay.base_url, "--token-file", str(token_file), "--json")
    snap = json.loads(run.out)
    assert [e["id"] for e in snap["escalations"]] == [urgent.id, high.id]
    first = snap["escalations"][0]
    assert first["next_step"] == "release"
    assert first["next_due"] == NOW + 60_000 + 30 * 60_000


async def test_relay_status_exits_1_when_the_directory_nears_its_expiry(
    relay: RelayEnv, token_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    core_of(relay).read.unreachable_after_ms = 3_600_000  # only the directory is a problem
    d = relay.net.republish(now=NOW, valid_ms=3 * 86_400_000)
    folder = relay.settings.directory_dir
    await asyncio.to_thread((folder / f"v{d.version:04d}.jws").write_text, d.token + "\n")
    assert relay.server is not None
    await asyncio.to_thread(relay.server.app[DIRECTORY].load)  # the 5 s reload, now
    run = await status(capsys, "--url", relay.base_url, "--token-file", str(token_file))
    assert run.code == 1
    (line,) = run.err.strip().splitlines()
    assert f"directory version {d.version} expires on 2027-01-18" in line
    assert "publish a newer version" in line
