"""Evidence bundles: exported from a real relay after a real lifecycle, verified offline
with the root key alone; any single changed byte is refused with one line naming it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.config import ClientSettings
from clients.directory import PinnedDirectory
from clients.evidence import export_evidence
from keys.cli import main as keys_main
from keys.encoding import b64e
from keys.envelope import seal
from keys.errors import KeysError, SenderKeyRevokedError
from keys.evidence import build_bundle, verify_bundle
from keys.identity import SigningKey
from keys.receipts import sign_receipt
from tests.relayfixture import RelayEnv

NOTICE = {"kind": "free_text", "text": "Lot 112 closes at 18:00"}


async def _lifecycle(relay: RelayEnv, tmp_path: Path) -> tuple[bytes, str]:
    net = relay.net
    sealed = seal(net["it-tpc"], net.directory, to=["fr-oclcc"], content=NOTICE, now=relay.clock())
    await relay.client("it-tpc").send(sealed.token)
    for status, person in (("delivered", None), ("acknowledged", "Lt. Dupont")):
        token = sign_receipt(
            net["fr-oclcc"],
            msg_id=sealed.id,
            envelope_hash=sealed.hash,
            status=status,  # type: ignore[arg-type]
            now=relay.clock(),
            person=person,
        )
        assert await relay.client("fr-oclcc").send_receipt(token)
    client_settings = ClientSettings(
        relay_url=relay.base_url,
        root_key=b64e(net.root.signing_key().public),
        data_dir=tmp_path / "it",
    )
    await asyncio.to_thread(client_settings.data_dir.mkdir)
    pinned = await asyncio.to_thread(PinnedDirectory.load, client_settings)
    data, proven = await export_evidence(
        client_settings, net["it-tpc"], pinned, sealed.id, clock=relay.clock
    )
    assert [s[:2] for s in proven.statements()] == [
        ("sent", "it-tpc"),
        ("accepted", net.relay.id),
        ("delivered", "fr-oclcc"),
        ("acknowledged", "fr-oclcc"),
    ]
    return data, sealed.id


async def test_a_bundle_verifies_offline_with_the_root_key_alone(
    relay: RelayEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, msg_id = await _lifecycle(relay, tmp_path)
    root = relay.net.root.signing_key().public
    proven = verify_bundle(data, [root])
    assert proven.envelope.header.id == msg_id and proven.exporter == "it-tpc"
    assert proven.receipts[-1].body.person == "Lt. Dupont"
    assert proven.newest_head.size >= proven.head.size == 3
    # Through the keys CLI, offline: a file and a root key file.
    bundle, root_file = tmp_path / "evidence.json", tmp_path / "root.pub"
    await asyncio.to_thread(bundle.write_bytes, data)
    await asyncio.to_thread(root_file.write_text, b64e(root) + "\n")
    args = ["evidence", "verify", str(bundle), "--root-key-file", str(root_file)]
    capsys.readouterr()
    assert await asyncio.to_thread(keys_main, args) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"VERIFIED: evidence for message {msg_id}")
    assert "acknowledged by fr-oclcc" in out and "(Lt. Dupont)" in out
    # Another network's root proves nothing.
    other = relay.net["de-bka"].signing_key().public
    with pytest.raises(KeysError, match="directory"):
        verify_bundle(data, [other])
    # A changed byte: exit 1 and one line.
    changed = tmp_path / "changed.json"
    await asyncio.to_thread(changed.write_bytes, data.replace(b'"v": 1', b'"v": 2', 1))
    capsys.readouterr()
    args[2] = str(changed)
    assert await asyncio.to_thread(keys_main, args) == 1
    err = capsys.readouterr().err
    assert err.startswith("keys: error: ") and err.count("\n") == 1


async def test_any_single_byte_change_is_refused(relay: RelayEnv, tmp_path: Path) -> None:
    data, _ = await _lifecycle(relay, tmp_path)
    root = relay.net.root.signing_key().public

    @settings(max_examples=300, deadline=None)
    @given(st.data())
    def flip(draw: st.DataObject) -> None:
        at = draw.draw(st.integers(0, len(data) - 1))
        new = draw.draw(st.integers(0, 255).filter(lambda b: b != data[at]))
        changed = data[:at] + bytes([new]) + data[at + 1 :]
        with pytest.raises(KeysError):
            verify_bundle(changed, [root])

    await asyncio.to_thread(flip)


async def test_a_key_revoked_in_a_later_version_makes_the_bundle_fail(
    relay: RelayEnv, tmp_path: Path
) -> None:
    """Revoked is for every purpose (PROTOCOL.md §2.6): an older version that still lists
    the key does not rescue a statement it signed."""
    data, _ = await _lifecycle(relay, tmp_path)
    ev = json.loads(data)["evidence"]
    net = relay.net
    old = net.relay
    keys = tuple(dataclasses.replace(k, revoked=relay.clock()) for k in old.signing_keys)
    fresh = SigningKey(seed=os.urandom(32), nbf=relay.clock(), exp=relay.clock() + 86_400_000)
    net.relay = dataclasses.replace(old, signing_keys=(*keys, fresh))
    net.republish(now=relay.clock())
    rebuilt = build_bundle(
        net["it-tpc"],
        envelope=ev["envelope"],
        receipts=[(e["index"], e["receipt"], e["path"]) for e in ev["receipts"]],
        head=ev["head"],
        newest_head=ev["newest_head"],
        consistency=ev["consistency"],
        versions=[d.token for d in net.history],
        now=relay.clock(),
    )
    with pytest.raises(SenderKeyRevokedError, match="revoked"):
        verify_bundle(rebuilt, [net.root.signing_key().public])
