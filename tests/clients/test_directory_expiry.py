"""A directory version past its expiry plus the client's grace is refused (fail closed),
with one line that says what to do; within the grace it is still used."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.directory import DirectoryExpiredError, PinnedDirectory
from keys.directory import DirectoryPin, sign_directory
from tests.netfixture import NOW, Network

DAY = 86_400_000


def test_an_expired_directory_is_refused_after_the_grace(net: Network, tmp_path: Path) -> None:
    expiring = sign_directory(
        net.root,
        network="test-net",
        authorities=net.entries(),
        previous=net.directory,
        now=NOW,
        valid_ms=30 * DAY,
    )
    pin = DirectoryPin([net.root.signing_key().public])
    pin.accept_history([net.directory.token, expiring.token])
    pinned = PinnedDirectory(pin, tmp_path / "pin.json", grace_ms=7 * DAY)
    assert pinned.require(NOW + 30 * DAY).hash == expiring.hash  # expired, within the grace
    assert pinned.require(NOW + 37 * DAY).hash == expiring.hash
    with pytest.raises(DirectoryExpiredError) as refused:
        pinned.require(NOW + 37 * DAY + 1)
    message = str(refused.value)
    assert f"directory version {expiring.version} expired on" in message
    assert "publishes a newer version" in message and "\n" not in message
    with pytest.raises(DirectoryExpiredError):
        pinned.usable(expiring, NOW + 40 * DAY)
    # The next version, published by the keeper, is used again.
    renewed = sign_directory(
        net.root,
        network="test-net",
        authorities=net.entries(),
        previous=expiring,
        now=NOW + 38 * DAY,
        valid_ms=90 * DAY,
    )
    pin.accept(renewed.token)
    assert pinned.require(NOW + 40 * DAY).hash == renewed.hash
