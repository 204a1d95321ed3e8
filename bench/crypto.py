"""Envelope crypto benchmark: ``keys.envelope.seal`` / ``open_envelope`` vs raw libsodium.

Measures, in one process and in interleaved rounds (so that a noisy machine slows
both sides alike):

* the rate of ``seal`` and ``open_envelope`` for a 1 KiB ``free_text`` message to one
  recipient, against a real root-signed directory (sender, recipient, relay);
* the cost of the libsodium primitives an envelope is built from, called directly
  through ``nacl.bindings`` with the same sizes as that envelope: Ed25519 sign and
  verify of the JWS signing input, ``crypto_box_seal`` / ``crypto_box_seal_open`` of
  the 32-byte content key, and XChaCha20-Poly1305 encrypt / decrypt of the plaintext
  with the base64url header as associated data.

The figure of merit is ``(seal + open) / (raw_seal + raw_open)``: the price of
everything the library does around the cryptography (JSON, pydantic validation,
base64url, directory look-ups). The target is at most 2.0. Each figure is the median
over the rounds. The exit status is 0 whether the target is met or not.

Run: ``.venv/bin/python bench/crypto.py [--rounds N] [--iterations N] [--json]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import nacl.bindings
from pydantic import JsonValue

from keys.directory import Directory, sign_directory
from keys.envelope import KEY_BYTES, NONCE_BYTES, open_envelope, seal
from keys.identity import Identity
from keys.jws import SIGNATURE_BYTES, parse_compact
from keys.models import DirectoryEntry, Role

TARGET_RATIO = 2.0
PAYLOAD_CHARS = 1024
AEAD_TAG_BYTES = 16
SENDER = "it-tpc"
RECIPIENT = "fr-oclcc"

# (name, label) of every measured operation, in table order.
ENVELOPE_OPS: tuple[tuple[str, str], ...] = (
    ("seal", "seal (keys.envelope.seal)"),
    ("open", "open (keys.envelope.open_envelope)"),
)
RAW_OPS: tuple[tuple[str, str], ...] = (
    ("raw_sign", "Ed25519 sign (crypto_sign)"),
    ("raw_box_seal", "crypto_box_seal (32-byte key)"),
    ("raw_aead_encrypt", "XChaCha20-Poly1305 encrypt"),
    ("raw_verify", "Ed25519 verify (crypto_sign_open)"),
    ("raw_box_seal_open", "crypto_box_seal_open"),
    ("raw_aead_decrypt", "XChaCha20-Poly1305 decrypt"),
)
RAW_SEAL_PARTS = ("raw_sign", "raw_box_seal", "raw_aead_encrypt")
RAW_OPEN_PARTS = ("raw_verify", "raw_box_seal_open", "raw_aead_decrypt")

Loop = Callable[[int], None]
"""Runs one operation ``n`` times; the thing that is timed."""


@dataclass(frozen=True, slots=True)
class Fixture:
    """A small real network and one sample envelope to take sizes from."""

    sender: Identity
    recipient: Identity
    directory: Directory
    now: int
    content: dict[str, JsonValue]
    token: str
    signing_input: bytes
    associated_data: bytes
    plaintext_len: int


@dataclass(frozen=True, slots=True)
class Stat:
    """Per-operation timings (µs/op) over all rounds."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread_pct(self) -> float:
        """(max - min) / median, in percent: how noisy the rounds were."""
        return 100.0 * (max(self.samples) - min(self.samples)) / self.median


def _entry(ident: Identity, role: Role, name: str, country: str) -> DirectoryEntry:
    pub = ident.public_keys()
    return DirectoryEntry(
        id=ident.id,
        name=name,
        country=country,
        role=role,
        signing_keys=pub.signing_keys,
        encryption_keys=pub.encryption_keys,
    )


def build_fixture() -> Fixture:
    """Generate root, relay, sender and recipient; sign a directory; seal one sample."""
    now = time.time_ns() // 1_000_000
    created = now - 1000
    root = Identity.generate("root", kind="root", now=created)
    relay = Identity.generate("relay-eu", kind="relay", now=created)
    sender = Identity.generate(SENDER, now=created)
    recipient = Identity.generate(RECIPIENT, now=created)
    directory = sign_directory(
        root,
        network="bench-net",
        authorities=[
            _entry(relay, "relay", "Relay", "EU"),
            _entry(sender, "national_body", "Carabinieri TPC", "IT"),
            _entry(recipient, "national_body", "OCBC", "FR"),
        ],
        previous=None,
        now=created,
    )
    text = ("Stolen: 15th-century gilt bronze reliquary, 23 cm. " * 21)[:PAYLOAD_CHARS]
    content: dict[str, JsonValue] = {"kind": "free_text", "text": text}
    token = seal(sender, directory, to=[RECIPIENT], content=content, now=now).token
    opened = open_envelope(token, directory, recipient, now=now)
    if opened.content != content:
        raise SystemExit("sanity check failed: the sample envelope does not round-trip")
    jws = parse_compact(token, what="envelope")
    return Fixture(
        sender=sender,
        recipient=recipient,
        directory=directory,
        now=now,
        content=content,
        token=token,
        signing_input=jws.signing_input,
        associated_data=jws.protected_b64.encode("ascii"),
        plaintext_len=len(jws.payload) - NONCE_BYTES - AEAD_TAG_BYTES,
    )


def build_loops(fx: Fixture, pool_size: int = 16) -> dict[str, Loop]:
    """One timed loop per operation. Inputs are prepared here, outside the timing."""
    sender, recipient, directory, now = fx.sender, fx.recipient, fx.directory, fx.now
    content, to = fx.content, [RECIPIENT]
    # Distinct envelopes to open, so no single token is privileged.
    tokens = [
        seal(sender, directory, to=to, content=content, now=now).token for _ in range(pool_size)
    ]

    sign_sk = sender.signing_key(now).secret
    sign_pk = sender.signing_key(now).public
    enc = recipient.encryption_keys[-1]
    box_pk, box_sk = enc.public, enc.secret
    msg = fx.signing_input
    signed = nacl.bindings.crypto_sign(msg, sign_sk)
    assert len(signed) == SIGNATURE_BYTES + len(msg)
    content_key = nacl.bindings.randombytes(KEY_BYTES)
    wrapped = nacl.bindings.crypto_box_seal(content_key, box_pk)
    ad = fx.associated_data
    plaintext = nacl.bindings.randombytes(fx.plaintext_len)
    nonce = nacl.bindings.randombytes(NONCE_BYTES)
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, ad, nonce, content_key
    )

    def seal_loop(n: int) -> None:
        for _ in range(n):
            seal(sender, directory, to=to, content=content, now=now)

    def open_loop(n: int) -> None:
        batch = (tokens * (n // pool_size + 1))[:n]
        for token in batch:
            open_envelope(token, directory, recipient, now=now)

    def sign_loop(n: int) -> None:
        for _ in range(n):
            nacl.bindings.crypto_sign(msg, sign_sk)

    def box_seal_loop(n: int) -> None:
        for _ in range(n):
            nacl.bindings.crypto_box_seal(content_key, box_pk)

    def aead_encrypt_loop(n: int) -> None:
        for _ in range(n):
            nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
                plaintext, ad, nonce, content_key
            )

    def verify_loop(n: int) -> None:
        for _ in range(n):
            nacl.bindings.crypto_sign_open(signed, sign_pk)

    def box_seal_open_loop(n: int) -> None:
        for _ in range(n):
            nacl.bindings.crypto_box_seal_open(wrapped, box_pk, box_sk)

    def aead_decrypt_loop(n: int) -> None:
        for _ in range(n):
            nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                ciphertext, ad, nonce, content_key
            )

    return {
        "seal": seal_loop,
        "open": open_loop,
        "raw_sign": sign_loop,
        "raw_box_seal": box_seal_loop,
        "raw_aead_encrypt": aead_encrypt_loop,
        "raw_verify": verify_loop,
        "raw_box_seal_open": box_seal_open_loop,
        "raw_aead_decrypt": aead_decrypt_loop,
    }


def time_loop(loop: Loop, iterations: int) -> float:
    """Run ``loop`` once with the garbage collector off; return µs per operation."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        loop(iterations)
        elapsed = time.perf_counter_ns() - start
    finally:
        if was_enabled:
            gc.enable()
    return elapsed / iterations / 1000.0


def run(loops: dict[str, Loop], rounds: int, iterations: int, progress: bool) -> dict[str, Stat]:
    """Interleave every operation in each round, rotating the order between rounds."""
    names = list(loops)
    for name in names:  # warm-up: caches, allocator, lazy imports
        time_loop(loops[name], max(1, iterations // 10))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(time_loop(loops[name], iterations))
        if progress:
            print(f"  round {r + 1}/{rounds} done", file=sys.stderr)
    return {name: Stat(tuple(values)) for name, values in samples.items()}


def summarise(
    stats: dict[str, Stat], fx: Fixture, rounds: int, iterations: int
) -> dict[str, float | int | bool]:
    med = {name: s.median for name, s in stats.items()}
    raw_seal = sum(med[p] for p in RAW_SEAL_PARTS)
    raw_open = sum(med[p] for p in RAW_OPEN_PARTS)
    raw_total = raw_seal + raw_open
    ratio = (med["seal"] + med["open"]) / raw_total
    # The same ratio computed within each round: how far the noise moves the verdict.
    per_round = [
        (stats["seal"].samples[r] + stats["open"].samples[r])
        / sum(stats[p].samples[r] for p in RAW_SEAL_PARTS + RAW_OPEN_PARTS)
        for r in range(rounds)
    ]
    result: dict[str, float | int | bool] = {
        "seal_us": med["seal"],
        "open_us": med["open"],
        "seal_per_s": 1e6 / med["seal"],
        "open_per_s": 1e6 / med["open"],
    }
    for name, _label in RAW_OPS:
        result[f"{name}_us"] = med[name]
    result.update(
        {
            "raw_seal_us": raw_seal,
            "raw_open_us": raw_open,
            "raw_total_us": raw_total,
            "ratio": ratio,
            "target_ratio": TARGET_RATIO,
            "pass": ratio <= TARGET_RATIO,
            "ratio_round_min": min(per_round),
            "ratio_round_max": max(per_round),
            "rounds": rounds,
            "iterations": iterations,
            "envelope_bytes": len(fx.token),
            "signing_input_bytes": len(fx.signing_input),
            "plaintext_bytes": fx.plaintext_len,
            "associated_data_bytes": len(fx.associated_data),
        }
    )
    return result


def print_table(stats: dict[str, Stat], result: dict[str, float | int | bool]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(
        title=(
            f"Envelope crypto, 1 recipient, {PAYLOAD_CHARS}-char free_text "
            f"(median of {result['rounds']} rounds x {result['iterations']} ops)"
        ),
        title_justify="left",
        caption="spread: half the range of the per-round figures, relative to the median",
        caption_justify="left",
    )
    table.add_column("operation")
    table.add_column("µs/op", justify="right")
    table.add_column("ops/s", justify="right")
    table.add_column("spread", justify="right", style="dim")

    def row(label: str, us: float, spread: float | None = None, style: str = "") -> None:
        table.add_row(
            label,
            f"{us:,.1f}",
            f"{1e6 / us:,.0f}",
            "" if spread is None else f"±{spread / 2:.0f}%",
            style=style,
        )

    for name, label in ENVELOPE_OPS:
        row(label, stats[name].median, stats[name].spread_pct, style="bold")
    table.add_section()
    for name, label in RAW_OPS:
        row(label, stats[name].median, stats[name].spread_pct)
    table.add_section()
    row("raw_seal = sign + box_seal + aead_encrypt", float(result["raw_seal_us"]), style="bold")
    row(
        "raw_open = verify + box_seal_open + aead_decrypt",
        float(result["raw_open_us"]),
        style="bold",
    )
    row("raw_total = raw_seal + raw_open", float(result["raw_total_us"]), style="bold")
    console.print(table)
    console.print(
        f"sizes: envelope {result['envelope_bytes']} B, signing input "
        f"{result['signing_input_bytes']} B, plaintext {result['plaintext_bytes']} B, "
        f"associated data {result['associated_data_bytes']} B",
        style="dim",
    )
    verdict = "[bold green]PASS[/]" if result["pass"] else "[bold red]FAIL[/]"
    console.print(
        f"ratio (seal + open) / raw_total = ({result['seal_us']:.1f} + {result['open_us']:.1f})"
        f" / {result['raw_total_us']:.1f} = [bold]{result['ratio']:.2f}[/]"
        f"  (target <= {TARGET_RATIO:.1f}): {verdict}"
    )
    console.print(
        f"per-round ratio: {result['ratio_round_min']:.2f} .. {result['ratio_round_max']:.2f}",
        style="dim",
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/crypto.py",
        description=(
            "Measure keys.envelope.seal and keys.envelope.open_envelope (1 KiB free_text "
            "to one recipient, real signed directory) against the raw libsodium primitives "
            "they are built from (Ed25519 sign/verify, crypto_box_seal/_open of the content "
            "key, XChaCha20-Poly1305 encrypt/decrypt), called through nacl.bindings with the "
            "same sizes. Both sides run interleaved in the same process; each figure is the "
            f"median over the rounds. Target: (seal + open) / raw_total <= {TARGET_RATIO}. "
            "Exits 0 whether or not the target is met."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--rounds", type=_positive, default=7, help="rounds; every operation runs once per round"
    )
    parser.add_argument(
        "--iterations", type=_positive, default=2000, help="operations timed per round"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object with every figure (µs/op, ops/s, ratio, pass) instead of a table",
    )
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    fx = build_fixture()
    loops = build_loops(fx)
    stats = run(loops, args.rounds, args.iterations, progress=not args.json and sys.stderr.isatty())
    result = summarise(stats, fx, args.rounds, args.iterations)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(stats, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
