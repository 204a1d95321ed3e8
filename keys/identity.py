"""Identities: Ed25519 signing keys and X25519 encryption keys, with their lifecycles.

An identity (an authority, the relay, or the network root) owns one current Ed25519
signing key and, unless it is a root, one or more X25519 encryption keys. Each
encryption key has a validity window and is signed by a signing key of the same
identity. Rotation adds a new key and shortens the old one's life to a grace period, so
both are valid while the directory propagates. Private key bytes never appear in a
``repr``, a log line or an error message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Literal

import nacl.bindings

from keys.encoding import Rng, b64d, b64e, fingerprint, key_id
from keys.errors import KeysError
from keys.jws import ed25519_sign, ed25519_verify
from keys.models import EncryptionKeyInfo, PublicKeys, SigningKeyInfo

DAY_MS = 86_400_000
DEFAULT_SIGNING_VALIDITY_MS = 2 * 365 * DAY_MS
DEFAULT_ENCRYPTION_VALIDITY_MS = 365 * DAY_MS
DEFAULT_GRACE_MS = 14 * DAY_MS

IdentityKind = Literal["authority", "relay", "root"]


def encryption_key_statement(authority: str, kid: str, pk_b64: str, nbf: int, exp: int) -> bytes:
    """The exact bytes an identity key signs to vouch for an encryption key."""
    return f"cpar-enckey-v1\n{authority}\n{kid}\n{pk_b64}\n{nbf}\n{exp}".encode("ascii")


def verify_encryption_key(authority: str, key: EncryptionKeyInfo, signer: SigningKeyInfo) -> bool:
    statement = encryption_key_statement(authority, key.kid, key.pk, key.nbf, key.exp)
    return ed25519_verify(b64d(signer.pk), statement, b64d(key.sig))


@dataclass(frozen=True, slots=True, repr=False)
class SigningKey:
    """A private Ed25519 key with its validity. ``seed`` is the 32-byte libsodium seed."""

    seed: bytes
    nbf: int
    exp: int
    revoked: int | None = None
    public: bytes = field(init=False)
    secret: bytes = field(init=False)
    kid: str = field(init=False)
    """The key id, derived from ``public`` once (it is asked for on every signature)."""

    def __post_init__(self) -> None:
        pk, sk = nacl.bindings.crypto_sign_seed_keypair(self.seed)
        object.__setattr__(self, "public", pk)
        object.__setattr__(self, "secret", sk)
        object.__setattr__(self, "kid", key_id(pk))

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)

    def sign(self, message: bytes) -> bytes:
        return ed25519_sign(self.secret, message)

    def info(self) -> SigningKeyInfo:
        return SigningKeyInfo(
            kid=self.kid, pk=b64e(self.public), nbf=self.nbf, exp=self.exp, revoked=self.revoked
        )

    def usable_at(self, t: int) -> bool:
        return self.revoked is None and self.nbf <= t <= self.exp

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r}, nbf={self.nbf}, exp={self.exp})"


@dataclass(frozen=True, slots=True, repr=False)
class EncryptionKey:
    """A private X25519 key with its validity and the identity's signature over it."""

    secret: bytes
    nbf: int
    exp: int
    signer: str
    sig: bytes
    revoked: int | None = None
    public: bytes = field(init=False)
    kid: str = field(init=False)
    """The key id, derived from ``public`` once (it is asked for on every message)."""

    def __post_init__(self) -> None:
        public = nacl.bindings.crypto_scalarmult_base(self.secret)
        object.__setattr__(self, "public", public)
        object.__setattr__(self, "kid", key_id(public))

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)

    def info(self) -> EncryptionKeyInfo:
        return EncryptionKeyInfo(
            kid=self.kid,
            pk=b64e(self.public),
            nbf=self.nbf,
            exp=self.exp,
            revoked=self.revoked,
            signer=self.signer,
            sig=b64e(self.sig),
        )

    def __repr__(self) -> str:
        return f"EncryptionKey(kid={self.kid!r}, nbf={self.nbf}, exp={self.exp})"


def _new_encryption_key(
    owner: str, signer: SigningKey, nbf: int, exp: int, rng: Rng
) -> EncryptionKey:
    _pk, secret = nacl.bindings.crypto_box_seed_keypair(rng(32))
    public = nacl.bindings.crypto_scalarmult_base(secret)
    statement = encryption_key_statement(owner, key_id(public), b64e(public), nbf, exp)
    return EncryptionKey(
        secret=secret, nbf=nbf, exp=exp, signer=signer.kid, sig=signer.sign(statement)
    )


@dataclass(frozen=True, slots=True, repr=False)
class Identity:
    """The private side of an authority, a relay, or the network root."""

    id: str
    kind: IdentityKind
    signing_keys: tuple[SigningKey, ...]
    encryption_keys: tuple[EncryptionKey, ...] = ()

    def __repr__(self) -> str:
        return f"Identity(id={self.id!r}, kind={self.kind!r}, kid={self.signing_keys[-1].kid!r})"

    @classmethod
    def generate(
        cls,
        id: str,
        *,
        kind: IdentityKind = "authority",
        now: int,
        signing_validity_ms: int = DEFAULT_SIGNING_VALIDITY_MS,
        encryption_validity_ms: int = DEFAULT_ENCRYPTION_VALIDITY_MS,
        rng: Rng = os.urandom,
    ) -> Identity:
        signing = SigningKey(seed=rng(32), nbf=now, exp=now + signing_validity_ms)
        enc: tuple[EncryptionKey, ...] = ()
        if kind == "authority":
            enc = (_new_encryption_key(id, signing, now, now + encryption_validity_ms, rng),)
        return cls(id=id, kind=kind, signing_keys=(signing,), encryption_keys=enc)

    # -- lookups ---------------------------------------------------------------

    def signing_key(self, now: int | None = None) -> SigningKey:
        """The newest signing key usable at ``now`` (or the newest unrevoked one)."""
        keys = [k for k in self.signing_keys if k.revoked is None]
        if now is not None:
            keys = [k for k in keys if k.usable_at(now)]
        if not keys:
            raise KeysError(f"identity {self.id} has no usable signing key")
        return max(keys, key=lambda k: k.nbf)

    def encryption_secrets(self) -> dict[str, bytes]:
        """kid -> X25519 secret for every key not revoked (old keys still open old mail)."""
        return {k.kid: k.secret for k in self.encryption_keys if k.revoked is None}

    def public_keys(self) -> PublicKeys:
        return PublicKeys(
            id=self.id,
            signing_keys=[k.info() for k in self.signing_keys],
            encryption_keys=[k.info() for k in self.encryption_keys],
        )

    # -- lifecycle ---------------------------------------------------------------

    def rotate_encryption(
        self,
        *,
        now: int,
        grace_ms: int = DEFAULT_GRACE_MS,
        validity_ms: int = DEFAULT_ENCRYPTION_VALIDITY_MS,
        rng: Rng = os.urandom,
    ) -> Identity:
        """Add a new encryption key; current ones stay valid for ``grace_ms`` more."""
        if self.kind != "authority":
            raise KeysError("only an authority identity has encryption keys")
        signer = self.signing_key(now)
        cut = now + grace_ms
        old = tuple(
            self._resign(replace(k, exp=min(k.exp, cut)), signer) for k in self.encryption_keys
        )
        new = _new_encryption_key(self.id, signer, now, now + validity_ms, rng)
        return replace(self, encryption_keys=(*old, new))

    def rotate_signing(
        self,
        *,
        now: int,
        grace_ms: int = DEFAULT_GRACE_MS,
        validity_ms: int = DEFAULT_SIGNING_VALIDITY_MS,
        rng: Rng = os.urandom,
    ) -> Identity:
        """Add a new signing key and re-sign the encryption keys with it."""
        cut = now + grace_ms
        old = tuple(replace(k, exp=min(k.exp, cut)) for k in self.signing_keys)
        new = SigningKey(seed=rng(32), nbf=now, exp=now + validity_ms)
        enc = tuple(self._resign(k, new) for k in self.encryption_keys)
        return replace(self, signing_keys=(*old, new), encryption_keys=enc)

    def revoke(self, kid: str, *, now: int) -> Identity:
        """Mark one key revoked from ``now``. Revoking the last signing key is refused."""
        if any(k.kid == kid for k in self.signing_keys):
            remaining = [k for k in self.signing_keys if k.kid != kid and k.revoked is None]
            if not remaining:
                raise KeysError(
                    "refusing to revoke the only signing key; rotate first (keys rotate --signing)"
                )
            signer = max(remaining, key=lambda k: k.nbf)
            signing = tuple(
                replace(k, revoked=now) if k.kid == kid else k for k in self.signing_keys
            )
            enc = tuple(
                self._resign(k, signer) if k.signer == kid else k for k in self.encryption_keys
            )
            return replace(self, signing_keys=signing, encryption_keys=enc)
        if any(k.kid == kid for k in self.encryption_keys):
            enc = tuple(
                replace(k, revoked=now) if k.kid == kid else k for k in self.encryption_keys
            )
            return replace(self, encryption_keys=enc)
        raise KeysError(f"identity {self.id} has no key {kid}")

    def _resign(self, key: EncryptionKey, signer: SigningKey) -> EncryptionKey:
        statement = encryption_key_statement(self.id, key.kid, b64e(key.public), key.nbf, key.exp)
        return replace(key, signer=signer.kid, sig=signer.sign(statement))
