"""The officer console: a web inbox and composer served by the authority's own daemon.

The private keys stay in the daemon, and so does the console: it runs in the daemon's
process, on loopback by default (elsewhere only over its own TLS and when explicitly
allowed), and reads the decrypted local inbox; the relay never sees content. Pages are
server-rendered (aiohttp + Jinja2, autoescaped), in English or French (one gettext
catalogue, Babel), with a strict Content-Security-Policy and no external assets.
Sign-in is by a per-person password or a one-time link the daemon logs; every action is
recorded in the audit trail with the person's name; every form carries a CSRF token.
See docs/OPERATIONS.md, "Officer console", and docs/ARCHITECTURE.md for the modules.
"""
