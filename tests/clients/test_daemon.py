"""The daemon against a real relay: verify, decrypt, store once, receipt, acknowledge."""

from __future__ import annotations

from pathlib import Path

import pytest

from keys.envelope import seal
from keys.receipts import verify_receipt
from relay.core.errors import RejectedError
from tests.daemonfixture import running_daemon
from tests.netfixture import NOW
from tests.relayfixture import RelayEnv
from tests.waiting import until

NOTICE = {"kind": "free_text", "text": "Lot 112 closes at 18:00"}


@pytest.mark.parametrize("transport", ["websocket", "longpoll"])
async def test_delivery_stores_once_and_receipts_reach_the_sender(
    relay: RelayEnv, tmp_path: Path, transport: str
) -> None:
    net = relay.net
    async with (
        running_daemon(relay, "fr-oclcc", tmp_path / "fr", transport=transport) as fr,
        running_daemon(relay, "it-tpc", tmp_path / "it", transport=transport) as it,
    ):
        sealed = seal(net["it-tpc"], net.directory, to=["fr-oclcc"], content=NOTICE, now=NOW)
        await relay.client("it-tpc").send(sealed.token)
        assert fr.inbox is not None and it.inbox is not None

        async def stored() -> bool:
            return await fr.inbox.received.get(sealed.id) is not None  # type: ignore[union-attr]

        await until(stored)
        msg = await fr.inbox.received.get(sealed.id)
        assert msg is not None and msg.content == NOTICE and msg.sender == "it-tpc"

        async def delivered() -> bool:
            t = await relay.client("it-tpc").timeline(sealed.id)
            return t.state == "delivered"

        await until(delivered)

        async def sender_has_receipt() -> bool:
            return len(await it.inbox.sent.timeline(sealed.id)) >= 1  # type: ignore[union-attr]

        await until(sender_has_receipt)
        stored_receipt = (await it.inbox.sent.timeline(sealed.id))[0]
        r = verify_receipt(
            stored_receipt.token, net.directory, header=sealed.header, envelope_hash=sealed.hash
        )
        assert r.status == "delivered" and r.signer.id == "fr-oclcc"
        # Everything was acknowledged: nothing is queued for either side.
        assert await relay.client("fr-oclcc").poll() == []
        assert fr.stats.stored == 1 and fr.stats.duplicates == 0


async def test_probe_is_answered_with_a_signed_nonce(relay: RelayEnv, tmp_path: Path) -> None:
    from relay.api.state import CORE

    assert relay.server is not None
    core = relay.server.app[CORE]
    assert core.prober.answers.get("fr-oclcc") is None
    async with running_daemon(relay, "fr-oclcc", tmp_path / "fr"):
        assert await core.prober.round() == 1

        async def answered() -> bool:
            return "fr-oclcc" in core.prober.answers

        await until(answered)
        assert core.prober.reachable("fr-oclcc", relay.clock.now)
    # A forged or unexpected answer is refused.
    with pytest.raises(RejectedError, match="no such probe") as err:
        core.prober.answer("fr-oclcc", "not-a-nonce", "x.y.z")
    assert (err.value.status, err.value.code) == (422, "unknown_probe")


async def test_escalation_notices_reach_the_duty_desk_daemon(
    relay: RelayEnv, tmp_path: Path
) -> None:
    net = relay.net
    async with running_daemon(relay, "fr-deputy", tmp_path / "dep") as deputy:
        sealed = seal(
            net["it-tpc"],
            net.directory,
            to=["fr-oclcc"],
            content=NOTICE,
            now=relay.clock.now,
            priority="urgent",
        )
        await relay.client("it-tpc").send(sealed.token)
        await relay.escalate_past_release()  # the deputy is notified

        async def notified() -> bool:
            return deputy.stats.escalations == 1

        await until(notified)
        assert deputy.inbox is not None
        (stored,) = await deputy.inbox.sent.timeline(sealed.id)
        assert stored.status == "escalated"

        # The daemon counts the notice before its ack reaches the relay: wait for that.
        async def acknowledged() -> bool:
            return await relay.client("fr-deputy").poll() == []

        await until(acknowledged)


async def test_the_daemon_serves_its_metrics_on_loopback_when_asked(
    relay: RelayEnv, tmp_path: Path
) -> None:
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    net = relay.net
    async with running_daemon(relay, "fr-oclcc", tmp_path / "fr", metrics_port=0) as fr:
        sealed = seal(net["it-tpc"], net.directory, to=["fr-oclcc"], content=NOTICE, now=NOW)
        await relay.client("it-tpc").send(sealed.token)

        async def stored() -> bool:
            return fr.stats.stored == 1

        await until(stored)
        host, port = fr.metrics_address[:2]
        assert host == "127.0.0.1"
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://{host}:{port}/metrics") as resp,
        ):
            assert resp.status == 200
            text = await resp.text()
        samples = {
            s.name + "".join(f"{{{k}={v}}}" for k, v in sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert samples["cpar_daemon_connected"] == 1
        assert samples["cpar_daemon_messages_stored_total"] == 1
        assert samples["cpar_daemon_unhandled_messages"] == 1  # nobody acknowledged it yet
        assert samples["cpar_daemon_outbox_queued"] == 0
        assert samples["cpar_daemon_retention_forgotten_total{what=received}"] == 0
        pinned = fr.pin.current if fr.pin is not None else None
        expires = pinned.expires if pinned is not None and pinned.expires is not None else 0
        assert samples["cpar_daemon_directory_expires_timestamp_seconds"] == expires / 1000
        assert sealed.id not in text and "Lot 112" not in text  # counts only
