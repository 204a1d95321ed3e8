"""The trust layer shared by the relay and the clients.

Identities and keystores, envelopes (seal/open), attachments, receipts and the signed
directory. This package imports neither ``relay`` nor ``clients``. Every error it
raises is a :class:`keys.errors.KeysError`.
"""

from keys.attachments import decrypt_file, decrypt_stream, encrypt_file, encrypt_stream
from keys.directory import Directory, DirectoryPin, load_entries_file, sign_directory
from keys.encoding import fingerprint, key_id, now_ms, uuid7
from keys.envelope import (
    OpenedEnvelope,
    SealedEnvelope,
    VerifiedEnvelope,
    envelope_hash,
    open_envelope,
    seal,
    verify_envelope,
)
from keys.errors import KeysError
from keys.identity import Identity
from keys.keystore import load_keystore, resolve_passphrase, save_keystore
from keys.models import (
    AttachmentManifestEntry,
    DirectoryEntry,
    EnvelopeHeader,
    Plaintext,
    PublicKeys,
    ReceiptBody,
)
from keys.receipts import Receipt, sign_receipt, verify_receipt

__all__ = [
    "AttachmentManifestEntry",
    "Directory",
    "DirectoryEntry",
    "DirectoryPin",
    "EnvelopeHeader",
    "Identity",
    "KeysError",
    "OpenedEnvelope",
    "Plaintext",
    "PublicKeys",
    "Receipt",
    "ReceiptBody",
    "SealedEnvelope",
    "VerifiedEnvelope",
    "decrypt_file",
    "decrypt_stream",
    "encrypt_file",
    "encrypt_stream",
    "envelope_hash",
    "fingerprint",
    "key_id",
    "load_entries_file",
    "load_keystore",
    "now_ms",
    "open_envelope",
    "resolve_passphrase",
    "save_keystore",
    "seal",
    "sign_directory",
    "sign_receipt",
    "uuid7",
    "verify_envelope",
    "verify_receipt",
]
