"""The keystore: encrypted at rest, 0600, refuses loose permissions and wrong passphrases."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from keys import errors
from keys.encoding import b64e
from keys.identity import Identity
from keys.keystore import (
    load_keystore,
    read_keystore_header,
    resolve_passphrase,
    save_keystore,
    update_keystore,
)
from tests.netfixture import NOW

PASS = "correct horse battery staple"


@pytest.fixture
def ident() -> Identity:
    return Identity.generate("it-tpc", now=NOW)


@pytest.fixture
def store(tmp_path: Path, ident: Identity) -> Path:
    return save_keystore(tmp_path / "it.ks", ident, PASS, strength="test")


def test_round_trip_keeps_every_key(store: Path, ident: Identity) -> None:
    loaded = load_keystore(store, PASS)
    assert loaded.id == "it-tpc" and loaded.kind == "authority"
    assert loaded.public_keys() == ident.public_keys()
    assert loaded.signing_key().seed == ident.signing_key().seed
    assert loaded.encryption_secrets() == ident.encryption_secrets()
    assert read_keystore_header(store) == ("authority", "it-tpc")


def test_file_is_0600_and_holds_no_key_material(store: Path, ident: Identity) -> None:
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    text = store.read_text()
    for secret in (ident.signing_key().seed, ident.encryption_keys[0].secret):
        assert b64e(secret) not in text and secret.hex() not in text


def test_the_moderate_default_is_what_real_keystores_use(tmp_path: Path, ident: Identity) -> None:
    import json

    path = save_keystore(tmp_path / "real.ks", ident, PASS)
    kdf = json.loads(path.read_text())["kdf"]
    assert kdf["alg"] == "argon2id13" and kdf["mem"] >= 256 * 1024 * 1024 and kdf["ops"] >= 3


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_loose_permissions_are_refused(store: Path, mode: int) -> None:
    os.chmod(store, mode)
    with pytest.raises(errors.KeystorePermissionError, match="chmod 600"):
        load_keystore(store, PASS)


def test_wrong_passphrase_is_refused(store: Path) -> None:
    with pytest.raises(errors.WrongPassphraseError, match="does not open"):
        load_keystore(store, "wrong")


def test_altered_file_is_refused(store: Path) -> None:
    text = store.read_text().replace('"id": "it-tpc"', '"id": "fr-oclcc"')
    store.write_text(text)
    with pytest.raises(errors.WrongPassphraseError):
        load_keystore(store, PASS)
    store.write_text("not json")
    with pytest.raises(errors.KeystoreError, match="not a readable keystore"):
        load_keystore(store, PASS)


def test_missing_keystore_and_overwrite_are_refused(
    tmp_path: Path, store: Path, ident: Identity
) -> None:
    with pytest.raises(errors.KeystoreError, match="does not exist"):
        load_keystore(tmp_path / "nope.ks", PASS)
    with pytest.raises(errors.KeystoreError, match="refusing to overwrite"):
        save_keystore(store, ident, PASS, strength="test")
    with pytest.raises(errors.KeystoreError, match="empty passphrase"):
        save_keystore(tmp_path / "new.ks", ident, "", strength="test")


def test_update_keeps_the_kdf_cost_and_refuses_another_identity(
    store: Path, ident: Identity
) -> None:
    rotated = ident.rotate_encryption(now=NOW + 1)
    update_keystore(store, rotated, PASS)
    assert len(load_keystore(store, PASS).encryption_keys) == 2
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    with pytest.raises(errors.KeystoreError, match="not fr-oclcc"):
        update_keystore(store, Identity.generate("fr-oclcc", now=NOW), PASS)


def test_passphrase_sources(tmp_path: Path) -> None:
    f = tmp_path / "pass.txt"
    f.write_text("from-file\n")
    assert resolve_passphrase(file=f, environ={}) == "from-file"
    assert (
        resolve_passphrase(env="MY_PASS", environ={"MY_PASS": "from-env"}, prompt=None)
        == "from-env"
    )
    with pytest.raises(errors.PassphraseUnavailableError, match="MY_PASS"):
        resolve_passphrase(env="MY_PASS", environ={}, prompt=None)
    f.write_text("")
    with pytest.raises(errors.PassphraseUnavailableError, match="empty"):
        resolve_passphrase(file=f, environ={})
    with pytest.raises(errors.PassphraseUnavailableError, match="cannot read"):
        resolve_passphrase(file=tmp_path / "missing", environ={})
