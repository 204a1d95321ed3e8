"""``keys``: key ceremonies for the network root, authorities and relays.

Every refusal prints one plain line on stderr (``keys: error: ...``) and exits non-zero;
secrets never reach the terminal. Passphrases come from ``--passphrase-file``, the
environment variable named by ``--passphrase-env``, or a terminal prompt, in that order.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import click
from rich.console import Console
from rich.table import Table

from keys.directory import (
    Directory,
    DirectoryPin,
    load_entries_file,
    root_public_key,
    sign_directory,
    sign_rotation,
)
from keys.encoding import AUTHORITY_ID_PATTERN, b64d, b64e, fingerprint, key_id, now_ms
from keys.errors import KeysError
from keys.evidence import verify_bundle
from keys.identity import DAY_MS, Identity, IdentityKind
from keys.keystore import (
    PASSPHRASE_ENV,
    KdfStrength,
    load_keystore,
    read_keystore_header,
    resolve_passphrase,
    save_keystore,
    update_keystore,
    write_private_file,
)
from keys.models import PublicKeys
from keys.tls import create_certificate, spki_sha256_pem

EXIT_REFUSED = 1


class _Ctx:
    def __init__(self, passphrase_file: str | None, passphrase_env: str) -> None:
        self.passphrase_file = passphrase_file
        self.passphrase_env = passphrase_env

    def passphrase(self, *, confirm: bool = False) -> str:
        return resolve_passphrase(
            env=self.passphrase_env, file=self.passphrase_file, confirm=confirm
        )


def _open_keystore(obj: _Ctx, path: str | Path) -> Identity:
    """Check the file (permissions, format) before asking for any passphrase."""
    read_keystore_header(path)
    return load_keystore(path, obj.passphrase())


def _out() -> Console:
    # Wide enough for the tables when piped into a log; a terminal uses its own width.
    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 140)


def _root_key_file(path: str) -> bytes:
    """A root public key file, as `root create --pub-out` writes it."""
    return root_public_key(Path(path).read_text(encoding="ascii", errors="replace"))


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _instant(ms: int) -> str:
    """To the millisecond, for evidence."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False),
    help="Read the keystore passphrase from this file (its whole content, trailing newline removed).",
)
@click.option(
    "--passphrase-env",
    default=PASSPHRASE_ENV,
    show_default=True,
    help="Environment variable that holds the keystore passphrase.",
)
@click.pass_context
def cli(ctx: click.Context, passphrase_file: str | None, passphrase_env: str) -> None:
    """Key ceremonies for the Cultural Property Alert Relay.

    Create the network root and authority identities, export public entries, sign the
    directory of competent authorities, rotate and revoke keys, and verify directory
    files. Private keys live in argon2id-encrypted keystores with mode 0600.
    """
    ctx.obj = _Ctx(passphrase_file, passphrase_env)


def _set_passphrase(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """A global option given after the subcommand: it counts the same."""
    if value is not None and param.name is not None:
        obj = ctx.find_object(_Ctx)
        if obj is not None:
            setattr(obj, param.name, value)


def _passphrase_options(f: Any) -> Any:
    """``--passphrase-file`` and ``--passphrase-env`` accepted after the subcommand too
    (``keys root create --out r.ks --passphrase-file p``), not only before it."""
    f = click.option(
        "--passphrase-env",
        expose_value=False,
        callback=_set_passphrase,
        help="Environment variable that holds the keystore passphrase (as before the command).",
    )(f)
    return click.option(
        "--passphrase-file",
        type=click.Path(dir_okay=False),
        expose_value=False,
        callback=_set_passphrase,
        help="Read the keystore passphrase from this file (as before the command).",
    )(f)


def _parent(path: str | Path) -> Path:
    """``path``, its folder created (0700) when missing: ``--out new/dir/x.json`` works."""
    target = Path(path)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return target


_KEYSTORE = click.option(
    "--keystore",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="The identity's encrypted keystore file (mode 0600).",
)

_KDF = click.option(
    "--kdf",
    type=click.Choice(["moderate", "interactive", "test"]),
    default="moderate",
    show_default=True,
    help="argon2id cost: moderate (256 MiB) for real keystores, test only for test suites.",
)


# --- root -------------------------------------------------------------------------


@cli.group()
def root() -> None:
    """The network root key, which signs every directory version."""


@root.command("create")
@click.option(
    "--out", "out", required=True, type=click.Path(dir_okay=False), help="Keystore to write."
)
@click.option(
    "--pub-out",
    type=click.Path(dir_okay=False),
    help="Also write the root public key (base64url) here, for clients to pin.",
)
@_KDF
@_passphrase_options
@click.pass_obj
def root_create(obj: _Ctx, out: str, pub_out: str | None, kdf: KdfStrength) -> None:
    """Create a new network root key in an encrypted keystore."""
    identity = Identity.generate("root", kind="root", now=now_ms())
    save_keystore(_parent(out), identity, obj.passphrase(confirm=True), strength=kdf)
    key = identity.signing_key()
    if pub_out:
        _parent(pub_out).write_text(b64e(key.public) + "\n", encoding="ascii")
    console = _out()
    console.print(f"Created network root in {out}")
    console.print(f"  public key:  {b64e(key.public)}")
    console.print(f"  fingerprint: [bold]{key.fingerprint}[/bold]")
    console.print("Distribute the public key to every client and confirm the fingerprint by phone.")


@root.command("rotate")
@click.option(
    "--root-keystore",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="The outgoing root's encrypted keystore: it signs the statement.",
)
@click.option(
    "--new-root-key-file",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="The new root's public key (base64url), as `root create --pub-out` wrote it.",
)
@click.option("--network", required=True, help="The network name (as in the directory).")
@click.option(
    "--from-version",
    required=True,
    type=click.IntRange(2),
    help="The first directory version the new root signs; the old one signs none after.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the statement: put it in the relay's directory folder as "
    "*.rotation, beside the versions.",
)
@_passphrase_options
@click.pass_obj
def root_rotate(
    obj: _Ctx,
    root_keystore: str,
    new_root_key_file: str,
    network: str,
    from_version: int,
    out: str,
) -> None:
    """Introduce a new network root with a statement signed by the current one.

    Clients that pin the current root follow the statement (they fetch it with the
    directory history) and accept versions signed by the new root from --from-version
    on; the old root is trusted for no later version. Then build that version with
    `directory build --root-keystore NEW --previous-root-key-file OLD.pub`.
    """
    old = _open_keystore(obj, root_keystore)
    new = _root_key_file(new_root_key_file)
    token = sign_rotation(old, new, network=network, from_version=from_version, now=now_ms())
    _parent(out).write_text(token + "\n", encoding="ascii")
    _out().print(
        f"Wrote the rotation of network {network} to root {fingerprint(new)} from version "
        f"{from_version} to {out}"
    )


# --- identities ---------------------------------------------------------------------


@cli.group()
def identity() -> None:
    """Authority and relay identities: create, export, show."""


@identity.command("create")
@click.option("--id", "ident", required=True, help="Authority id, e.g. it-tpc (a-z, 0-9, . _ -).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Keystore to write.")
@click.option(
    "--kind",
    type=click.Choice([k for k in get_args(IdentityKind) if k != "root"]),
    default="authority",
    show_default=True,
    help="An authority gets an encryption key too; a relay only signs.",
)
@click.option(
    "--validity-days",
    type=click.IntRange(1, 3650),
    default=365,
    show_default=True,
    help="Lifetime of the first encryption key.",
)
@_KDF
@_passphrase_options
@click.pass_obj
def identity_create(
    obj: _Ctx, ident: str, out: str, kind: IdentityKind, validity_days: int, kdf: KdfStrength
) -> None:
    """Create an authority (or relay) identity in an encrypted keystore."""
    if not _valid_id(ident):
        raise KeysError(f"invalid authority id {ident!r}: use 2-63 of a-z 0-9 . _ - (lower case)")
    new = Identity.generate(
        ident, kind=kind, now=now_ms(), encryption_validity_ms=validity_days * DAY_MS
    )
    save_keystore(_parent(out), new, obj.passphrase(confirm=True), strength=kdf)
    console = _out()
    console.print(f"Created {kind} identity {ident} in {out}")
    console.print(f"  signing key fingerprint: [bold]{new.signing_key().fingerprint}[/bold]")


def _valid_id(ident: str) -> bool:
    return re.fullmatch(AUTHORITY_ID_PATTERN.strip("^$"), ident) is not None


@identity.command("export")
@_KEYSTORE
@click.option("--out", type=click.Path(dir_okay=False), help="Write here instead of stdout.")
@_passphrase_options
@click.pass_obj
def identity_export(obj: _Ctx, keystore: str, out: str | None) -> None:
    """Export an identity's public keys as JSON, for the directory keeper."""
    ident = _open_keystore(obj, keystore)
    text = ident.public_keys().model_dump_json(indent=2) + "\n"
    if out:
        _parent(out).write_text(text, encoding="utf-8")
        _out().print(f"Wrote public keys of {ident.id} to {out}")
    else:
        click.echo(text, nl=False)


@identity.command("show")
@_KEYSTORE
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_passphrase_options
@click.pass_obj
def identity_show(obj: _Ctx, keystore: str, as_json: bool) -> None:
    """Show an identity's id, kind and public keys with their fingerprints (no secrets)."""
    ident = _open_keystore(obj, keystore)
    rows = _public_rows(ident.public_keys())
    try:
        current = ident.signing_key(now_ms())
    except KeysError:
        current = None
    signing = {"kid": current.kid, "fingerprint": current.fingerprint} if current else None
    if as_json:
        data = {"id": ident.id, "kind": ident.kind, "signing_key": signing, "keys": rows}
        click.echo(json.dumps(data, indent=2))
        return
    console = _out()
    console.print(f"Identity {ident.id} ({ident.kind}) in {keystore}")
    if current is None:
        console.print("Current signing key: none usable now")
    else:
        console.print(f"Current signing key: {current.kid} ({current.fingerprint})")
    console.print(_key_table(rows, f"Keys of {ident.id}"))


@cli.command("rotate")
@_KEYSTORE
@click.option(
    "--signing", is_flag=True, help="Rotate the signing key instead of the encryption key."
)
@click.option(
    "--grace-days",
    type=click.IntRange(0, 365),
    default=14,
    show_default=True,
    help="How long the old key stays valid beside the new one.",
)
@_passphrase_options
@click.pass_obj
def rotate(obj: _Ctx, keystore: str, signing: bool, grace_days: int) -> None:
    """Add a new key; the old one stays valid for the grace period. Re-export afterwards."""
    read_keystore_header(keystore)
    passphrase = obj.passphrase()
    ident = load_keystore(keystore, passphrase)
    now = now_ms()
    if signing:
        ident = ident.rotate_signing(now=now, grace_ms=grace_days * DAY_MS)
    else:
        ident = ident.rotate_encryption(now=now, grace_ms=grace_days * DAY_MS)
    update_keystore(keystore, ident, passphrase)
    kind = "signing" if signing else "encryption"
    newest = ident.signing_keys[-1] if signing else ident.encryption_keys[-1]
    _out().print(
        f"Rotated the {kind} key of {ident.id}: new key {newest.kid} "
        f"({newest.fingerprint}); old keys valid {grace_days} more days. "
        "Export and send the new public keys to the directory keeper."
    )


@cli.command("revoke")
@_KEYSTORE
@click.option("--kid", required=True, help="Key id to revoke (see 'keys fingerprint').")
@_passphrase_options
@click.pass_obj
def revoke(obj: _Ctx, keystore: str, kid: str) -> None:
    """Revoke one key now. Messages signed or sealed with it are refused from then on."""
    read_keystore_header(keystore)
    passphrase = obj.passphrase()
    ident = load_keystore(keystore, passphrase).revoke(kid, now=now_ms())
    update_keystore(keystore, ident, passphrase)
    _out().print(f"Revoked key {kid} of {ident.id}. Export and republish the directory.")


@cli.command("fingerprint")
@click.argument("path", type=click.Path(dir_okay=False, exists=True))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_passphrase_options
@click.pass_obj
def fingerprint_cmd(obj: _Ctx, path: str, as_json: bool) -> None:
    """Show key ids and fingerprints of a keystore, a public-key export or a root .pub file."""
    rows = _key_rows(obj, Path(path))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _out().print(_key_table(rows, f"Keys in {path}"))


def _key_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for col in ("owner", "use", "kid", "fingerprint", "valid from", "valid until", "status"):
        table.add_column(col, no_wrap=col in {"kid", "fingerprint"})
    for r in rows:
        table.add_row(
            r["owner"],
            r["use"],
            r["kid"],
            r["fingerprint"],
            _when(r["nbf"]) if r["nbf"] else "-",
            _when(r["exp"]) if r["exp"] else "-",
            r["status"],
        )
    return table


def _key_rows(obj: _Ctx, path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    if text.startswith("{") and '"cpar-keystore"' in text:
        public = _open_keystore(obj, path).public_keys()
    elif text.startswith("{"):
        try:
            public = PublicKeys.model_validate_json(text)
        except ValueError as exc:
            raise KeysError(f"{path} is not a keystore, public-key export or root key") from exc
    else:
        pk = root_public_key(text)
        return [
            {
                "owner": "root",
                "use": "signing",
                "kid": key_id(pk),
                "fingerprint": fingerprint(pk),
                "nbf": 0,
                "exp": 0,
                "status": "pinned",
            }
        ]
    return _public_rows(public)


def _public_rows(public: PublicKeys) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    now = now_ms()
    for use, keys in (("signing", public.signing_keys), ("encryption", public.encryption_keys)):
        for k in keys:
            status = "revoked" if k.revoked else ("valid" if k.nbf <= now <= k.exp else "expired")
            rows.append(
                {
                    "owner": public.id,
                    "use": use,
                    "kid": k.kid,
                    "fingerprint": fingerprint(_pk(k.pk)),
                    "nbf": k.nbf,
                    "exp": k.exp,
                    "status": status,
                }
            )
    return rows


def _pk(b64: str) -> bytes:
    return b64d(b64)


# --- directory ----------------------------------------------------------------------


@cli.group()
def directory() -> None:
    """The signed directory of competent authorities."""


@directory.command("build")
@click.option(
    "--root-keystore",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="The network root's encrypted keystore (mode 0600).",
)
@click.option(
    "--entries",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="TOML or YAML file listing the authorities (see docs/PROTOCOL.md).",
)
@click.option(
    "--previous",
    type=click.Path(dir_okay=False, exists=True),
    help="The current directory version; the new one chains to it.",
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="Where to write the new version."
)
@click.option(
    "--previous-root-key-file",
    type=click.Path(dir_okay=False, exists=True),
    help="After a root rotation: the old root's public key, which signed --previous.",
)
@click.option(
    "--valid-days",
    type=click.IntRange(0, 3650),
    default=90,
    show_default=True,
    help="Days until the version expires (clients refuse it after their grace); 0 for no expiry.",
)
@_passphrase_options
@click.pass_obj
def directory_build(
    obj: _Ctx,
    root_keystore: str,
    entries: str,
    previous: str | None,
    out: str,
    valid_days: int,
    previous_root_key_file: str | None,
) -> None:
    """Build the next directory version from an entries file and sign it with the root."""
    network, authorities = load_entries_file(entries)
    root_id = _open_keystore(obj, root_keystore)
    prev = None
    if previous:
        roots = [root_id.signing_key().public]
        if previous_root_key_file:
            roots.append(_root_key_file(previous_root_key_file))
        prev = Directory.verify(Path(previous).read_text().strip(), roots)
    signed = sign_directory(
        root_id,
        network=network,
        authorities=authorities,
        previous=prev,
        now=now_ms(),
        valid_ms=valid_days * DAY_MS if valid_days else None,
    )
    _parent(out).write_text(signed.token + "\n", encoding="ascii")
    until = f", expires {_when(signed.expires)}" if signed.expires is not None else ""
    _out().print(
        f"Signed directory {network} version {signed.version} with {len(authorities)} "
        f"authorities to {out} (hash {signed.hash[:16]}…{until})"
    )


@directory.command("verify")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--root-key", help="Pinned root public key (base64url).")
@click.option(
    "--root-key-file",
    type=click.Path(dir_okay=False, exists=True),
    help="File holding the pinned root public key.",
)
@click.option(
    "--pin",
    "pin_file",
    type=click.Path(dir_okay=False),
    help="Pin file of accepted versions; refuses rollback and forks, and is updated.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def directory_verify(
    files: Sequence[str],
    root_key: str | None,
    root_key_file: str | None,
    pin_file: str | None,
    as_json: bool,
) -> None:
    """Verify one or more directory versions (oldest first) against the pinned root."""
    if bool(root_key) == bool(root_key_file):
        raise click.UsageError("give exactly one of --root-key or --root-key-file")
    pk = root_public_key(root_key) if root_key else _root_key_file(root_key_file or "")
    pin = DirectoryPin([pk])
    if pin_file and Path(pin_file).exists():
        pin = DirectoryPin.load([pk], Path(pin_file).read_text())
    tokens = [Path(f).read_text(encoding="ascii", errors="replace").strip() for f in files]
    current = pin.accept_history(tokens) if len(tokens) > 1 else pin.accept(tokens[0])
    if pin_file:
        write_private_file(Path(pin_file), pin.dump().encode())
    doc = current.document
    if as_json:
        click.echo(
            json.dumps(
                {
                    "network": doc.network,
                    "version": doc.version,
                    "hash": current.hash,
                    "prev": doc.prev,
                    "issued": doc.issued,
                    "authorities": [
                        {
                            "id": a.id,
                            "name": a.name,
                            "country": a.country,
                            "role": a.role,
                            "fingerprint": fingerprint(_pk(a.signing_keys[-1].pk)),
                        }
                        for a in doc.authorities
                    ],
                },
                indent=2,
            )
        )
        return
    console = _out()
    console.print(
        f"[green]OK[/green] directory {doc.network} version {doc.version}, issued {_when(doc.issued)}, "
        f"signed by root {fingerprint(pk)}"
    )
    table = Table()
    table.add_column("id", no_wrap=True)
    table.add_column("name", max_width=28, overflow="ellipsis", no_wrap=True)
    table.add_column("country")
    table.add_column("role", no_wrap=True)
    table.add_column("signing fingerprint", no_wrap=True, min_width=19)
    table.add_column("enc keys")
    table.add_column("escalation")
    for a in doc.authorities:
        esc = a.escalation
        chain = ", ".join(
            [*(f"deputy {d}" for d in esc.deputies)]
            + ([f"desk {esc.duty_desk}"] if esc.duty_desk else [])
            + ([f"supervisor {esc.supervisor}"] if esc.supervisor else [])
        )
        table.add_row(
            a.id,
            a.name,
            a.country,
            a.role,
            fingerprint(_pk(a.signing_keys[-1].pk)),
            str(len(a.encryption_keys)),
            chain or "-",
        )
    console.print(table)


# --- tls ---------------------------------------------------------------------------


@cli.group()
def tls() -> None:
    """The relay's TLS key and certificate, pinned through the directory."""


@tls.command("create")
@click.option("--relay-id", required=True, help="The relay's id in the directory.")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    required=True,
    help="A host name or IP address clients use to reach the relay (repeat for several).",
)
@click.option(
    "--key-out", required=True, type=click.Path(dir_okay=False), help="Private key (PEM, 0600)."
)
@click.option(
    "--cert-out", required=True, type=click.Path(dir_okay=False), help="Certificate (PEM)."
)
@click.option(
    "--pin-out",
    type=click.Path(dir_okay=False),
    help="Also write the tls_spki_sha256 line to this file (to append to an entries file).",
)
@click.option(
    "--days",
    type=click.IntRange(1, 3650),
    default=825,
    show_default=True,
    help="How long the certificate is valid (a pinning client does not check it).",
)
def tls_create(
    relay_id: str,
    hosts: tuple[str, ...],
    key_out: str,
    cert_out: str,
    pin_out: str | None,
    days: int,
) -> None:
    """Make a TLS key and self-signed certificate for `relay serve`.

    Prints the certificate's pin: list it under the relay's entry as
    tls_spki_sha256 = ["<pin>"] in the entries file and publish a new directory
    version before the relay serves it (keep the old pin listed during a rotation).
    """
    key_pem, cert_pem = create_certificate(relay_id, hosts, now_ms=now_ms(), days=days)
    write_private_file(_parent(key_out), key_pem)
    _parent(cert_out).write_bytes(cert_pem)
    pin = spki_sha256_pem(cert_pem)
    line = f'tls_spki_sha256 = ["{pin}"]'
    if pin_out is not None:
        _parent(pin_out).write_text(line + "\n", encoding="ascii")
    _out().print(f"Wrote {key_out} (0600) and {cert_out} for {', '.join(hosts)}")
    click.echo(line)


@tls.command("pin")
@click.argument("cert", type=click.Path(dir_okay=False, exists=True))
def tls_pin(cert: str) -> None:
    """Print the pin (tls_spki_sha256) of a PEM certificate."""
    click.echo(spki_sha256_pem(Path(cert).read_bytes()))


# --- evidence ----------------------------------------------------------------------


@cli.group()
def evidence() -> None:
    """Evidence bundles (`notice evidence` writes them): check one offline."""


@evidence.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--root-key", help="The network's root public key (base64url).")
@click.option(
    "--root-key-file",
    type=click.Path(dir_okay=False, exists=True),
    help="File holding the network's root public key (as `root create --pub-out` writes it).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def evidence_verify(
    file: str, root_key: str | None, root_key_file: str | None, as_json: bool
) -> None:
    """Check an evidence bundle offline, with nothing but the root key.

    Every byte counts: the directory chain from the root, the exporter's signature, the
    envelope's, each receipt's and its place in the relay's log, the log heads and the
    proof joining them. Exit 0 with what it proves; otherwise exit 1 and one line naming
    what failed.
    """
    if bool(root_key) == bool(root_key_file):
        raise click.UsageError("give exactly one of --root-key or --root-key-file")
    pk = root_public_key(root_key) if root_key else _root_key_file(root_key_file or "")
    p = verify_bundle(Path(file).read_bytes(), [pk])
    if as_json:
        click.echo(json.dumps(p.as_json(), indent=2))
        return
    out = _out()
    out.print(
        f"VERIFIED: evidence for message {p.envelope.header.id} (envelope hash {p.envelope.hash})"
    )
    for status, by, at, detail in p.statements():
        out.print(f"  {status:<12} by {by:<16} at {_instant(at)} {detail}".rstrip())
    out.print(
        f"  in the log of {p.head.body.log}: {len(p.receipts)} receipts within its first "
        f"{p.head.size} leaves, consistent with its head of {p.newest_head.size} leaves "
        f"signed {_instant(p.newest_head.body.at)}"
    )
    out.print(
        f"  exported by {p.exporter} at {_instant(p.exported_at)}; keys checked against "
        f"root {p.root_kid} (directory version {p.directory_version})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 refused, 2 usage)."""
    try:
        cli.main(
            args=list(argv) if argv is not None else None, prog_name="keys", standalone_mode=False
        )
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.format_message(), err=True)  # bare command: the help, not an error
        return 2
    except click.exceptions.Abort:
        click.echo("keys: error: aborted", err=True)
        return EXIT_REFUSED
    except click.ClickException as exc:
        click.echo(f"keys: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except KeysError as exc:
        click.echo(f"keys: error: {exc}", err=True)
        return EXIT_REFUSED
    except OSError as exc:
        click.echo(
            f"keys: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True
        )
        return EXIT_REFUSED
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
