"""The officer console: a web inbox served by the authority's own daemon.

The private keys stay in the daemon, and so does the console: it runs in the daemon's
process, on loopback by default, and reads the decrypted local inbox; the relay never
sees content. Pages are server-rendered (aiohttp + Jinja2, autoescaped), with a strict
Content-Security-Policy and no external assets. Sign-in is by a one-time link the
daemon logs at start (and again each time one is used), with the person's name for the
audit trail; every form carries a CSRF token. See docs/OPERATIONS.md, "Officer console".
"""
