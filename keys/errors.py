"""The trust layer's exception hierarchy.

Every failure in :mod:`keys` raises a subclass of :class:`KeysError`; third-party
errors (libsodium, pydantic, JSON) are translated at the border with ``from exc``.
Messages are one plain sentence, and never contain key material or plaintext.

::

    KeysError
    ├── EncodingError                 input is not the shape it must be
    ├── VerificationError             something signed or sealed did not check out
    │   ├── TamperedError             a signature or an authentication tag failed
    │   ├── UnknownSenderError        the sender is not in the directory
    │   ├── UnknownSigningKeyError    signed by a key the directory does not list
    │   ├── SenderKeyRevokedError     the signing key has been revoked
    │   ├── SenderKeyExpiredError     the signing key is outside its validity
    │   ├── MessageExpiredError       the message's own expiry has passed
    │   ├── NotYetValidError          created too far in the future
    │   ├── WrongRecipientError       no wrapped key for this recipient's keys
    │   ├── SenderBindingError        encrypted from/to/id/created differ from header
    │   ├── AttachmentError           an attachment failed to decrypt or hash
    │   ├── ReceiptError              a receipt is not valid for this message/signer
    │   └── LogError                  a log head or proof does not verify
    │       ├── MerkleError           (keys.merkle) a proof does not lead to its root
    │       └── LogForkError          two log heads cannot both be true
    ├── DirectoryError                the signed directory cannot be trusted
    │   ├── UnknownRootError          not signed by the pinned network root
    │   ├── DirectorySignatureError   root key listed, signature bad
    │   ├── DirectoryInvalidError     signed, but its content is inconsistent
    │   ├── DirectoryRollbackError    older than a version already accepted
    │   ├── DirectoryForkError        same version (or chain) with different content
    │   └── DirectoryGapError         skips versions; the history is needed
    ├── KeystoreError                 the keystore file cannot be used
    │   ├── KeystorePermissionError   readable by group or others
    │   ├── WrongPassphraseError      the passphrase does not open it
    │   └── PassphraseUnavailableError no passphrase from env, file or prompt
    ├── RecipientKeyError             no usable encryption key for a recipient
    └── RequestAuthError              an HTTP request signature (RFC 9421) is refused
        ├── MissingSignatureError     Signature, Signature-Input or Content-Digest absent
        ├── BadSignatureInputError    the headers are not the cpar-v1 profile
        ├── SignatureExpiredError     outside its created/expires window
        ├── ReplayedNonceError        the nonce was already used while still valid
        ├── NonceCacheFullError       too many unexpired nonces to remember another
        ├── UnknownRequestKeyError    the keyid names no known signing key
        ├── DigestMismatchError       Content-Digest is not the SHA-256 of the body
        └── BadRequestSignatureError  the Ed25519 signature does not verify
"""

from __future__ import annotations


class KeysError(Exception):
    """Base class of every error raised by the trust layer."""

    code = "keys_error"


class EncodingError(KeysError):
    code = "malformed"


class VerificationError(KeysError):
    code = "verification_failed"


class TamperedError(VerificationError):
    code = "bad_signature"


class UnknownSenderError(VerificationError):
    code = "unknown_sender"


class UnknownSigningKeyError(VerificationError):
    code = "unknown_signing_key"


class SenderKeyRevokedError(VerificationError):
    code = "sender_key_revoked"


class SenderKeyExpiredError(VerificationError):
    code = "sender_key_expired"


class MessageExpiredError(VerificationError):
    code = "message_expired"


class NotYetValidError(VerificationError):
    code = "not_yet_valid"


class WrongRecipientError(VerificationError):
    code = "wrong_recipient"


class SenderBindingError(VerificationError):
    code = "sender_binding_mismatch"


class AttachmentError(VerificationError):
    code = "attachment_invalid"


class ReceiptError(VerificationError):
    code = "receipt_invalid"


class LogError(VerificationError):
    """A log head or proof does not verify: a relay showing a log it cannot prove."""


class LogForkError(LogError):
    """Two log heads cannot both be true: history was rewritten or forked."""


class DirectoryError(KeysError):
    code = "directory_invalid"


class UnknownRootError(DirectoryError):
    code = "directory_unknown_root"


class DirectorySignatureError(DirectoryError):
    code = "directory_bad_signature"


class DirectoryInvalidError(DirectoryError):
    code = "directory_invalid"


class DirectoryRollbackError(DirectoryError):
    code = "directory_rollback"


class DirectoryForkError(DirectoryError):
    code = "directory_fork"


class DirectoryGapError(DirectoryError):
    code = "directory_gap"


class KeystoreError(KeysError):
    code = "keystore_error"


class KeystorePermissionError(KeystoreError):
    code = "keystore_permissions"


class WrongPassphraseError(KeystoreError):
    code = "wrong_passphrase"


class PassphraseUnavailableError(KeystoreError):
    code = "no_passphrase"


class RecipientKeyError(KeysError):
    code = "no_recipient_key"


class RequestAuthError(KeysError):
    """A signed HTTP request (RFC 9421 profile ``cpar-v1``) was refused."""

    code = "request_auth_failed"


class MissingSignatureError(RequestAuthError):
    code = "missing_signature"


class BadSignatureInputError(RequestAuthError):
    code = "bad_signature_input"


class SignatureExpiredError(RequestAuthError):
    code = "signature_expired"


class ReplayedNonceError(RequestAuthError):
    code = "replayed_nonce"


class NonceCacheFullError(RequestAuthError):
    code = "nonce_cache_full"


class UnknownRequestKeyError(RequestAuthError):
    code = "unknown_key"


class DigestMismatchError(RequestAuthError):
    code = "digest_mismatch"


class BadRequestSignatureError(RequestAuthError):
    code = "bad_request_signature"
