"""The ``keys`` command line, driven through ``keys.cli.main`` exactly as a user runs it.

Every test runs a real ceremony in ``tmp_path``: real libsodium keys, real argon2id
keystores (at the cheap ``--kdf test`` cost), real signed directory files. The
passphrase travels in an environment variable whose name is given with
``--passphrase-env``, never on the command line.
"""

from __future__ import annotations

import base64
import getpass
import io
import json
import os
import re
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from keys.cli import cli, main
from keys.directory import Directory, root_public_key
from keys.encoding import b64e, fingerprint
from keys.identity import DAY_MS, Identity
from keys.keystore import PASSPHRASE_ENV, load_keystore
from keys.models import PublicKeys

PASS_ENV = "CPAR_TEST_CEREMONY_PASSPHRASE"
PASSPHRASE = "correct horse battery staple"
FINGERPRINT_RE = re.compile(r"\b[A-Z2-7]{4} [A-Z2-7]{4} [A-Z2-7]{4} [A-Z2-7]{4}\b")
MINUTE_MS = 60_000


# --- running the CLI -------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


class Keys:
    """Runs ``keys --passphrase-env PASS_ENV ...`` in-process and captures its output."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def __call__(self, *args: str | Path) -> Result:
        self._capsys.readouterr()
        code = main(["--passphrase-env", PASS_ENV, *(str(a) for a in args)])
        out, err = self._capsys.readouterr()
        return Result(code, out, err)

    def ok(self, *args: str | Path) -> Result:
        result = self(*args)
        assert result.code == 0, result
        assert result.err == "", result
        return result


def refusal(result: Result) -> str:
    """A refusal: non-zero exit, nothing on stdout, exactly one ``keys: error:`` line."""
    assert result.code != 0, result
    assert result.out == "", result
    assert result.err.endswith("\n") and result.err.count("\n") == 1, result
    line = result.err.rstrip("\n")
    assert line.startswith("keys: error: ") and line[len("keys: error: ") :].strip(), result
    return line


@pytest.fixture
def keys(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Keys:
    monkeypatch.setenv(PASS_ENV, PASSPHRASE)
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)  # only the custom variable counts
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal, so tables are not truncated
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # never a terminal in tests
    return Keys(capsys)


# --- the ceremony ----------------------------------------------------------------------


@dataclass(frozen=True)
class Authority:
    id: str
    name: str
    country: str
    role: str
    kind: str
    extra: dict[str, Any]


AUTHORITIES = (
    Authority(
        "it-tpc",
        "Carabinieri TPC",
        "IT",
        "national_body",
        "authority",
        {
            "contacts": [
                {"name": "Duty officer", "email": "tpc@example.org", "phone": "+39 06 0000 0000"}
            ],
            "hours": {
                "tz": "Europe/Rome",
                "days": [1, 2, 3, 4, 5],
                "start": "08:00",
                "end": "18:00",
            },
            "escalation": {"supervisor": "fr-oclcc"},
        },
    ),
    Authority(
        "fr-oclcc",
        "OCBC Nanterre",
        "FR",
        "national_body",
        "authority",
        {
            "contacts": [{"name": "Permanence", "function": "duty desk", "phone": "+33 1 0000"}],
            "hours": {
                "tz": "Europe/Paris",
                "days": [1, 2, 3, 4, 5],
                "start": "09:00",
                "end": "17:30",
            },
            "escalation": {"deputies": ["it-tpc"]},
        },
    ),
    Authority("relay-eu", "EU relay", "EU", "relay", "relay", {}),
)


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"


def entries_doc(
    authorities: tuple[Authority, ...] = AUTHORITIES,
    *,
    keys_dir: str = "../exports",
    network: str = "cpar-test",
) -> dict[str, Any]:
    return {
        "network": network,
        "authorities": [
            {
                "id": a.id,
                "name": a.name,
                "country": a.country,
                "role": a.role,
                "keys": f"{keys_dir}/{a.id}.pub.json",
                **a.extra,
            }
            for a in authorities
        ],
    }


def to_toml(doc: dict[str, Any]) -> str:
    lines = [f"network = {_toml_value(doc['network'])}"]
    for item in doc["authorities"]:
        lines += ["", "[[authorities]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Ceremony:
    root: Path
    root_ks: Path
    root_pub: Path
    keystores: dict[str, Path]
    exports: dict[str, Path]
    entries: Path
    v1: Path

    def write_entries(self, name: str, text: str) -> Path:
        path = self.entries.parent / name
        path.write_text(text, encoding="utf-8")
        return path


def run_ceremony(keys: Keys, base: Path) -> Ceremony:
    """Root, three identities, their public exports, an entries file and directory v1."""
    (base / "keystores").mkdir()
    (base / "exports").mkdir()
    (base / "entries").mkdir()
    root_ks, root_pub = base / "keystores/root.ks", base / "root.pub"
    keys.ok("root", "create", "--out", root_ks, "--pub-out", root_pub, "--kdf", "test")
    keystores: dict[str, Path] = {}
    exports: dict[str, Path] = {}
    for a in AUTHORITIES:
        ks = keystores[a.id] = base / f"keystores/{a.id}.ks"
        keys.ok("identity", "create", "--id", a.id, "--kind", a.kind, "--out", ks, "--kdf", "test")
        exp = exports[a.id] = base / f"exports/{a.id}.pub.json"
        keys.ok("identity", "export", "--keystore", ks, "--out", exp)
    entries = base / "entries/entries.toml"
    entries.write_text(to_toml(entries_doc()), encoding="utf-8")
    v1 = base / "dir-v1.jws"
    keys.ok("directory", "build", "--root-keystore", root_ks, "--entries", entries, "--out", v1)
    return Ceremony(base, root_ks, root_pub, keystores, exports, entries, v1)


@pytest.fixture
def ceremony(keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ceremony:
    # Run from an unrelated directory: relative paths must resolve against the entries file.
    elsewhere = tmp_path / "elsewhere" / "deeper"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    return run_ceremony(keys, tmp_path)


def public_keys(path: Path) -> PublicKeys:
    return PublicKeys.model_validate_json(path.read_bytes())


def root_pk(c: Ceremony) -> bytes:
    return root_public_key(c.root_pub.read_text())


def verify_json(keys: Keys, c: Ceremony, *files: Path) -> dict[str, Any]:
    result = keys.ok("directory", "verify", *files, "--root-key-file", c.root_pub, "--json")
    doc: dict[str, Any] = json.loads(result.out)
    return doc


def build(
    keys: Keys, c: Ceremony, out: str, *, entries: Path | None = None, previous: Path
) -> Path:
    path = c.root / out
    keys.ok(
        "directory",
        "build",
        "--root-keystore",
        c.root_ks,
        "--entries",
        entries or c.entries,
        "--previous",
        previous,
        "--out",
        path,
    )
    return path


# --- the happy path ----------------------------------------------------------------------


def test_full_ceremony_produces_a_directory_that_verifies(keys: Keys, ceremony: Ceremony) -> None:
    c = ceremony
    result = keys.ok("directory", "verify", c.v1, "--root-key-file", c.root_pub)
    assert result.out.startswith("OK directory cpar-test version 1")
    assert fingerprint(root_pk(c)) in result.out
    for a in AUTHORITIES:
        assert a.id in result.out and a.name in result.out
        signing = public_keys(c.exports[a.id]).signing_keys[-1]
        assert fingerprint(base64.urlsafe_b64decode(signing.pk + "=")) in result.out
    assert "supervisor fr-oclcc" in result.out and "deputy it-tpc" in result.out

    # The signed document carries what the entries file said, with the exported keys.
    directory = Directory.verify(c.v1.read_text().strip(), [root_pk(c)])
    assert directory.network == "cpar-test" and directory.version == 1
    assert [a.id for a in directory.authorities] == [a.id for a in AUTHORITIES]
    it = directory.get("it-tpc")
    assert it is not None and it.hours is not None and it.hours.tz == "Europe/Rome"
    assert it.contacts[0].email == "tpc@example.org"
    assert it.escalation.supervisor == "fr-oclcc"
    it_pub = public_keys(c.exports["it-tpc"])
    assert it.signing_keys == it_pub.signing_keys
    assert it.encryption_keys == it_pub.encryption_keys and len(it.encryption_keys) == 1
    relay = directory.get("relay-eu")
    assert relay is not None and relay.role == "relay" and relay.encryption_keys == []


def test_root_create_prints_and_writes_the_pinnable_public_key(keys: Keys, tmp_path: Path) -> None:
    result = keys.ok(
        "root",
        "create",
        "--out",
        tmp_path / "r.ks",
        "--pub-out",
        tmp_path / "r.pub",
        "--kdf",
        "test",
    )
    root = load_keystore(tmp_path / "r.ks", PASSPHRASE)
    assert root.kind == "root"
    pub = root.signing_key().public
    assert (tmp_path / "r.pub").read_text() == b64e(pub) + "\n"
    assert b64e(pub) in result.out and fingerprint(pub) in result.out


def test_verify_json_names_every_authority(keys: Keys, ceremony: Ceremony) -> None:
    doc = verify_json(keys, ceremony, ceremony.v1)
    assert doc["network"] == "cpar-test" and doc["version"] == 1 and doc["prev"] is None
    assert [(a["id"], a["name"], a["country"], a["role"]) for a in doc["authorities"]] == [
        (a.id, a.name, a.country, a.role) for a in AUTHORITIES
    ]


def test_a_yaml_entries_file_builds_the_same_directory(keys: Keys, ceremony: Ceremony) -> None:
    c = ceremony
    yaml_entries = c.write_entries("entries.yaml", yaml.safe_dump(entries_doc()))
    out = c.root / "dir-yaml.jws"
    keys.ok(
        "directory", "build", "--root-keystore", c.root_ks, "--entries", yaml_entries, "--out", out
    )
    from_yaml = verify_json(keys, c, out)
    from_toml = verify_json(keys, c, c.v1)
    assert from_yaml["authorities"] == from_toml["authorities"]
    assert Directory.verify(out.read_text().strip(), [root_pk(c)]).authorities == (
        Directory.verify(c.v1.read_text().strip(), [root_pk(c)]).authorities
    )


def test_the_passphrase_comes_from_the_named_environment_variable(
    keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ks = tmp_path / "it.ks"
    keys.ok("identity", "create", "--id", "it-tpc", "--out", ks, "--kdf", "test")
    assert load_keystore(ks, PASSPHRASE).id == "it-tpc"
    # The default variable is not consulted when --passphrase-env names another one.
    monkeypatch.delenv(PASS_ENV)
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    line = refusal(keys("identity", "export", "--keystore", ks))
    assert PASS_ENV in line


# --- fingerprints ----------------------------------------------------------------------


def _fingerprints_of(ident: Identity) -> set[str]:
    return {k.fingerprint for k in ident.signing_keys} | {
        k.fingerprint for k in ident.encryption_keys
    }


def test_fingerprint_of_keystore_export_and_root_pub(keys: Keys, ceremony: Ceremony) -> None:
    c = ceremony
    it = load_keystore(c.keystores["it-tpc"], PASSPHRASE)
    expected = _fingerprints_of(it)
    assert len(expected) == 2
    for path in (c.keystores["it-tpc"], c.exports["it-tpc"]):
        out = keys.ok("fingerprint", path).out
        assert set(FINGERPRINT_RE.findall(out)) == expected
        assert it.signing_keys[0].kid in out and it.encryption_keys[0].kid in out
    root = load_keystore(c.root_ks, PASSPHRASE).signing_key()
    out = keys.ok("fingerprint", c.root_pub).out
    assert FINGERPRINT_RE.findall(out) == [root.fingerprint]
    assert re.fullmatch(r"[A-Z2-7]{4}( [A-Z2-7]{4}){3}", root.fingerprint)


def test_fingerprint_json_is_parseable(keys: Keys, ceremony: Ceremony) -> None:
    c = ceremony
    it = load_keystore(c.keystores["it-tpc"], PASSPHRASE)
    for path in (c.keystores["it-tpc"], c.exports["it-tpc"]):
        rows = json.loads(keys.ok("fingerprint", path, "--json").out)
        assert [(r["owner"], r["use"], r["kid"], r["fingerprint"], r["status"]) for r in rows] == [
            ("it-tpc", "signing", it.signing_keys[0].kid, it.signing_keys[0].fingerprint, "valid"),
            (
                "it-tpc",
                "encryption",
                it.encryption_keys[0].kid,
                it.encryption_keys[0].fingerprint,
                "valid",
            ),
        ]
        assert rows[0]["exp"] == it.signing_keys[0].exp
    root = load_keystore(c.root_ks, PASSPHRASE).signing_key()
    rows = json.loads(keys.ok("fingerprint", c.root_pub, "--json").out)
    assert len(rows) == 1
    assert (rows[0]["owner"], rows[0]["kid"], rows[0]["fingerprint"]) == (
        "root",
        root.kid,
        root.fingerprint,
    )


def test_identity_show_prints_the_public_identity_and_fingerprints(
    keys: Keys, ceremony: Ceremony
) -> None:
    c = ceremony
    it = load_keystore(c.keystores["it-tpc"], PASSPHRASE)
    signing = it.signing_keys[0]
    assert "show" in keys.ok("identity", "--help").out
    out = keys.ok("identity", "show", "--keystore", c.keystores["it-tpc"]).out
    assert "Identity it-tpc (authority)" in out
    assert f"Current signing key: {signing.kid} ({signing.fingerprint})" in out
    assert set(FINGERPRINT_RE.findall(out)) == _fingerprints_of(it)
    shown = json.loads(
        keys.ok("identity", "show", "--keystore", c.keystores["it-tpc"], "--json").out
    )
    assert (shown["id"], shown["kind"]) == ("it-tpc", "authority")
    assert shown["signing_key"] == {"kid": signing.kid, "fingerprint": signing.fingerprint}
    assert [(r["use"], r["kid"], r["status"]) for r in shown["keys"]] == [
        ("signing", signing.kid, "valid"),
        ("encryption", it.encryption_keys[0].kid, "valid"),
    ]
    # Public material only: no seed or secret reaches the terminal.
    for secret in (signing.seed, it.encryption_keys[0].secret):
        assert b64e(secret) not in out and secret.hex() not in out


def test_identity_show_with_a_wrong_passphrase_is_refused(
    keys: Keys, ceremony: Ceremony, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASS_ENV, "not the passphrase")
    line = refusal(keys("identity", "show", "--keystore", ceremony.keystores["it-tpc"]))
    assert "passphrase" in line


def test_fingerprint_of_an_unrelated_json_file_is_refused(keys: Keys, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"hello": "world"}\n')
    assert "not a keystore" in refusal(keys("fingerprint", bogus))


# --- rotation and revocation ----------------------------------------------------------


def test_rotate_encryption_key_keeps_the_old_one_for_the_grace_period(
    keys: Keys, ceremony: Ceremony
) -> None:
    c = ceremony
    ks, exp = c.keystores["it-tpc"], c.exports["it-tpc"]
    before = public_keys(exp).encryption_keys[0]
    t0 = time.time_ns() // 1_000_000
    result = keys.ok("rotate", "--keystore", ks)
    t1 = time.time_ns() // 1_000_000
    keys.ok("identity", "export", "--keystore", ks, "--out", exp)
    after = public_keys(exp)
    assert len(after.encryption_keys) == 2
    old, new = after.encryption_keys
    assert old.kid == before.kid and old.pk == before.pk
    assert old.exp < before.exp
    assert t0 + 14 * DAY_MS <= old.exp <= t1 + 14 * DAY_MS
    assert new.kid != old.kid and t0 <= new.nbf <= t1 and new.exp > old.exp
    assert new.kid in result.out
    assert stat.S_IMODE(os.stat(ks).st_mode) == 0o600
    # The rotated keys still make a valid directory (the old key's new expiry is re-signed).
    v2 = build(keys, c, "dir-v2.jws", previous=c.v1)
    entry = Directory.verify(v2.read_text().strip(), [root_pk(c)]).get("it-tpc")
    assert entry is not None and [k.kid for k in entry.encryption_keys] == [old.kid, new.kid]
    assert entry.current_encryption_key(t1) == new


def test_rotate_signing_key_re_signs_the_encryption_keys(keys: Keys, ceremony: Ceremony) -> None:
    c = ceremony
    ks, exp = c.keystores["fr-oclcc"], c.exports["fr-oclcc"]
    before = public_keys(exp)
    keys.ok("rotate", "--keystore", ks, "--signing", "--grace-days", "3")
    now = time.time_ns() // 1_000_000
    keys.ok("identity", "export", "--keystore", ks, "--out", exp)
    after = public_keys(exp)
    assert len(after.signing_keys) == 2
    old, new = after.signing_keys
    assert old.kid == before.signing_keys[0].kid
    assert now + 3 * DAY_MS - MINUTE_MS <= old.exp <= now + 3 * DAY_MS
    assert [k.signer for k in after.encryption_keys] == [new.kid]
    v2 = build(keys, c, "dir-v2.jws", previous=c.v1)
    doc = verify_json(keys, c, v2)
    fr = next(a for a in doc["authorities"] if a["id"] == "fr-oclcc")
    assert fr["fingerprint"] == fingerprint(base64.urlsafe_b64decode(new.pk + "="))


def test_revoke_an_encryption_key(keys: Keys, ceremony: Ceremony) -> None:
    c = ceremony
    ks, exp = c.keystores["it-tpc"], c.exports["it-tpc"]
    keys.ok("rotate", "--keystore", ks)
    keys.ok("identity", "export", "--keystore", ks, "--out", exp)
    old_kid = public_keys(exp).encryption_keys[0].kid
    t0 = time.time_ns() // 1_000_000
    keys.ok("revoke", "--keystore", ks, "--kid", old_kid)
    keys.ok("identity", "export", "--keystore", ks, "--out", exp)
    after = public_keys(exp)
    revoked = {k.kid: k.revoked for k in after.encryption_keys}
    assert revoked[old_kid] is not None and revoked[old_kid] >= t0
    assert [r for kid, r in revoked.items() if kid != old_kid] == [None]
    assert all(k.revoked is None for k in after.signing_keys)
    rows = json.loads(keys.ok("fingerprint", exp, "--json").out)
    assert {r["kid"]: r["status"] for r in rows}[old_kid] == "revoked"


def test_revoking_the_only_signing_key_is_refused(keys: Keys, ceremony: Ceremony) -> None:
    c = ceremony
    for ident in ("it-tpc", "relay-eu"):
        ks = c.keystores[ident]
        before = ks.read_bytes()
        kid = public_keys(c.exports[ident]).signing_keys[0].kid
        result = keys("revoke", "--keystore", ks, "--kid", kid)
        assert result.code == 1
        assert "only signing key" in refusal(result)
        assert ks.read_bytes() == before
    # After a signing rotation the old key can go.
    ks = c.keystores["it-tpc"]
    old_kid = public_keys(c.exports["it-tpc"]).signing_keys[0].kid
    keys.ok("rotate", "--keystore", ks, "--signing")
    keys.ok("revoke", "--keystore", ks, "--kid", old_kid)
    ident = load_keystore(ks, PASSPHRASE)
    assert ident.signing_keys[0].revoked is not None and ident.signing_keys[1].revoked is None


def test_revoking_an_unknown_kid_is_refused(keys: Keys, ceremony: Ceremony) -> None:
    line = refusal(keys("revoke", "--keystore", ceremony.keystores["it-tpc"], "--kid", "a" * 16))
    assert "a" * 16 in line


# --- directory versions, pinning, rollback and forks -------------------------------------


def test_pin_accepts_v1_then_v2_and_refuses_rollback(keys: Keys, ceremony: Ceremony) -> None:
    c = ceremony
    v2 = build(keys, c, "dir-v2.jws", previous=c.v1)
    pin = c.root / "pin.json"
    out1 = keys.ok("directory", "verify", c.v1, "--root-key-file", c.root_pub, "--pin", pin).out
    assert "version 1" in out1
    out2 = keys.ok("directory", "verify", v2, "--root-key-file", c.root_pub, "--pin", pin).out
    assert "version 2" in out2
    d1 = Directory.verify(c.v1.read_text().strip(), [root_pk(c)])
    d2 = Directory.verify(v2.read_text().strip(), [root_pk(c)])
    assert d2.document.prev == d1.hash
    assert json.loads(pin.read_text())["versions"] == {"1": d1.hash, "2": d2.hash}
    pinned = pin.read_bytes()

    result = keys("directory", "verify", c.v1, "--root-key-file", c.root_pub, "--pin", pin)
    assert result.code == 1
    line = refusal(result)
    assert "rollback" in line.lower() or "older" in line.lower()
    assert pin.read_bytes() == pinned


def test_a_history_of_versions_verifies_in_one_call(keys: Keys, ceremony: Ceremony) -> None:
    c = ceremony
    v2 = build(keys, c, "dir-v2.jws", previous=c.v1)
    v3 = build(keys, c, "dir-v3.jws", previous=v2)
    pin = c.root / "pin.json"
    keys.ok("directory", "verify", c.v1, "--root-key-file", c.root_pub, "--pin", pin)
    # Jumping from v1 to v3 alone is a gap; with the history it is fine.
    assert "skips" in refusal(
        keys("directory", "verify", v3, "--root-key-file", c.root_pub, "--pin", pin)
    )
    out = keys.ok(
        "directory", "verify", c.v1, v2, v3, "--root-key-file", c.root_pub, "--pin", pin
    ).out
    assert "version 3" in out
    assert set(json.loads(pin.read_text())["versions"]) == {"1", "2", "3"}


def test_a_fork_is_refused_with_the_pin(keys: Keys, ceremony: Ceremony) -> None:
    c = ceremony
    v2 = build(keys, c, "dir-v2.jws", previous=c.v1)
    # The same v1 continued differently: the relay left out.
    fork_entries = c.write_entries("fork.toml", to_toml(entries_doc(AUTHORITIES[:2])))
    v2_fork = build(keys, c, "dir-v2-fork.jws", entries=fork_entries, previous=c.v1)
    assert verify_json(keys, c, v2_fork)["version"] == 2  # valid on its own
    pin = c.root / "pin.json"
    keys.ok("directory", "verify", c.v1, "--root-key-file", c.root_pub, "--pin", pin)
    keys.ok("directory", "verify", v2, "--root-key-file", c.root_pub, "--pin", pin)
    pinned = pin.read_bytes()
    result = keys("directory", "verify", v2_fork, "--root-key-file", c.root_pub, "--pin", pin)
    assert result.code == 1
    assert "fork" in refusal(result)
    assert pin.read_bytes() == pinned


def test_a_history_older_than_the_pin_is_a_rollback(keys: Keys, ceremony: Ceremony) -> None:
    c = ceremony
    v2 = build(keys, c, "dir-v2.jws", previous=c.v1)
    v3 = build(keys, c, "dir-v3.jws", previous=v2)
    pin = c.root / "pin.json"
    keys.ok("directory", "verify", c.v1, v2, v3, "--root-key-file", c.root_pub, "--pin", pin)
    result = keys("directory", "verify", c.v1, v2, "--root-key-file", c.root_pub, "--pin", pin)
    assert result.code == 1  # today: exit 0 and "OK directory cpar-test version 1"
    assert "older" in refusal(result)


# --- refusals ------------------------------------------------------------------------


def test_wrong_passphrase_is_refused_without_echoing_it(
    keys: Keys, ceremony: Ceremony, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASS_ENV, "not the passphrase")
    result = keys("identity", "export", "--keystore", ceremony.keystores["it-tpc"])
    assert result.code == 1
    line = refusal(result)
    assert "passphrase does not open" in line
    assert "not the passphrase" not in line and PASSPHRASE not in line


def test_a_keystore_readable_by_others_is_refused(keys: Keys, ceremony: Ceremony) -> None:
    c = ceremony
    never = c.root / "never.jws"
    export = ("identity", "export", "--keystore", c.keystores["it-tpc"])
    build_v1 = ("directory", "build", "--root-keystore", c.root_ks, "--entries", c.entries)
    for ks, args in (
        (c.keystores["it-tpc"], export),
        (c.root_ks, (*build_v1, "--out", never)),
    ):
        ks.chmod(0o644)  # the point of the test
        line = refusal(keys(*args))
        assert f"chmod 600 {ks}" in line
        ks.chmod(0o600)
    assert not never.exists()


def test_loose_permissions_are_refused_before_the_passphrase_prompt(
    keys: Keys, ceremony: Ceremony, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return PASSPHRASE

    monkeypatch.delenv(PASS_ENV)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    ks = ceremony.keystores["it-tpc"]
    ks.chmod(0o644)  # the point of the test
    assert "chmod 600" in refusal(keys("identity", "export", "--keystore", ks))
    assert prompts == []


def test_a_missing_passphrase_is_refused(
    keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASS_ENV)
    assert not sys.stdin.isatty()
    out = tmp_path / "it.ks"
    line = refusal(keys("identity", "create", "--id", "it-tpc", "--out", out, "--kdf", "test"))
    assert "no passphrase" in line and PASS_ENV in line
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_directory_from_another_root_is_refused(keys: Keys, ceremony: Ceremony) -> None:
    c = ceremony
    other = c.root / "other"
    other.mkdir()
    keys.ok(
        "root", "create", "--out", other / "r.ks", "--pub-out", other / "r.pub", "--kdf", "test"
    )
    result = keys("directory", "verify", c.v1, "--root-key-file", other / "r.pub")
    assert "not the pinned network root" in refusal(result)
    # Nor will a foreign root sign the next version of this directory.
    line = refusal(
        keys(
            "directory",
            "build",
            "--root-keystore",
            other / "r.ks",
            "--entries",
            c.entries,
            "--previous",
            c.v1,
            "--out",
            c.root / "never.jws",
        )
    )
    assert "not the pinned network root" in line
    assert not (c.root / "never.jws").exists()


@pytest.mark.parametrize("part", [0, 1, 2], ids=["header", "payload", "signature"])
def test_a_corrupted_directory_is_refused(keys: Keys, ceremony: Ceremony, part: int) -> None:
    c = ceremony
    parts = c.v1.read_text().strip().split(".")
    i = len(parts[part]) // 2
    flipped = "B" if parts[part][i] == "A" else "A"
    parts[part] = parts[part][:i] + flipped + parts[part][i + 1 :]
    bad = c.root / "bad.jws"
    bad.write_text(".".join(parts) + "\n")
    pin = c.root / "pin.json"
    result = keys("directory", "verify", bad, "--root-key-file", c.root_pub, "--pin", pin)
    line = refusal(result)
    if part == 2:
        assert "signature does not verify" in line
    assert not pin.exists()


@pytest.mark.parametrize("bad_id", ["IT-TPC", "x", "it tpc", "-it", "it/tpc"])
def test_an_invalid_authority_id_is_refused(keys: Keys, tmp_path: Path, bad_id: str) -> None:
    out = tmp_path / "bad.ks"
    result = keys("identity", "create", "--id", bad_id, "--out", out, "--kdf", "test")
    assert result.code == 1
    assert "invalid authority id" in refusal(result)
    assert not out.exists()


def test_entries_naming_the_wrong_keys_file_are_refused(keys: Keys, ceremony: Ceremony) -> None:
    c = ceremony
    doc = entries_doc()
    doc["authorities"][0]["keys"] = "../exports/fr-oclcc.pub.json"  # it-tpc -> fr's keys
    wrong = c.write_entries("wrong.toml", to_toml(doc))
    out = c.root / "never.jws"
    line = refusal(
        keys("directory", "build", "--root-keystore", c.root_ks, "--entries", wrong, "--out", out)
    )
    assert "'it-tpc'" in line and "'fr-oclcc'" in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.toml", 'network = "cpar-test\n[[authorities]\n', "not valid TOML"),
        ("bad.yaml", "network: [cpar-test\nauthorities: {\n", "not valid YAML"),
        ("empty.toml", 'network = "cpar-test"\n', "list of 'authorities'"),
    ],
)
def test_a_malformed_entries_file_is_refused(
    keys: Keys, ceremony: Ceremony, name: str, text: str, message: str
) -> None:
    c = ceremony
    bad = c.write_entries(name, text)
    out = c.root / "never.jws"
    result = keys(
        "directory", "build", "--root-keystore", c.root_ks, "--entries", bad, "--out", out
    )
    assert result.code == 1
    assert message in refusal(result)
    assert not out.exists()


def test_missing_files_are_refused(keys: Keys, ceremony: Ceremony) -> None:
    c = ceremony
    missing = c.root / "missing.ks"
    assert "does not exist" in refusal(keys("identity", "export", "--keystore", missing))
    assert "does not exist" in refusal(
        keys("directory", "verify", c.root / "missing.jws", "--root-key-file", c.root_pub)
    )
    # A keys file named in the entries file that is not there.
    doc = entries_doc()
    doc["authorities"][0]["keys"] = "../exports/nobody.pub.json"
    entries = c.write_entries("missing-keys.toml", to_toml(doc))
    build_args = ("directory", "build", "--root-keystore", c.root_ks, "--entries", entries)
    line = refusal(keys(*build_args, "--out", c.root / "never.jws"))
    assert "nobody.pub.json" in line
    # A keystore written where a folder cannot be made: one line, nothing written.
    blocker = c.root / "a-file"
    blocker.write_text("not a folder")
    line = refusal(
        keys("identity", "create", "--id", "it-x", "--out", blocker / "x.ks", "--kdf", "test")
    )
    assert str(blocker) in line


def test_an_existing_keystore_is_not_overwritten(keys: Keys, ceremony: Ceremony) -> None:
    ks = ceremony.keystores["it-tpc"]
    before = ks.read_bytes()
    line = refusal(keys("identity", "create", "--id", "it-tpc", "--out", ks, "--kdf", "test"))
    assert "refusing to overwrite" in line
    assert ks.read_bytes() == before
    line = refusal(keys("root", "create", "--out", ceremony.root_ks, "--kdf", "test"))
    assert "refusing to overwrite" in line
    assert load_keystore(ceremony.root_ks, PASSPHRASE).kind == "root"


# --- keystore files at rest --------------------------------------------------------------


def _encodings(secret: bytes) -> list[bytes]:
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        b64e(secret).encode(),
        base64.b64encode(secret),
        base64.b64encode(secret).rstrip(b"="),
    ]


def test_keystores_are_private_and_hold_no_plaintext_secrets(
    keys: Keys, ceremony: Ceremony
) -> None:
    c = ceremony
    for path in (c.root_ks, *c.keystores.values()):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        ident = load_keystore(path, PASSPHRASE)
        secrets = [k.seed for k in ident.signing_keys] + [k.secret for k in ident.encryption_keys]
        assert len(secrets) == (2 if ident.kind == "authority" else 1)
        raw = path.read_bytes()
        for secret in secrets:
            for form in _encodings(secret):
                assert form not in raw, f"{path} leaks a private key"
        assert json.loads(raw)["kdf"]["alg"] == "argon2id13"
    # Rotation rewrites the file: still 0600 and still sealed.
    ks = c.keystores["it-tpc"]
    keys.ok("rotate", "--keystore", ks)
    keys.ok("rotate", "--keystore", ks, "--signing")
    assert stat.S_IMODE(os.stat(ks).st_mode) == 0o600
    ident = load_keystore(ks, PASSPHRASE)
    raw = ks.read_bytes()
    for secret in [k.seed for k in ident.signing_keys] + [k.secret for k in ident.encryption_keys]:
        assert not any(form in raw for form in _encodings(secret))
    # No temporary files are left beside the keystores.
    assert sorted(p.name for p in ks.parent.iterdir()) == sorted(
        p.name for p in (c.root_ks, *c.keystores.values())
    )


def test_no_secret_reaches_the_terminal(keys: Keys, tmp_path: Path) -> None:
    ks = tmp_path / "it.ks"
    outputs = [keys.ok("identity", "create", "--id", "it-tpc", "--out", ks, "--kdf", "test")]
    outputs.append(keys.ok("identity", "export", "--keystore", ks))
    outputs.append(keys.ok("fingerprint", ks, "--json"))
    outputs.append(keys.ok("rotate", "--keystore", ks))
    ident = load_keystore(ks, PASSPHRASE)
    text = "".join(r.out + r.err for r in outputs)
    assert PASSPHRASE not in text
    for secret in [k.seed for k in ident.signing_keys] + [k.secret for k in ident.encryption_keys]:
        assert not any(form.decode("latin-1") in text for form in _encodings(secret)[1:])


# --- help ------------------------------------------------------------------------------


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []
    for name, cmd in sorted(group.commands.items()):
        paths.append((*prefix, name))
        if isinstance(cmd, click.Group):
            paths.extend(_command_paths(cmd, (*prefix, name)))
    return paths


COMMAND_PATHS = _command_paths(cli)


def test_the_documented_commands_exist() -> None:
    assert {" ".join(p) for p in COMMAND_PATHS} == {
        "root",
        "root create",
        "root rotate",
        "identity",
        "identity create",
        "identity export",
        "identity show",
        "rotate",
        "revoke",
        "fingerprint",
        "directory",
        "directory build",
        "directory verify",
        "tls",
        "tls create",
        "tls pin",
        "evidence",
        "evidence verify",
    }


@pytest.mark.parametrize("path", [(), *COMMAND_PATHS], ids=lambda p: " ".join(p) or "keys")
def test_help(keys: Keys, path: tuple[str, ...]) -> None:
    cmd: click.Command = cli
    for name in path:
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[name]
    for flag in ("--help", "-h"):
        result = keys.ok(*path, flag)
        assert result.out.startswith(f"Usage: {' '.join(('keys', *path))} ")
        flat = " ".join(result.out.split())
        assert cmd.help is not None
        assert " ".join(cmd.help.split("\n\n")[0].split()) in flat
        for param in cmd.params:
            if isinstance(param, click.Option):
                assert param.opts[0] in result.out
                assert param.help or param.opts[0] == "--help", f"{param.opts[0]} has no help"
        if isinstance(cmd, click.Group):
            for sub in cmd.commands:
                assert sub in result.out


# --- options where a person puts them ----------------------------------------------------


def test_passphrase_options_after_the_subcommand_and_missing_folders_are_made(
    keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pass_file = tmp_path / "pass"
    pass_file.write_text("a passphrase in a file\n")
    root_ks = tmp_path / "new" / "root" / "root.ks"
    # --passphrase-file after the subcommand, into folders that do not exist yet.
    capsys.readouterr()
    code = main(
        ["root", "create", "--out", str(root_ks), "--kdf", "test",
         "--pub-out", str(tmp_path / "pub" / "root.pub"), "--passphrase-file", str(pass_file)]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert (code, err) == (0, ""), out
    assert root_ks.stat().st_mode & 0o777 == 0o600
    assert root_ks.parent.stat().st_mode & 0o777 == 0o700
    assert load_keystore(root_ks, "a passphrase in a file").kind == "root"
    ident = tmp_path / "ids" / "it-tpc.ks"
    keys.ok("identity", "create", "--id", "it-tpc", "--out", ident, "--kdf", "test")
    exported = tmp_path / "missing" / "dir" / "it-tpc.json"
    keys.ok("identity", "export", "--keystore", ident, "--out", exported)
    assert json.loads(exported.read_text())["signing_keys"]
    # The global option before the subcommand still works, and the later one wins.
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    capsys.readouterr()
    code = main(["--passphrase-file", str(wrong), "identity", "show", "--keystore", str(root_ks),
                 "--passphrase-file", str(pass_file)])  # fmt: skip
    assert code == 0, capsys.readouterr()


def test_every_keystore_option_explains_itself(keys: Keys) -> None:
    for args in (["identity", "export"], ["identity", "show"], ["rotate"], ["revoke"]):
        text = keys.ok(*args, "--help").out
        assert "--keystore FILE" in text and "encrypted keystore" in text, args
