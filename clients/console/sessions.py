"""Sign-in links, sessions and CSRF tokens of the officer console (in memory).

A sign-in link carries a one-time token (32 random bytes): used once, it is gone, and a
new one is minted (the daemon logs it). A session is a random cookie value mapped to
the person who signed in, their CSRF token and an expiry; secrets are compared in
constant time. Nothing here is written to disk: a daemon restart signs everyone out.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Session", "Sessions"]

SESSION_S = 8 * 3600
MAX_SESSIONS = 256


@dataclass
class Session:
    person: str
    csrf: str
    expires: float


class Sessions:
    def __init__(
        self, *, on_new_link: Callable[[str], None], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._on_new_link = on_new_link
        self._clock = clock
        self._link = ""
        self._sessions: dict[str, Session] = {}
        self.new_link()

    def new_link(self) -> str:
        """Mint the one-time sign-in token (the previous one stops working)."""
        self._link = secrets.token_urlsafe(32)
        self._on_new_link(self._link)
        return self._link

    def link_ok(self, token: str) -> bool:
        return bool(token) and hmac.compare_digest(token.encode(), self._link.encode())

    def sign_in(self, token: str, person: str) -> tuple[str, Session] | None:
        """Use the one-time token: a new session for ``person``, or None."""
        if not self.link_ok(token):
            return None
        self.new_link()
        return self.open(person)

    def open(self, person: str) -> tuple[str, Session]:
        """A new session for ``person`` (signed in by a link or a password)."""
        self._expire()
        cookie = secrets.token_urlsafe(32)
        session = Session(person, secrets.token_urlsafe(32), self._clock() + SESSION_S)
        self._sessions[cookie] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.pop(next(iter(self._sessions)))
        return cookie, session

    def get(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        for key, session in self._sessions.items():
            if hmac.compare_digest(key.encode(), cookie.encode()):
                return session if session.expires > self._clock() else None
        return None

    def sign_out(self, cookie: str | None) -> None:
        for key in list(self._sessions):
            if cookie and hmac.compare_digest(key.encode(), cookie.encode()):
                del self._sessions[key]

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[key]

    @staticmethod
    def csrf_ok(session: Session, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(session.csrf.encode(), (sent or "").encode())
