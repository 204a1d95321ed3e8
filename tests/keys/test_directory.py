"""The signed directory: verification, chaining, and the pin that refuses rollback and forks."""

from __future__ import annotations

import json

import pytest

from keys import errors
from keys.directory import Directory, DirectoryPin, sign_directory, sign_rotation
from keys.encoding import b64d, b64e, dumps
from keys.identity import Identity
from keys.jws import sign_compact
from keys.models import DirectoryEntry, WorkingHours
from tests.netfixture import NOW, Network


def _root_pk(net: Network) -> bytes:
    return net.root.signing_key().public


def test_directory_lists_authorities_with_keys_and_escalation(net: Network) -> None:
    d = Directory.verify(net.directory.token, [_root_pk(net)])
    fr = d.get("fr-oclcc")
    assert fr is not None
    assert fr.escalation.duty_desk == "fr-desk" and fr.escalation.supervisor == "fr-ca"
    assert fr.escalation.deputies == ["fr-deputy"]
    assert fr.hours is not None and fr.hours.tz == "Europe/Paris"
    current = fr.current_encryption_key(NOW)
    assert current is not None
    assert current.kid == net["fr-oclcc"].public_keys().encryption_keys[-1].kid
    assert [r.id for r in d.relays()] == ["relay-eu"]
    assert d.signer(net["it-tpc"].signing_key().kid)[0].id == "it-tpc"  # type: ignore[index]


def test_versions_chain_by_hash(net: Network) -> None:
    v1 = net.directory
    v2 = net.republish(now=NOW + 1)
    assert v2.version == 2 and v2.document.prev == v1.hash and v1.document.prev is None


def test_unknown_root_is_refused(net: Network) -> None:
    other_root = Identity.generate("root", kind="root", now=NOW)
    with pytest.raises(errors.UnknownRootError, match="not the pinned network root"):
        Directory.verify(net.directory.token, [other_root.signing_key().public])


def test_bad_signature_is_refused(net: Network) -> None:
    head, payload, sig = net.directory.token.split(".")
    doc = json.loads(b64d(payload))
    doc["authorities"][1]["name"] = "Someone else"
    forged = f"{head}.{b64e(dumps(doc))}.{sig}"
    with pytest.raises(errors.DirectorySignatureError):
        Directory.verify(forged, [_root_pk(net)])


def test_root_signed_but_inconsistent_content_is_refused(net: Network) -> None:
    """Even the root cannot publish an encryption key the authority never signed."""
    doc = json.loads(b64d(net.directory.token.split(".")[1]))
    fr = next(a for a in doc["authorities"] if a["id"] == "fr-oclcc")
    de = next(a for a in doc["authorities"] if a["id"] == "de-bka")
    fr["encryption_keys"][0] = de["encryption_keys"][0]  # swap in another key
    key = net.root.signing_key()
    header = dumps({"alg": "Ed25519", "typ": "cpar-directory+jws", "kid": key.kid})
    token = sign_compact(header, dumps(doc), key.secret)
    with pytest.raises(errors.DirectoryInvalidError, match="fr-oclcc"):
        Directory.verify(token, [key.public])


def test_escalation_naming_an_unknown_authority_is_refused(net: Network) -> None:
    entries = [
        e.model_copy(update={"escalation": e.escalation.model_copy(update={"duty_desk": "nope"})})
        if e.id == "fr-oclcc"
        else e
        for e in net.entries()
    ]
    with pytest.raises(errors.DirectoryInvalidError, match="unknown authority nope"):
        sign_directory(net.root, network="test-net", authorities=entries, previous=None, now=NOW)


def test_pin_accepts_the_next_version_and_refuses_rollback(net: Network) -> None:
    v1 = net.directory
    v2 = net.republish(now=NOW + 1)
    pin = DirectoryPin([_root_pk(net)])
    pin.accept(v1.token)
    assert pin.accept(v2.token).version == 2
    assert pin.accept(v2.token).version == 2  # same again is fine
    with pytest.raises(errors.DirectoryRollbackError, match="older than version 2"):
        pin.accept(v1.token)


def test_pin_refuses_a_fork_with_the_same_version(net: Network) -> None:
    v1 = net.directory
    v2 = net.republish(now=NOW + 1)
    fork = sign_directory(
        net.root, network="test-net", authorities=net.entries()[:-1], previous=v1, now=NOW + 2
    )
    assert fork.version == v2.version and fork.hash != v2.hash
    pin = DirectoryPin([_root_pk(net)])
    pin.accept_history([v1.token, v2.token])
    with pytest.raises(errors.DirectoryForkError, match="fork"):
        pin.accept(fork.token)


def test_pin_refuses_a_version_that_does_not_follow_its_predecessor(net: Network) -> None:
    v1 = net.directory
    net.republish(now=NOW + 1)
    # A v2 built on a different v1 (same root) does not chain to the v1 the client holds.
    other_v1 = sign_directory(
        net.root, network="test-net", authorities=net.entries(), previous=None, now=NOW + 5
    )
    other_v2 = sign_directory(
        net.root, network="test-net", authorities=net.entries(), previous=other_v1, now=NOW + 6
    )
    pin = DirectoryPin([_root_pk(net)])
    pin.accept(v1.token)
    with pytest.raises(errors.DirectoryForkError, match="does not follow"):
        pin.accept(other_v2.token)


def test_pin_needs_history_to_skip_versions(net: Network) -> None:
    v1 = net.directory
    v2 = net.republish(now=NOW + 1)
    v3 = net.republish(now=NOW + 2)
    pin = DirectoryPin([_root_pk(net)])
    pin.accept(v1.token)
    with pytest.raises(errors.DirectoryGapError):
        pin.accept(v3.token)
    assert pin.accept_history([v3.token, v2.token]).version == 3


def test_pin_state_survives_a_restart(net: Network) -> None:
    v1 = net.directory
    v2 = net.republish(now=NOW + 1)
    pin = DirectoryPin([_root_pk(net)])
    pin.accept_history([v1.token, v2.token])
    restored = DirectoryPin.load([_root_pk(net)], pin.dump())
    with pytest.raises(errors.DirectoryRollbackError):
        restored.accept(v1.token)
    with pytest.raises(errors.DirectoryInvalidError):
        DirectoryPin.load([_root_pk(net)], "{not json")


def test_working_hours_follow_the_timezone() -> None:
    hours = WorkingHours(tz="Europe/Paris", days=[1, 2, 3, 4, 5], start="08:00", end="18:00")
    # NOW is Friday 2027-01-15 08:00 UTC = 09:00 in Paris.
    assert hours.is_open(NOW)
    assert hours.is_open(NOW - 3_600_000)  # 07:00 UTC = 08:00 Paris, opening time
    assert not hours.is_open(NOW - 7_200_000)  # 06:00 UTC = 07:00 Paris
    assert not hours.is_open(NOW + 9 * 3_600_000)  # 17:00 UTC = 18:00 Paris, closing time
    assert not hours.is_open(NOW + 86_400_000)  # Saturday
    with pytest.raises(ValueError, match="unknown timezone"):
        WorkingHours(tz="Mars/Olympus", days=[1], start="08:00", end="18:00")


def test_directory_entry_rejects_a_kid_not_derived_from_its_key(net: Network) -> None:
    entry = net.entries()[1].model_dump()
    entry["signing_keys"][0]["kid"] = "aaaaaaaaaaaaaaaa"
    with pytest.raises(ValueError, match="not derived"):
        DirectoryEntry.model_validate(entry)


# --- expiry, network and issue time ------------------------------------------------------


def test_a_version_carries_its_expiry_and_is_expired_only_past_the_grace(net: Network) -> None:
    d = sign_directory(
        net.root,
        network="test-net",
        authorities=net.entries(),
        previous=net.directory,
        now=NOW,
        valid_ms=86_400_000,
    )
    assert d.expires == NOW + 86_400_000
    grace = 7 * 86_400_000
    assert not d.expired(NOW + 86_400_000 + grace, grace)
    assert d.expired(NOW + 86_400_000 + grace + 1, grace)
    assert not net.directory.expired(NOW + 10**12, grace)  # no expiry: never
    with pytest.raises(errors.KeysError, match="expires must be after issued"):
        sign_directory(
            net.root,
            network="test-net",
            authorities=net.entries(),
            previous=None,
            now=NOW,
            valid_ms=0,
        )


def _forged_issue_time(net: Network, previous: Directory, issued: int) -> str:
    """A next version whose ``issued`` goes back (sign_directory itself refuses that)."""
    doc = previous.document.model_copy(
        update={"version": previous.version + 1, "prev": previous.hash, "issued": issued}
    )
    key = net.root.signing_key(NOW)
    header = dumps({"alg": "Ed25519", "typ": "cpar-directory+jws", "kid": key.kid})
    return sign_compact(header, doc.model_dump_json(by_alias=True).encode(), key.secret)


def test_the_pin_refuses_a_version_issued_before_the_newest_it_accepted(net: Network) -> None:
    pin = DirectoryPin([_root_pk(net)])
    pin.accept(net.directory.token)
    with pytest.raises(errors.KeysError, match="this clock is behind"):
        sign_directory(
            net.root,
            network="test-net",
            authorities=net.entries(),
            previous=net.directory,
            now=net.directory.document.issued - 1,
        )
    token = _forged_issue_time(net, net.directory, net.directory.document.issued - 1)
    # A restarted client remembers the issue time too.
    again = DirectoryPin.load([_root_pk(net)], pin.dump())
    for p in (pin, again):
        with pytest.raises(errors.DirectoryRollbackError, match="issued before"):
            p.accept(token)


def test_the_pin_refuses_another_network_even_after_a_restart(net: Network) -> None:
    pin = DirectoryPin([_root_pk(net)])
    pin.accept(net.directory.token)
    other = sign_directory(
        net.root, network="other-net", authorities=net.entries(), previous=None, now=NOW
    )
    again = DirectoryPin.load([_root_pk(net)], pin.dump())
    assert again.network == "test-net"
    for p in (pin, again):
        with pytest.raises(errors.DirectoryForkError, match="not the pinned network 'test-net'"):
            p.accept(other.token)
    # A pin file written before the network was recorded still loads.
    old = DirectoryPin.load([_root_pk(net)], json.dumps({"versions": {"1": net.directory.hash}}))
    assert old.network is None and old.latest == 1


# --- root-key rotation -------------------------------------------------------------------


def _rotated(net: Network) -> tuple[Identity, str, Directory]:
    """A new root, the old root's statement introducing it from version 2, and version 2
    signed by the new root."""
    new_root = Identity.generate("root-2", kind="root", now=NOW - 1000)
    statement = sign_rotation(
        net.root,
        new_root.signing_key().public,
        network="test-net",
        from_version=2,
        now=NOW,
    )
    v2 = sign_directory(
        new_root, network="test-net", authorities=net.entries(), previous=net.directory, now=NOW
    )
    return new_root, statement, v2


def test_the_pin_follows_a_rotation_signed_by_the_pinned_root(net: Network) -> None:
    new_root, statement, v2 = _rotated(net)
    pin = DirectoryPin([_root_pk(net)])
    pin.accept(net.directory.token)
    with pytest.raises(errors.UnknownRootError):
        pin.accept(v2.token)  # not without the statement
    assert pin.follow([statement]) == [new_root.signing_key().public]
    assert pin.accept_history([net.directory.token, v2.token]).version == 2
    # The old root signs no version from 2 on, even a well-formed next one.
    stale = sign_directory(
        net.root, network="test-net", authorities=net.entries(), previous=v2, now=NOW
    )
    with pytest.raises(errors.UnknownRootError, match="rotated away"):
        pin.accept(stale.token)
    # A restarted client remembers the new root and the retirement.
    again = DirectoryPin.load([_root_pk(net)], pin.dump())
    again.accept(v2.token)
    with pytest.raises(errors.UnknownRootError, match="rotated away"):
        again.accept(stale.token)
    assert again.follow([statement]) == []  # already followed


def test_a_rotation_not_signed_by_a_pinned_root_is_not_followed(net: Network) -> None:
    intruder = Identity.generate("root", kind="root", now=NOW - 1000)
    fake_new = Identity.generate("root-x", kind="root", now=NOW - 1000)
    statement = sign_rotation(
        intruder, fake_new.signing_key().public, network="test-net", from_version=2, now=NOW
    )
    pin = DirectoryPin([_root_pk(net)])
    pin.accept(net.directory.token)
    assert pin.follow([statement]) == []
    forged = sign_directory(
        fake_new, network="test-net", authorities=net.entries(), previous=net.directory, now=NOW
    )
    with pytest.raises(errors.UnknownRootError):
        pin.accept(forged.token)
    # A statement whose signature was altered is refused outright.
    _, good, _ = _rotated(net)
    head, payload, sig = good.split(".")
    tampered = f"{head}.{payload}.{'A' if sig[0] != 'A' else 'B'}{sig[1:]}"
    with pytest.raises(errors.DirectorySignatureError):
        pin.follow([tampered])


def test_a_new_root_signs_only_from_its_version_and_a_late_rotation_is_refused(
    net: Network,
) -> None:
    new_root = Identity.generate("root-2", kind="root", now=NOW - 1000)
    pin = DirectoryPin([_root_pk(net)])
    pin.accept(net.directory.token)
    from_5 = sign_rotation(
        net.root, new_root.signing_key().public, network="test-net", from_version=5, now=NOW
    )
    pin.follow([from_5])
    early = sign_directory(
        new_root, network="test-net", authorities=net.entries(), previous=net.directory, now=NOW
    )
    with pytest.raises(errors.UnknownRootError, match="only from version 5"):
        pin.accept(early.token)  # version 2 by the new root: not before 5
    # A rotation from a version the old root already signed is refused, loudly.
    other = DirectoryPin([_root_pk(net)])
    v2 = net.republish(now=NOW)
    other.accept_history([net.history[0].token, v2.token])
    late = sign_rotation(
        net.root, new_root.signing_key().public, network="test-net", from_version=2, now=NOW
    )
    with pytest.raises(errors.DirectoryInvalidError, match="rotate from a later version"):
        other.follow([late])
