"""The client library's exceptions: the relay's problem codes as typed errors.

::

    ClientError
    ├── TransportError            the relay could not be reached (connection, timeout, TLS)
    │   └── StreamClosedError         the WebSocket stream ended (``code``: its close code)
    ├── ProtocolError             the relay answered with something the protocol does not allow
    └── RelayProblem              the relay answered with problem+json (RFC 9457)
        ├── MalformedRequestError     400
        ├── AuthenticationError       401 (signature refused, replayed nonce, unknown key)
        ├── PermissionDeniedError     403 (e.g. sender_mismatch)
        ├── NotFoundError             404 (unknown_message, unknown_attachment)
        ├── ConflictError             409 (id_conflict)
        ├── RejectedError             413/422 (bad_signature, unknown_recipient, expired, ...)
        └── UnavailableError          503 (store_unavailable; retry later)
"""

from __future__ import annotations

from typing import Any

from keys.wire import Problem


class ClientError(Exception):
    """Base class of everything the client library raises."""


class TransportError(ClientError):
    """The relay could not be reached or the connection broke."""


class StreamClosedError(TransportError):
    """The WebSocket stream was closed (by the relay, by us, or by the network)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class ProtocolError(ClientError):
    """The relay's answer does not match the wire protocol (keys/wire.py)."""


class SigningKeyError(ClientError):
    """Our own identity has no signing key usable now (expired, revoked, not yet valid):
    no request can be signed."""


class RelayProblem(ClientError):  # noqa: N818 - it is the relay's "problem" document
    """The relay refused the request; ``code`` is the stable machine-readable reason."""

    def __init__(self, status: int, code: str, title: str, detail: str) -> None:
        super().__init__(f"{detail} ({code})")
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail

    @classmethod
    def from_body(cls, status: int, body: Any) -> RelayProblem:
        if isinstance(body, dict):
            code = str(body.get("code") or "unknown")
            title = str(body.get("title") or "")
            detail = str(body.get("detail") or title or f"HTTP {status}")
        else:
            code, title, detail = "unknown", "", f"HTTP {status}"
        kind = _BY_STATUS.get(status, RelayProblem)
        return kind(status, code, title, detail)

    @staticmethod
    def from_problem(problem: Problem) -> RelayProblem:
        """The typed exception for a problem inside a batch result or an error frame."""
        return _from_problem(problem)


def _from_problem(problem: Problem) -> RelayProblem:
    kind = _BY_STATUS.get(problem.status, RelayProblem)
    return kind(problem.status, problem.code, problem.title, problem.detail)


class MalformedRequestError(RelayProblem):
    pass


class AuthenticationError(RelayProblem):
    pass


class PermissionDeniedError(RelayProblem):
    pass


class NotFoundError(RelayProblem):
    pass


class ConflictError(RelayProblem):
    pass


class RejectedError(RelayProblem):
    pass


class UnavailableError(RelayProblem):
    pass


_BY_STATUS: dict[int, type[RelayProblem]] = {
    400: MalformedRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: RejectedError,
    422: RejectedError,
    503: UnavailableError,
}
