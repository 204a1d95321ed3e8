"""The signed directory of competent authorities, and the pin that refuses forks.

A directory version is a compact JWS (``typ: cpar-directory+jws``) signed by the
network root key. Its payload is a :class:`~keys.models.DirectoryDocument`; its hash is
``SHA-256(payload bytes)``, and each version after the first carries the hash of the
one before in ``prev``. A client pins the root public key and remembers the hash of
every version it has accepted (:class:`DirectoryPin`), so it refuses:

* a bad signature, or a signature by any key but the pinned root;
* a version older than the newest it has accepted (rollback);
* a version number seen before with different content, or a ``prev`` that does not
  match what it saw (fork);
* a jump over versions it has not seen, unless it is given the history (gap).
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from keys.encoding import b64d, b64e, dumps, key_id, sha256_hex
from keys.errors import (
    DirectoryForkError,
    DirectoryGapError,
    DirectoryInvalidError,
    DirectoryRollbackError,
    DirectorySignatureError,
    EncodingError,
    KeysError,
    TamperedError,
    UnknownRootError,
)
from keys.identity import Identity, verify_encryption_key
from keys.jws import CompactJWS, parse_compact, sign_compact, verify_compact
from keys.models import (
    TYP_DIRECTORY,
    TYP_ROOT_ROTATION,
    DirectoryDocument,
    DirectoryEntry,
    JwsHeader,
    PublicKeys,
    RootRotation,
    SigningKeyInfo,
)

MAX_DIRECTORY_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Directory:
    """A verified directory version, with lookups used on every message."""

    token: str
    document: DirectoryDocument
    hash: str
    root_kid: str
    _by_id: dict[str, DirectoryEntry] = field(repr=False)
    _by_kid: dict[str, tuple[DirectoryEntry, SigningKeyInfo]] = field(repr=False)
    _sealable: frozenset[tuple[str, str]] = field(repr=False, default=frozenset())
    """(authority, encryption kid) of every unrevoked encryption key of a non-relay."""

    @property
    def version(self) -> int:
        return self.document.version

    @property
    def expires(self) -> int | None:
        """When this version stops being usable (before the client's grace); None: never."""
        return self.document.expires

    def expired(self, now: int, grace_ms: int) -> bool:
        expires = self.document.expires
        return expires is not None and now > expires + grace_ms

    @property
    def network(self) -> str:
        return self.document.network

    @property
    def authorities(self) -> list[DirectoryEntry]:
        return self.document.authorities

    def get(self, authority_id: str) -> DirectoryEntry | None:
        return self._by_id.get(authority_id)

    def sealable(self, authority_id: str, kid: str) -> bool:
        """Whether ``authority_id`` (not a relay) holds the unrevoked encryption key ``kid``."""
        return (authority_id, kid) in self._sealable

    def signer(self, kid: str) -> tuple[DirectoryEntry, SigningKeyInfo] | None:
        """Which entry owns signing key ``kid``, if any."""
        return self._by_kid.get(kid)

    def relays(self) -> list[DirectoryEntry]:
        return [a for a in self.document.authorities if a.role == "relay"]

    def tls_pins(self) -> frozenset[str]:
        """Every relay's TLS key pins (``tls_spki_sha256``) in this version."""
        return frozenset(pin for relay in self.relays() for pin in relay.tls_spki_sha256)

    @classmethod
    def verify(cls, token: str | bytes, roots: Iterable[bytes]) -> Directory:
        """Verify one directory JWS against the pinned root public key(s)."""
        try:
            jws = parse_compact(token, what="directory", max_bytes=MAX_DIRECTORY_BYTES)
            header = JwsHeader.model_validate_json(jws.protected)
        except (EncodingError, TamperedError, ValidationError) as exc:
            raise DirectoryInvalidError(f"directory is malformed: {_first_error(exc)}") from exc
        if header.typ != TYP_DIRECTORY:
            raise DirectoryInvalidError(f"not a directory (typ {header.typ!r})")
        by_kid = {key_id(pk): pk for pk in roots}
        root_pk = by_kid.get(header.kid)
        if root_pk is None:
            raise UnknownRootError(
                f"directory is signed by key {header.kid}, which is not the pinned network root"
            )
        try:
            verify_compact(jws, root_pk, what="directory")
        except TamperedError as exc:
            raise DirectorySignatureError("directory signature does not verify") from exc
        try:
            document = DirectoryDocument.model_validate_json(jws.payload)
        except ValidationError as exc:
            raise DirectoryInvalidError(
                f"directory content is invalid: {_first_error(exc)}"
            ) from exc
        return cls._index(
            token if isinstance(token, str) else token.decode(), document, jws.payload, header.kid
        )

    @classmethod
    def _index(
        cls, token: str, document: DirectoryDocument, payload: bytes, root_kid: str
    ) -> Directory:
        by_id: dict[str, DirectoryEntry] = {}
        by_kid: dict[str, tuple[DirectoryEntry, SigningKeyInfo]] = {}
        for entry in document.authorities:
            by_id[entry.id] = entry
            for sk in entry.signing_keys:
                if sk.kid in by_kid:
                    raise DirectoryInvalidError(f"signing key {sk.kid} is listed twice")
                by_kid[sk.kid] = (entry, sk)
            for ek in entry.encryption_keys:
                signer = entry.signing_key(ek.signer)
                if signer is None or signer.revoked is not None:
                    raise DirectoryInvalidError(
                        f"{entry.id}: encryption key {ek.kid} is signed by no valid key of its own"
                    )
                if not verify_encryption_key(entry.id, ek, signer):
                    raise DirectoryInvalidError(
                        f"{entry.id}: encryption key {ek.kid} carries a bad signature"
                    )
        return cls(
            token=token,
            document=document,
            hash=sha256_hex(payload),
            root_kid=root_kid,
            _by_id=by_id,
            _by_kid=by_kid,
            _sealable=frozenset(
                (e.id, k.kid)
                for e in by_id.values()
                if e.role != "relay"
                for k in e.encryption_keys
                if k.revoked is None
            ),
        )


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "document"
        return f"{loc}: {err['msg']}"
    return str(exc)


def sign_directory(
    root: Identity,
    *,
    network: str,
    authorities: Sequence[DirectoryEntry],
    previous: Directory | None,
    now: int,
    valid_ms: int | None = None,
) -> Directory:
    """Build and sign the next directory version (version 1 if ``previous`` is None);
    with ``valid_ms`` it expires that long after ``now``."""
    if root.kind != "root":
        raise KeysError(f"{root.id} is not a network root identity")
    if previous is not None and previous.network != network:
        raise KeysError(f"previous directory is for network {previous.network!r}, not {network!r}")
    if previous is not None and now < previous.document.issued:
        raise KeysError("this clock is behind the previous version's issue time: check the clock")
    try:
        document = DirectoryDocument(
            network=network,
            version=1 if previous is None else previous.version + 1,
            prev=None if previous is None else previous.hash,
            issued=now,
            expires=None if valid_ms is None else now + valid_ms,
            authorities=list(authorities),
        )
    except ValidationError as exc:
        raise DirectoryInvalidError(f"directory content is invalid: {_first_error(exc)}") from exc
    signing = root.signing_key(now)
    header = dumps({"alg": "Ed25519", "typ": TYP_DIRECTORY, "kid": signing.kid})
    payload = document.model_dump_json(by_alias=True).encode()
    token = sign_compact(header, payload, signing.secret)
    return Directory.verify(token, [signing.public])


class DirectoryPin:
    """Remembers every accepted version's hash; refuses rollbacks, forks and gaps.

    ``state`` maps version -> hash. Persist it with :meth:`dump` / :meth:`load` so a
    restarted client cannot be rolled back either.
    """

    def __init__(
        self,
        roots: Iterable[bytes],
        state: dict[int, str] | None = None,
        *,
        network: str | None = None,
        issued: int | None = None,
        retired: dict[str, int] | None = None,
        introduced: dict[str, int] | None = None,
    ) -> None:
        self.roots = list(roots)
        self.retired: dict[str, int] = dict(retired or {})
        """kid of a rotated-away root -> the last version it may have signed."""
        self.introduced: dict[str, int] = dict(introduced or {})
        """kid of a root reached by rotation -> the first version it may sign."""
        self.state: dict[int, str] = dict(state or {})
        self.current: Directory | None = None
        self.network = network
        """The network every accepted version belongs to: it never changes."""
        self.issued = issued
        """The newest accepted version's issue time: a later version never goes back."""

    @property
    def latest(self) -> int:
        return max(self.state, default=0)

    def accept(self, token: str | bytes) -> Directory:
        """Verify ``token`` and make it the current directory, or raise."""
        directory = Directory.verify(token, self.roots)
        v = directory.version
        last = self.retired.get(directory.root_kid)
        if last is not None and v > last:
            raise UnknownRootError(
                f"directory version {v} is signed by root {directory.root_kid}, which was "
                f"rotated away after version {last}"
            )
        first = self.introduced.get(directory.root_kid)
        if first is not None and v < first:
            raise UnknownRootError(
                f"directory version {v} is signed by root {directory.root_kid}, which signs "
                f"only from version {first}"
            )
        if self.network is not None and directory.network != self.network:
            raise DirectoryForkError(
                f"directory version {v} is for network {directory.network!r}, not the pinned "
                f"network {self.network!r}"
            )
        seen = self.state.get(v)
        if seen is not None and seen != directory.hash:
            raise DirectoryForkError(
                f"directory version {v} differs from the version {v} accepted before (fork)"
            )
        if v < self.latest:
            raise DirectoryRollbackError(
                f"directory version {v} is older than version {self.latest} already accepted"
            )
        if seen is None and self.state:
            if v > self.latest + 1:
                raise DirectoryGapError(
                    f"directory version {v} skips versions after {self.latest}; fetch the history"
                )
            if directory.document.prev != self.state[self.latest]:
                raise DirectoryForkError(
                    f"directory version {v} does not follow version {self.latest} (fork)"
                )
            if self.issued is not None and directory.document.issued < self.issued:
                raise DirectoryRollbackError(
                    f"directory version {v} was issued before version {self.latest}"
                )
        self.state[v] = directory.hash
        self.current = directory
        self.network = directory.network
        if v == self.latest:
            self.issued = directory.document.issued
        return directory

    def follow(self, rotations: Iterable[str | bytes]) -> list[bytes]:
        """Follow root-key rotation statements from a trusted root; returns the new roots.

        A statement counts only when signed by a root this pin trusts and not retired,
        for the pinned network; its new key is then trusted for the versions from
        ``from_version`` on, and the old one for none after it."""
        added: list[bytes] = []
        pending = [_Rotation.parse(t) for t in rotations]
        progress = True
        while progress:  # a chain may arrive in any order
            progress = False
            for rotation in list(pending):
                old, new = rotation.old, rotation.new
                known = {key_id(r) for r in self.roots}
                if key_id(new) in known:
                    pending.remove(rotation)
                    continue
                if key_id(old) not in known or key_id(old) in self.retired:
                    continue  # not (or no longer) signed by a root this pin trusts
                statement = rotation.verify()
                if self.network is not None and statement.network != self.network:
                    raise DirectoryForkError(
                        f"a root rotation for network {statement.network!r}, not the pinned "
                        f"network {self.network!r}"
                    )
                current = self.current
                if (
                    current is not None
                    and current.root_kid == key_id(old)
                    and statement.from_version <= current.version
                ):
                    raise DirectoryInvalidError(
                        f"a root rotation from version {statement.from_version} conflicts with "
                        f"version {current.version}, already signed by the root it retires: "
                        "the keeper must rotate from a later version"
                    )
                self.retired[key_id(old)] = statement.from_version - 1
                self.introduced[key_id(new)] = statement.from_version
                self.roots.append(new)
                added.append(new)
                pending.remove(rotation)
                progress = True
        return added

    def accept_history(self, tokens: Iterable[str | bytes]) -> Directory:
        """Accept a run of versions in order; returns the newest.

        Versions already pinned (same version, same hash) are skipped without verifying
        them again: after a root rotation, the old root may no longer be trusted."""
        given = list(tokens)
        tokens = [t for t in given if not self._pinned(t)] or given[-1:]
        verified = sorted(
            (Directory.verify(t, self.roots) for t in tokens), key=lambda d: d.version
        )
        if not verified:
            raise DirectoryInvalidError("empty directory history")
        for d in verified[:-1]:
            if d.version <= self.latest and self.state.get(d.version) == d.hash:
                continue  # already known and consistent
            self.accept(d.token)
        # The newest given version must itself be acceptable as current: a history that
        # ends below the pinned version is a rollback, whatever it contains.
        return self.accept(verified[-1].token)

    def _pinned(self, token: str | bytes) -> bool:
        """Already accepted as it is (by version and hash), and not the newest."""
        try:
            jws = parse_compact(token, what="directory", max_bytes=MAX_DIRECTORY_BYTES)
            document = DirectoryDocument.model_validate_json(jws.payload)
        except (EncodingError, TamperedError, ValidationError):
            return False
        v = document.version
        return v < self.latest and self.state.get(v) == sha256_hex(jws.payload)

    def dump(self) -> str:
        doc: dict[str, object] = {"versions": {str(k): v for k, v in sorted(self.state.items())}}
        doc["roots"] = [b64e(r) for r in self.roots]
        if self.retired:
            doc["retired"] = dict(sorted(self.retired.items()))
        if self.introduced:
            doc["introduced"] = dict(sorted(self.introduced.items()))
        if self.network is not None:
            doc["network"] = self.network
        if self.issued is not None:
            doc["issued"] = self.issued
        return json.dumps(doc)

    @classmethod
    def load(cls, roots: Iterable[bytes], text: str) -> DirectoryPin:
        """A pin from :meth:`dump` (files written before ``network``/``issued`` load too)."""
        try:
            doc = json.loads(text)
            state = {int(k): str(v) for k, v in doc["versions"].items()}
            network, issued = doc.get("network"), doc.get("issued")
            if network is not None and not isinstance(network, str):
                raise TypeError("network")
            if issued is not None and (not isinstance(issued, int) or isinstance(issued, bool)):
                raise TypeError("issued")
            retired = {str(k): int(v) for k, v in doc.get("retired", {}).items()}
            introduced = {str(k): int(v) for k, v in doc.get("introduced", {}).items()}
            followed = [b64d(r, what="root key") for r in doc.get("roots", [])]
        except (ValueError, KeyError, TypeError, AttributeError, EncodingError) as exc:
            raise DirectoryInvalidError("directory pin file is corrupt") from exc
        # The configured roots, then the ones reached by rotation statements before.
        all_roots = list(roots)
        all_roots += [r for r in followed if key_id(r) not in {key_id(x) for x in all_roots}]
        return cls(
            all_roots,
            state,
            network=network,
            issued=issued,
            retired=retired,
            introduced=introduced,
        )


# --- entries files (the directory keeper's input) -----------------------------------


def load_entries_file(path: str | os.PathLike[str]) -> tuple[str, list[DirectoryEntry]]:
    """Read a TOML or YAML list of authorities and merge in their exported public keys.

    Each authority names ``keys``: the path (relative to the entries file) of the JSON
    that ``keys identity export`` wrote. Returns ``(network, entries)``.
    """
    src = Path(path)
    try:
        text = src.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeysError(f"cannot read entries file {src}: {exc.strerror}") from exc
    try:
        raw: Any = yaml.safe_load(text) if src.suffix in {".yaml", ".yml"} else tomllib.loads(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise KeysError(
            f"{src} is not valid {'YAML' if src.suffix != '.toml' else 'TOML'}"
        ) from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("authorities"), list):
        raise KeysError(f"{src}: expected a 'network' name and a list of 'authorities'")
    network = raw.get("network")
    if not isinstance(network, str) or not network:
        raise KeysError(f"{src}: 'network' must be a non-empty string")
    entries: list[DirectoryEntry] = []
    for i, item in enumerate(raw["authorities"]):
        if not isinstance(item, dict) or not isinstance(item.get("keys"), str):
            raise KeysError(f"{src}: authorities[{i}] needs a 'keys' path to an exported key file")
        keys_path = (src.parent / item["keys"]).resolve()
        try:
            public = PublicKeys.model_validate_json(keys_path.read_bytes())
        except OSError as exc:
            raise KeysError(f"{src}: authorities[{i}]: cannot read {keys_path}") from exc
        except ValidationError as exc:
            raise KeysError(f"{keys_path}: not a public key export: {_first_error(exc)}") from exc
        if public.id != item.get("id"):
            raise KeysError(
                f"{src}: authorities[{i}] is {item.get('id')!r} but {keys_path.name} holds "
                f"keys for {public.id!r}"
            )
        fields = {k: v for k, v in item.items() if k != "keys"}
        fields["signing_keys"] = public.signing_keys
        fields["encryption_keys"] = public.encryption_keys
        try:
            entries.append(DirectoryEntry.model_validate(fields))
        except ValidationError as exc:
            raise KeysError(f"{src}: authorities[{i}]: {_first_error(exc)}") from exc
    return network, entries


def sign_rotation(
    old_root: Identity, new_root_public: bytes, *, network: str, from_version: int, now: int
) -> str:
    """A statement, signed by the outgoing root, that ``new_root_public`` signs the
    directory from ``from_version`` on."""
    if old_root.kind != "root":
        raise KeysError(f"{old_root.id} is not a network root identity")
    signing = old_root.signing_key(now)
    try:
        statement = RootRotation(
            network=network,
            old=b64e(signing.public),
            new=b64e(new_root_public),
            from_version=from_version,
            issued=now,
        )
    except ValidationError as exc:
        raise DirectoryInvalidError(f"root rotation is invalid: {_first_error(exc)}") from exc
    header = dumps({"alg": "Ed25519", "typ": TYP_ROOT_ROTATION, "kid": signing.kid})
    return sign_compact(header, statement.model_dump_json().encode(), signing.secret)


@dataclass(frozen=True)
class _Rotation:
    """A parsed rotation statement; :meth:`verify` checks it against the outgoing root."""

    jws: CompactJWS
    kid: str
    statement: RootRotation
    old: bytes
    new: bytes

    @classmethod
    def parse(cls, token: str | bytes) -> _Rotation:
        try:
            jws = parse_compact(token, what="root rotation", max_bytes=16_384)
            header = JwsHeader.model_validate_json(jws.protected)
            statement = RootRotation.model_validate_json(jws.payload)
        except (EncodingError, TamperedError, ValidationError) as exc:
            raise DirectoryInvalidError(f"root rotation is malformed: {_first_error(exc)}") from exc
        if header.typ != TYP_ROOT_ROTATION:
            raise DirectoryInvalidError(f"not a root rotation (typ {header.typ!r})")
        old, new = b64d(statement.old, what="root key"), b64d(statement.new, what="root key")
        return cls(jws, header.kid, statement, old, new)

    def verify(self) -> RootRotation:
        """The statement, once its signature by the root it retires checks out."""
        if self.kid != key_id(self.old):
            raise DirectorySignatureError("root rotation is not signed by the root it retires")
        try:
            verify_compact(self.jws, self.old, what="root rotation")
        except TamperedError as exc:
            raise DirectorySignatureError("root rotation signature does not verify") from exc
        return self.statement


def root_public_key(text: str) -> bytes:
    """Parse a pinned root key given as unpadded base64url (32 bytes)."""
    try:
        raw = b64d(text.strip(), what="root key")
    except EncodingError as exc:
        raise UnknownRootError(f"root key is not base64url: {exc}") from exc
    if len(raw) != 32:
        raise UnknownRootError("root key must be 32 bytes of base64url")
    return raw
