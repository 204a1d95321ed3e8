"""The ``notice`` command line, driven through ``clients.cli.main`` as a user runs it.

Commands that talk to the relay run ``main`` in a worker thread (it calls
``asyncio.run``) while the in-process relay and the recipients' daemons keep running on
the test's event loop. The relay runs on a fake clock fixed in 2027, so ``main`` is
given the same clock (its hidden ``clock`` argument, for tests only).

Real crypto everywhere: keystores (at the cheap ``test`` argon2id cost), sealed
envelopes, encrypted attachments, signed receipts verified offline.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clients.cli import main, parse_duration, parse_time
from clients.config import load_client_settings
from clients.daemon import Daemon
from clients.decisions import decide
from clients.kinds import HANDLING_CODES
from clients.store import Inbox
from keys.encoding import b64e, now_ms, uuid7
from keys.envelope import open_envelope, seal
from keys.identity import Identity
from keys.keystore import save_keystore
from relay.settings import RelaySettings
from tests.netfixture import NOW, Network
from tests.relayfixture import FakeClock, RelayEnv
from tests.waiting import until

PASSPHRASE = "notice test passphrase"
HOUR_MS = 3_600_000
PHOTO = b"\xff\xd8\xff\xe0 not really a JPEG, but bytes all the same " * 500
COMMANDS = [
    "daemon",
    "send",
    "status",
    "inbox",
    "show",
    "ack",
    "reject",
    "sent",
    "watch",
    "log",
    "evidence",
    "audit",
]


# --- running the CLI ----------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def refused(self, code: int = 1) -> str:
        """Assert a one-line refusal with exit ``code``; return the message."""
        assert self.code == code, (self.code, self.out, self.err)
        assert self.out == ""
        assert self.err.startswith("notice: error: ")
        assert self.err.count("\n") == 1, self.err
        return self.err


@dataclass(frozen=True)
class Authority:
    aid: str
    config: Path
    data_dir: Path


class Notice:
    """Runs ``notice --config <authority's config> ...`` with the relay's clock."""

    def __init__(self, capsys: pytest.CaptureFixture[str], clock: Callable[[], int]) -> None:
        self._capsys = capsys
        self._clock = clock

    def argv(self, who: Authority | Path | None, args: tuple[str | Path, ...]) -> list[str]:
        config = who.config if isinstance(who, Authority) else who
        head = ["--config", str(config)] if config is not None else []
        return [*head, *(str(a) for a in args)]

    async def __call__(self, who: Authority | Path | None, *args: str | Path) -> Result:
        self._capsys.readouterr()
        code = await asyncio.to_thread(main, self.argv(who, args), clock=self._clock)
        out, err = self._capsys.readouterr()
        return Result(code, out, err)

    def sync(self, who: Authority | Path | None, *args: str | Path) -> Result:
        self._capsys.readouterr()
        code = main(self.argv(who, args), clock=self._clock)
        out, err = self._capsys.readouterr()
        return Result(code, out, err)


def write_authority(
    tmp: Path, net: Network, aid: str, relay_url: str, *, passphrase: str = PASSPHRASE
) -> Authority:
    """Keystore, passphrase file and config TOML for one authority (blocking I/O)."""
    home = tmp / aid
    home.mkdir(parents=True, exist_ok=True)
    save_keystore(home / "authority.ks", net[aid], PASSPHRASE, strength="test", overwrite=True)
    (home / "passphrase").write_text(passphrase + "\n")
    (home / "passphrase").chmod(0o600)
    data_dir = home / "data"
    config = home / "notice.toml"
    settings = {
        "relay_url": relay_url,
        "keystore": str(home / "authority.ks"),
        "passphrase_file": str(home / "passphrase"),
        "root_key": b64e(net.root.signing_key().public),
        "data_dir": str(data_dir),
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.2,
    }
    config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
    return Authority(aid, config, data_dir)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CPAR_"):
            monkeypatch.delenv(name)


@pytest.fixture
def it(tmp_path: Path, relay: RelayEnv) -> Authority:
    return write_authority(tmp_path, relay.net, "it-tpc", relay.base_url)


@pytest.fixture
def fr(tmp_path: Path, relay: RelayEnv) -> Authority:
    return write_authority(tmp_path, relay.net, "fr-oclcc", relay.base_url)


@pytest.fixture
def offline_it(tmp_path: Path, net: Network) -> Authority:
    """it-tpc configured against a relay that is not running (for refusals before any I/O)."""
    return write_authority(tmp_path / "offline", net, "it-tpc", "http://127.0.0.1:9")


@pytest.fixture
def notice(capsys: pytest.CaptureFixture[str], relay: RelayEnv) -> Notice:
    return Notice(capsys, relay.clock)


@pytest.fixture
def notice_fixed(capsys: pytest.CaptureFixture[str]) -> Notice:
    """For tests without a relay: the same fixed clock, no running loop."""
    return Notice(capsys, FakeClock())


@asynccontextmanager
async def running_daemon(relay: RelayEnv, who: Authority) -> AsyncIterator[Daemon]:
    """The recipient's daemon (clients.daemon.Daemon) on the test loop, from its config."""
    settings = await asyncio.to_thread(load_client_settings, who.config)
    daemon = Daemon(settings, relay.net[who.aid], clock=relay.clock)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        async with asyncio.timeout(10):
            await daemon.connected.wait()
        yield daemon
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def received(daemon: Daemon, msg_id: str) -> None:
    async def stored() -> bool:
        assert daemon.inbox is not None
        return await daemon.inbox.received.get(msg_id) is not None

    await until(stored)


async def relay_state(notice: Notice, who: Authority, msg_id: str, state: str) -> dict[str, Any]:
    """Poll ``notice status --json`` until the relay reports ``state``."""
    last: dict[str, Any] = {}

    async def reached() -> bool:
        nonlocal last
        r = await notice(who, "status", msg_id, "--json")
        assert r.code == 0, r.err
        last = r.json()
        return bool(last["state"] == state)

    await until(reached)
    return last


async def write_file(path: Path, data: bytes) -> Path:
    await asyncio.to_thread(path.write_bytes, data)
    return path


# --- help -------------------------------------------------------------------------------


def test_group_help_lists_every_command(notice_fixed: Notice) -> None:
    r = notice_fixed.sync(None, "--help")
    assert r.code == 0 and r.err == ""
    assert "Usage: notice" in r.out and "--config" in r.out and "CPAR_CONFIG" in r.out
    for command in COMMANDS:
        assert f"  {command} " in r.out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(notice_fixed: Notice, command: str) -> None:
    r = notice_fixed.sync(None, command, "--help")
    assert r.code == 0 and r.err == ""
    assert f"Usage: notice {command}" in r.out
    assert len(r.out.splitlines()) > 5


def test_bare_notice_shows_help_and_exits_2(notice_fixed: Notice) -> None:
    r = notice_fixed.sync(None)
    assert r.code == 2
    assert "Usage: notice" in r.err and "notice: error" not in r.err


def test_send_help_documents_kinds_durations_and_utc(notice_fixed: Notice) -> None:
    out = notice_fixed.sync(None, "send", "--help").out
    for flag in ("--ack-within", "--expires-in", "--handling", "--attach", "--file", "--kind"):
        assert flag in out
    assert "90s, 30m, 2h, 3d" in out
    assert "taken as UTC" in " ".join(out.split())


# --- durations and times ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("90s", 90_000),
        ("30m", 1_800_000),
        ("2h", 7_200_000),
        ("3d", 259_200_000),
        ("1d12h", 129_600_000),
        (" 2H ", 7_200_000),
    ],
)
def test_parse_duration(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "5", "5x", "0s", "-1h", "2h30", "h", "1.5h", "2 hours"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_parse_time_naive_is_utc_and_offsets_count() -> None:
    assert parse_time("2027-01-15T08:00:00") == NOW
    assert parse_time("2027-01-15T08:00:00Z") == NOW
    assert parse_time("2027-01-15T09:00:00+01:00") == NOW
    assert parse_time("2027-01-15 08:00") == NOW
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("tomorrow evening")


# --- refusals before any network ----------------------------------------------------------


def test_bad_duration_is_a_usage_error(notice_fixed: Notice, offline_it: Authority) -> None:
    r = notice_fixed.sync(
        offline_it,
        "send",
        "--to",
        "fr-oclcc",
        "--kind",
        "free_text",
        "--text",
        "hi",
        "--ack-within",
        "5 parsecs",
    )
    err = r.refused(2)
    assert "--ack-within" in err and "not a duration" in err


def test_bad_iso_time_is_a_usage_error(notice_fixed: Notice, offline_it: Authority) -> None:
    r = notice_fixed.sync(
        offline_it,
        "send",
        "--to",
        "fr-oclcc",
        "--kind",
        "identification_notice",
        "--object",
        "Bronze mirror",
        "--where",
        "Lot 112",
        "--sale-deadline",
        "tonight",
    )
    err = r.refused(2)
    assert "--sale-deadline" in err and "ISO 8601" in err


def test_ack_within_after_expiry_is_refused(notice_fixed: Notice, offline_it: Authority) -> None:
    r = notice_fixed.sync(
        offline_it,
        "send",
        "--to",
        "fr-oclcc",
        "--kind",
        "free_text",
        "--text",
        "hi",
        "--ack-within",
        "3d",
        "--expires-in",
        "1d",
    )
    assert "expires" in r.refused(2)


def test_invalid_notice_file_names_the_field(
    notice_fixed: Notice, offline_it: Authority, tmp_path: Path
) -> None:
    bad = tmp_path / "notice.json"
    bad.write_text(json.dumps({"kind": "identification_notice", "object_description": "Mirror"}))
    r = notice_fixed.sync(offline_it, "send", "--to", "fr-oclcc", "--file", bad)
    err = r.refused()
    assert "identified_where" in err and "identification_notice" in err
    assert "Mirror" not in err  # refusals quote no content

    bad.write_text(json.dumps({"kind": "telegram", "text": "x"}))
    assert (
        "unknown notice kind"
        in notice_fixed.sync(offline_it, "send", "--to", "fr-oclcc", "--file", bad).refused()
    )

    bad.write_text('{"kind": "free_text", ')
    assert (
        "not valid JSON"
        in notice_fixed.sync(offline_it, "send", "--to", "fr-oclcc", "--file", bad).refused()
    )

    bad.write_text("[1, 2]")
    assert (
        "JSON object"
        in notice_fixed.sync(offline_it, "send", "--to", "fr-oclcc", "--file", bad).refused()
    )


def test_invalid_flag_value_names_field_and_flag(
    notice_fixed: Notice, offline_it: Authority
) -> None:
    r = notice_fixed.sync(
        offline_it,
        "send",
        "--to",
        "fr-oclcc",
        "--kind",
        "identification_notice",
        "--object",
        "Mirror",
        "--where",
        "Lot 112",
        "--origin",
        "ITA",
    )
    err = r.refused()
    assert "country_of_origin" in err and "--origin" in err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--kind", "free_text"], "needs --text"),
        (["--kind", "reply", "--text", "ok"], "needs --in-reply-to"),
        (
            [
                "--kind",
                "mla_request",
                "--reference-no",
                "R1",
                "--legal-basis",
                "Treaty",
                "--facts",
                "F",
            ],
            "needs --measure",
        ),
        (["--kind", "free_text", "--text", "x", "--object", "Mirror"], "does not apply"),
        (["--text", "x"], "needs --kind"),
        ([], "--file"),
        (["--kind", "stolen_property_update"], "use --file"),
        (
            [
                "--kind",
                "consultation",
                "--regarding",
                "R1",
                "--intended-decision",
                "refuse",
                "--grounds",
                "G",
                "--reply-by",
                "next week",
            ],
            "ISO 8601",
        ),
        (["--kind", "reply", "--in-reply-to", "nope", "--text", "t"], "not a message id"),
        (
            [
                "--kind",
                "identification_notice",
                "--object",
                "M",
                "--where",
                "W",
                "--reference",
                "no-colon",
            ],
            "SYSTEM:REF",
        ),
        (["--kind", "free_text", "--text", "x", "--handling", "bad code!"], "handling code"),
        (["--to", "fr-oclcc", "--kind", "free_text", "--text", "x"], "given twice"),
        (["--fallback", "fr-oclcc", "--kind", "free_text", "--text", "x"], "already a recipient"),
    ],
)
def test_notice_flag_usage_errors(
    notice_fixed: Notice, offline_it: Authority, args: list[str], needle: str
) -> None:
    r = notice_fixed.sync(offline_it, "send", "--to", "fr-oclcc", *args)
    assert needle in r.refused(2)


def test_file_and_flags_do_not_mix(
    notice_fixed: Notice, offline_it: Authority, tmp_path: Path
) -> None:
    f = tmp_path / "n.json"
    f.write_text(json.dumps({"kind": "free_text", "text": "hello"}))
    r = notice_fixed.sync(offline_it, "send", "--to", "fr-oclcc", "--file", f, "--text", "x")
    assert "cannot be combined" in r.refused(2)


def test_missing_config_file(notice_fixed: Notice, tmp_path: Path) -> None:
    r = notice_fixed.sync(tmp_path / "nope.toml", "inbox")
    assert "does not exist" in r.refused(2)  # a configuration error: 2, as relay


def test_no_configuration_at_all_says_how_to_give_one(
    notice_fixed: Notice, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CPAR_CONFIG", raising=False)
    r = notice_fixed.sync(None, "inbox")
    assert (
        r.refused(2) == "notice: error: no configuration: pass --config FILE or set CPAR_CONFIG\n"
    )


def test_global_options_work_before_and_after_the_command(
    notice_fixed: Notice, offline_it: Authority, tmp_path: Path
) -> None:
    config = str(offline_it.config)
    for argv in (["--config", config, "inbox", "--json"], ["inbox", "--json", "--config", config]):
        r = notice_fixed.sync(None, *argv)
        assert r.code == 0 and r.json() == [], (argv, r.err)
    # A config without passphrase_file: the error names --passphrase-file, which works
    # on every command that opens the keystore, before or after it.
    bare = tmp_path / "bare.toml"
    bare.write_text(
        "".join(
            line + "\n"
            for line in offline_it.config.read_text().splitlines()
            if not line.startswith("passphrase_file")
        )
    )
    send = ("send", "--to", "fr-oclcc", "--kind", "free_text", "--text", "x")
    assert "--passphrase-file" in notice_fixed.sync(bare, *send).refused()
    pass_file = str(offline_it.config.parent / "passphrase")
    for argv in (
        ["--config", str(bare), "--passphrase-file", pass_file, *send],
        [*send, "--config", str(bare), "--passphrase-file", pass_file],
        [
            "--config",
            str(bare),
            "ack",
            "01a3185c-5000-7000-8000-000000000000",
            "--person",
            "X",
            "--passphrase-file",
            pass_file,
        ],
    ):
        # Past the keystore: what stops them now is the relay (or the unknown message).
        err = notice_fixed.sync(None, *argv).refused()
        assert "passphrase" not in err and ("nothing was sent" in err or "no message" in err)


def test_config_from_environment(
    notice_fixed: Notice, offline_it: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CPAR_CONFIG", str(offline_it.config))
    r = notice_fixed.sync(None, "inbox", "--json")
    assert r.code == 0 and r.json() == []


def test_invalid_config_setting(notice_fixed: Notice, tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('relay_url = "ftp://x"\nroot_key = "abc"\n')
    assert "relay_url" in notice_fixed.sync(cfg, "sent").refused(2)


def test_wrong_passphrase(notice_fixed: Notice, tmp_path: Path, net: Network) -> None:
    guess = "Tr0ub4dor&3-guess"
    who = write_authority(tmp_path, net, "it-tpc", "http://127.0.0.1:9", passphrase=guess)
    r = notice_fixed.sync(who, "send", "--to", "fr-oclcc", "--kind", "free_text", "--text", "x")
    err = r.refused()
    assert "passphrase does not open" in err and guess not in err
    assert "passphrase does not open" in notice_fixed.sync(who, "daemon").refused()


def test_unknown_message_for_show_ack_reject_and_offline_status(
    notice_fixed: Notice, offline_it: Authority
) -> None:
    msg_id = uuid7(ms=NOW)
    assert "no message" in notice_fixed.sync(offline_it, "show", msg_id).refused()
    assert "no message" in notice_fixed.sync(offline_it, "ack", msg_id, "--person", "X").refused()
    assert (
        "no message" in notice_fixed.sync(offline_it, "reject", msg_id, "--reason", "X").refused()
    )
    assert "no message" in notice_fixed.sync(offline_it, "status", msg_id, "--offline").refused()
    assert "not a message id" in notice_fixed.sync(offline_it, "show", "12345").refused(2)


def test_empty_listings_without_an_inbox(notice_fixed: Notice, offline_it: Authority) -> None:
    assert notice_fixed.sync(offline_it, "inbox", "--json").json() == []
    assert notice_fixed.sync(offline_it, "sent", "--json").json() == []
    r = notice_fixed.sync(offline_it, "inbox", "--all")
    assert r.code == 0 and "Inbox (0)" in r.out
    assert not offline_it.data_dir.exists()  # listing never creates an inbox


def test_unreachable_relay_is_one_line(notice_fixed: Notice, offline_it: Authority) -> None:
    r = notice_fixed.sync(
        offline_it, "send", "--to", "fr-oclcc", "--kind", "free_text", "--text", "x"
    )
    assert "cannot reach the relay" in r.refused()


# --- against the relay --------------------------------------------------------------------


async def test_send_flags_with_attachment_deliver_show_ack_and_verified_status(
    relay: RelayEnv, notice: Notice, it: Authority, fr: Authority, tmp_path: Path
) -> None:
    photo = await write_file(tmp_path / "mirror.jpg", PHOTO)
    async with running_daemon(relay, fr) as daemon:
        r = await notice(
            it,
            "send",
            "--to",
            "fr-oclcc",
            "--priority",
            "urgent",
            "--ack-within",
            "2h",
            "--handling",
            "no-onward-sharing",
            "--attach",
            photo,
            "--kind",
            "identification_notice",
            "--object",
            "Etruscan bronze mirror",
            "--object-type",
            "mirror",
            "--where",
            "Lot 112, Maison Exemple online sale",
            "--sale-deadline",
            "2027-01-15T18:00:00+01:00",
            "--origin",
            "it",
            "--reference",
            "INTERPOL:2024-1234",
            "--json",
        )
        assert r.code == 0, r.err
        sent = r.json()
        msg_id = sent["id"]
        assert sent["accepted_by"] == "relay-eu" and sent["receipt_verified"] is True
        assert sent["priority"] == "urgent" and sent["to"] == ["fr-oclcc"]
        assert sent["ack_by"] == "2027-01-15T10:00:00.000Z"
        assert [a["name"] for a in sent["attachments"]] == ["mirror.jpg"]
        assert sent["duplicate"] is False

        # the recipient's daemon stores it and downloads the photo
        await received(daemon, msg_id)
        assert daemon.inbox is not None
        photo_path = daemon.inbox.attachment_path(msg_id, "mirror.jpg")

        async def downloaded() -> bool:
            return await asyncio.to_thread(photo_path.is_file)

        await until(downloaded)
        # Decrypted content is private: the photo 0600, its folders 0700.
        modes = await asyncio.to_thread(
            lambda: [
                stat.S_IMODE(p.stat().st_mode)
                for p in (photo_path, photo_path.parent, photo_path.parent.parent)
            ]
        )
        assert modes == [0o600, 0o700, 0o700]

        r = await notice(fr, "inbox")
        assert r.code == 0, r.err
        assert msg_id in r.out and "it-tpc" in r.out and "urgent" in r.out
        assert "Identification: Etruscan bronze mirror" in r.out
        assert "2027-01-15 17:00" in r.out and "[H]" in r.out

        listed = (await notice(fr, "inbox", "--json")).json()
        assert [m["id"] for m in listed] == [msg_id]
        assert listed[0]["state"] == "new" and listed[0]["handling"] == ["no-onward-sharing"]
        assert listed[0]["deadline"] == "2027-01-15T17:00:00.000Z"

        r = await notice(fr, "show", msg_id)
        assert r.code == 0, r.err
        assert "HANDLING RESTRICTIONS" in r.out
        assert "no-onward-sharing" in r.out and "Do not disseminate" in r.out
        assert r.out.index("HANDLING RESTRICTIONS") < r.out.index("Etruscan bronze mirror")
        assert "INTERPOL: 2024-1234" in r.out and "Lot 112" in r.out
        assert "mirror.jpg" in r.out and str(photo_path) in r.out.replace("\n", "")

        shown = (await notice(fr, "show", msg_id, "--json")).json()
        assert shown["handling"] == [
            {
                "code": "no-onward-sharing",
                "known": True,
                "meaning": f"no-onward-sharing: {HANDLING_CODES['no-onward-sharing']}",
            }
        ]
        assert shown["content"]["photos"] == ["mirror.jpg"]
        assert shown["content"]["country_of_origin"] == "IT"
        assert shown["attachments"][0]["path"] == str(photo_path)
        assert await asyncio.to_thread(Path(shown["attachments"][0]["path"]).read_bytes) == PHOTO

        # the sender sees accepted + delivered, every receipt verified
        st = await relay_state(notice, it, msg_id, "delivered")
        assert [x["status"] for x in st["receipts"]] == ["accepted", "delivered"]
        assert all(x["verified"] for x in st["receipts"]) and st["all_verified"]
        r = await notice(it, "status", msg_id)
        assert r.code == 0, r.err
        for needle in ("accepted", "delivered", "relay-eu", "fr-oclcc", "verified", "State:"):
            assert needle in r.out

        # acknowledge, then again (re-sends the same receipt), then with someone else
        r = await notice(fr, "ack", msg_id, "--person", "Cdt. Martin")
        assert r.code == 0, r.err
        assert "Acknowledged" in r.out and "Cdt. Martin" in r.out
        again = await notice(fr, "ack", msg_id, "--person", "Cdt. Martin", "--json")
        assert again.code == 0, again.err
        assert again.json()["repeat"] is True and again.json()["duplicate_at_relay"] is True
        other = await notice(fr, "ack", msg_id, "--person", "Someone Else")
        assert "already acknowledged by Cdt. Martin" in other.refused()
        assert (
            "already acknowledged"
            in (await notice(fr, "reject", msg_id, "--reason", "no")).refused()
        )

        st = await relay_state(notice, it, msg_id, "acknowledged")
        assert [x["status"] for x in st["receipts"]] == ["accepted", "delivered", "acknowledged"]
        assert st["receipts"][2]["person"] == "Cdt. Martin"
        assert st["receipts"][2]["by"] == "fr-oclcc" and st["all_verified"]
        r = await notice(it, "status", msg_id)
        assert "acknowledged" in r.out and "person: Cdt. Martin" in r.out

        # recorded locally, so it works offline too
        off = (await notice(it, "status", msg_id, "--offline", "--json")).json()
        assert off["source"] == "local" and off["state"] == "acknowledged"
        assert {x["status"] for x in off["receipts"]} == {"accepted", "delivered", "acknowledged"}
        sent_list = (await notice(it, "sent", "--json")).json()
        assert sent_list[0]["id"] == msg_id and sent_list[0]["last_status"] == "acknowledged"
        assert "Identification: Etruscan bronze mirror" in sent_list[0]["summary"]
        r = await notice(it, "sent")
        assert msg_id in r.out and "acknowledged" in r.out

        # acknowledged messages leave the to-do list but stay in --all
        assert (await notice(fr, "inbox", "--json")).json() == []
        everything = (await notice(fr, "inbox", "--all", "--json")).json()
        assert everything[0]["state"] == "acknowledged"


async def test_send_from_file_and_reject(
    relay: RelayEnv, notice: Notice, it: Authority, fr: Authority, tmp_path: Path
) -> None:
    request = {
        "kind": "mla_request",
        "reference": "PROC-2027-017",
        "legal_basis": "European Convention on Mutual Assistance in Criminal Matters",
        "facts": "Suspected export of an excavated bronze mirror.",
        "requested_measures": ["Seize lot 112", "Identify the consignor"],
        "deadline": NOW + 24 * HOUR_MS,
    }
    file = await write_file(tmp_path / "request.json", json.dumps(request).encode())
    pdf = await write_file(tmp_path / "decree.pdf", b"%PDF-1.7 seizure decree\n" * 100)
    async with running_daemon(relay, fr) as daemon:
        r = await notice(
            it,
            "send",
            "--to",
            "fr-oclcc",
            "--file",
            file,
            "--attach",
            pdf,
            "--priority",
            "high",
            "--expires-in",
            "3d",
        )
        assert r.code == 0, r.err
        assert "accepted by relay-eu at 2027-01-15 08:00:00 UTC" in r.out
        assert "receipt verified" in r.out and "decree.pdf" in r.out
        msg_id = r.out.split()[1]
        await received(daemon, msg_id)

        shown = (await notice(fr, "show", msg_id, "--json")).json()
        assert shown["content"]["requested_measures"] == request["requested_measures"]
        assert shown["priority"] == "high" and shown["handling"] == []
        r = await notice(fr, "show", msg_id)
        assert "Handling: no restrictions" in r.out and "Measure 2" in r.out

        r = await notice(fr, "reject", msg_id, "--reason", "Not competent: forward to fr-ca")
        assert r.code == 0, r.err
        assert "Rejected" in r.out
        again = await notice(fr, "reject", msg_id, "--reason", "Not competent: forward to fr-ca")
        assert again.code == 0 and "again" in again.out
        assert (
            "already rejected"
            in (await notice(fr, "reject", msg_id, "--reason", "another reason")).refused()
        )
        assert "already rejected" in (await notice(fr, "ack", msg_id, "--person", "X")).refused()

        st = await relay_state(notice, it, msg_id, "rejected")
        rejected = [x for x in st["receipts"] if x["status"] == "rejected"]
        assert rejected[0]["reason"] == "Not competent: forward to fr-ca"
        assert st["all_verified"]
        r = await notice(it, "status", msg_id)
        assert "reason: Not competent" in r.out


async def test_free_text_from_stdin_file_dash_and_terminal_escapes_are_neutralised(
    relay: RelayEnv,
    notice: Notice,
    it: Authority,
    fr: Authority,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    evil = "Lot 7 \x1b[2J\x1b[31mFAKE SYSTEM MESSAGE\x1b[0m [bold]not markup[/bold]"
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"kind": "free_text", "text": evil})))
    async with running_daemon(relay, fr) as daemon:
        r = await notice(it, "send", "--to", "fr-oclcc", "--file", "-", "--json")
        assert r.code == 0, r.err
        msg_id = r.json()["id"]
        await received(daemon, msg_id)
        shown = await notice(fr, "show", msg_id)
        assert shown.code == 0, shown.err
        assert "\x1b" not in shown.out
        assert "[bold]not markup[/bold]" in shown.out
        assert "\x1b" not in (await notice(fr, "inbox")).out
        # JSON keeps the text exactly (escaped)
        assert (await notice(fr, "show", msg_id, "--json")).json()["content"]["text"] == evil


async def test_unknown_recipient_is_refused_in_one_line(
    relay: RelayEnv, notice: Notice, it: Authority
) -> None:
    r = await notice(it, "send", "--to", "zz-nobody", "--kind", "free_text", "--text", "x")
    err = r.refused()
    assert "zz-nobody" in err and "not in the directory" in err
    r = await notice(it, "send", "--to", "relay-eu", "--kind", "free_text", "--text", "x")
    assert "relay" in r.refused()
    r = await notice(it, "send", "--to", "it-tpc", "--kind", "free_text", "--text", "x")
    assert "cannot send to itself" in r.refused(2)
    assert (await notice(it, "sent", "--json")).json() == []


async def test_relay_problem_is_one_line_with_its_code(
    relay: RelayEnv, notice: Notice, it: Authority, fr: Authority
) -> None:
    r = await notice(it, "send", "--to", "fr-oclcc", "--kind", "free_text", "--text", "x", "--json")
    msg_id = r.json()["id"]
    # fr-oclcc did not send it: the relay answers unknown_message (ids do not leak)
    err = (await notice(fr, "status", msg_id)).refused()
    assert "the relay refused" in err and "(unknown_message)" in err
    err = (await notice(it, "status", uuid7(ms=NOW))).refused()
    assert "(unknown_message)" in err
    # a client whose clock is an hour ahead: the relay refuses the request signature
    ahead = Notice(notice._capsys, lambda: relay.clock() + HOUR_MS)
    err = (await ahead(it, "status", msg_id)).refused()
    assert "the relay refused" in err and err.rstrip().endswith(")")


async def test_status_shows_an_invalid_receipt_and_exits_1(
    relay: RelayEnv, relay_settings: RelaySettings, notice: Notice, it: Authority
) -> None:
    r = await notice(it, "send", "--to", "fr-oclcc", "--kind", "free_text", "--text", "x", "--json")
    msg_id = r.json()["id"]

    def tamper() -> None:
        conn = sqlite3.connect(relay_settings.db_path)
        try:
            (token,) = conn.execute(
                "SELECT accepted_receipt FROM messages WHERE id = ?", (msg_id,)
            ).fetchone()
            head, body, sig = token.split(".")
            flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
            conn.execute(
                "UPDATE messages SET accepted_receipt = ? WHERE id = ?",
                (f"{head}.{body}.{flipped}", msg_id),
            )
            conn.commit()
        finally:
            conn.close()

    await asyncio.to_thread(tamper)
    r = await notice(it, "status", msg_id)
    assert r.code == 1
    assert "INVALID" in r.out
    assert r.err.startswith("notice: error: ") and r.err.count("\n") == 1
    assert "do not verify" in r.err
    r = await notice(it, "status", msg_id, "--json")
    assert r.code == 1
    st = r.json()
    assert st["all_verified"] is False and st["receipts"][0]["verified"] is False
    assert st["receipts"][0]["error"]


async def test_offline_status_flags_a_stored_receipt_for_another_envelope(
    relay: RelayEnv, notice: Notice, it: Authority
) -> None:
    r = await notice(it, "send", "--to", "fr-oclcc", "--kind", "free_text", "--text", "x", "--json")
    msg_id = r.json()["id"]
    off = await notice(it, "status", msg_id, "--offline", "--json")
    assert off.code == 0 and off.json()["receipts"][0]["verified"] is True

    def forge_hash() -> None:
        conn = sqlite3.connect(it.data_dir / "inbox.sqlite3")
        try:
            conn.execute("UPDATE sent SET envelope_hash = ? WHERE id = ?", ("0" * 64, msg_id))
            conn.commit()
        finally:
            conn.close()

    await asyncio.to_thread(forge_hash)
    off = await notice(it, "status", msg_id, "--offline")
    assert off.code == 1 and "INVALID" in off.out and "do not verify" in off.err


async def test_directory_rollback_is_refused(
    relay: RelayEnv, notice: Notice, it: Authority
) -> None:
    def pin_newer() -> None:
        it.data_dir.mkdir(parents=True, exist_ok=True)
        (it.data_dir / "directory-pin.json").write_text(json.dumps({"versions": {"9": "0" * 64}}))

    await asyncio.to_thread(pin_newer)
    r = await notice(it, "send", "--to", "fr-oclcc", "--kind", "free_text", "--text", "x")
    assert "older than version 9" in r.refused()


async def test_directory_pin_is_persisted_and_a_fork_refused(
    relay: RelayEnv, notice: Notice, it: Authority
) -> None:
    r = await notice(it, "send", "--to", "fr-oclcc", "--kind", "free_text", "--text", "x")
    assert r.code == 0, r.err
    pin_file = it.data_dir / "directory-pin.json"
    pinned = json.loads(await asyncio.to_thread(pin_file.read_text))
    assert pinned["versions"] == {"1": relay.net.directory.hash}

    def fork() -> None:
        pin_file.write_text(json.dumps({"versions": {"1": "f" * 64}}))

    await asyncio.to_thread(fork)
    r = await notice(it, "send", "--to", "fr-oclcc", "--kind", "free_text", "--text", "x")
    assert "fork" in r.refused()


async def test_ack_when_the_relay_is_unreachable_is_recorded_and_sent_by_the_daemon(
    relay: RelayEnv, notice: Notice, it: Authority, fr: Authority, tmp_path: Path
) -> None:
    async with running_daemon(relay, fr) as daemon:
        r = await notice(
            it, "send", "--to", "fr-oclcc", "--kind", "free_text", "--text", "x", "--json"
        )
        msg_id = r.json()["id"]
        await received(daemon, msg_id)
    offline_fr = await asyncio.to_thread(_point_to_nowhere, fr, tmp_path)
    r = await notice(offline_fr, "ack", msg_id, "--person", "Lt. Durand")
    assert r.code == 0, r.err
    assert "recorded" in r.out and "the daemon will send it" in " ".join(r.out.split())
    shown = (await notice(fr, "show", msg_id, "--json")).json()
    assert shown["state"] == "acknowledged" and shown["acknowledged_by"] == "Lt. Durand"
    # The inbox keeps showing it (even without --all) until the relay has the receipt.
    [row] = (await notice(fr, "inbox", "--json")).json()
    assert row["id"] == msg_id and row["receipt_upload"] == "pending"
    assert shown["receipt_upload"] == "pending"
    assert "receipt not sent yet" in (await notice(fr, "inbox")).out
    # No second command: the daemon sends the receipt once the relay answers.
    async with running_daemon(relay, fr):
        st = await relay_state(notice, it, msg_id, "acknowledged")
    assert st["receipts"][-1]["person"] == "Lt. Durand" and st["all_verified"]
    assert (await notice(fr, "inbox", "--json")).json() == []
    # Running the command again re-sends the same statement: the relay knows it.
    r = await notice(fr, "ack", msg_id, "--person", "Lt. Durand", "--json")
    assert r.code == 0, r.err
    assert r.json()["repeat"] is True and r.json()["duplicate_at_relay"] is True
    assert r.json()["receipt_sent"] is True


async def test_send_while_the_relay_is_unreachable_is_queued_and_submitted_by_the_daemon(
    relay: RelayEnv, notice: Notice, it: Authority, fr: Authority, tmp_path: Path
) -> None:
    # A first send pins the directory; then the relay "goes away".
    r = await notice(it, "send", "--to", "fr-oclcc", "--kind", "free_text", "--text", "1")
    assert r.code == 0, r.err
    offline_it = await asyncio.to_thread(_point_to_nowhere, it, tmp_path)
    args = ("send", "--to", "fr-oclcc", "--kind", "free_text", "--text", "queued one")
    err = (await notice(offline_it, *args, "--no-queue")).refused()
    assert "nothing was sent" in err and "--no-queue" in err
    r = await notice(offline_it, *args, "--json")
    assert r.code == 0, r.err
    queued = r.json()
    assert queued["state"] == "queued" and queued["receipt_verified"] is False
    msg_id = queued["id"]
    photo = await write_file(tmp_path / "lot-113.jpg", PHOTO)
    r = await notice(offline_it, *args, "--attach", photo)
    said = " ".join(r.out.split())
    assert r.code == 0 and said.startswith("QUEUED ") and "the daemon will submit it" in said
    second = r.out.split()[1]
    sent = {s["id"]: s for s in (await notice(it, "sent", "--json")).json()}
    assert sent[msg_id]["state"] == "queued" and sent[second]["state"] == "queued"
    assert "queued" in (await notice(it, "sent")).out
    # The relay (up again) does not know it yet: status shows the local records.
    st = (await notice(it, "status", msg_id, "--json")).json()
    assert st["state"] == "queued" and st["source"] == "local" and st["receipts"] == []
    async with running_daemon(relay, fr) as fr_daemon, running_daemon(relay, it):
        await received(fr_daemon, msg_id)
        await received(fr_daemon, second)
        st = await relay_state(notice, it, msg_id, "delivered")
        # The attachment queued with the second one, encrypted, was uploaded first.

        async def downloaded() -> bool:
            found = (await notice(fr, "show", second, "--json")).json()["attachments"]
            return [a["name"] for a in found] == ["lot-113.jpg"] and found[0]["path"] is not None

        await until(downloaded)
        path = (await notice(fr, "show", second, "--json")).json()["attachments"][0]["path"]
        assert await asyncio.to_thread(Path(path).read_bytes) == PHOTO
    spool = it.data_dir / "outbox-files"
    assert await asyncio.to_thread(lambda: list(spool.rglob("*"))) == []  # cleaned up
    assert [row["status"] for row in st["receipts"]] == ["accepted", "delivered"]
    assert st["all_verified"]
    sent = {s["id"]: s for s in (await notice(it, "sent", "--json")).json()}
    assert sent[msg_id]["state"] == "delivered"


def _point_to_nowhere(who: Authority, tmp: Path) -> Path:
    text = who.config.read_text()
    lines = [
        'relay_url = "http://127.0.0.1:9"' if line.startswith("relay_url") else line
        for line in text.splitlines()
    ]
    out = tmp / "nowhere.toml"
    out.write_text("\n".join(lines) + "\n")
    return out


# --- the daemon command -------------------------------------------------------------------


@pytest.fixture
def live_authority(tmp_path: Path) -> Iterator[Path]:
    """A keystore valid on the real clock and a config pointing at a closed port."""
    ident = Identity.generate("it-tpc", now=now_ms() - 1000)
    root = Identity.generate("root", kind="root", now=now_ms() - 1000)
    save_keystore(tmp_path / "a.ks", ident, PASSPHRASE, strength="test")
    (tmp_path / "pass").write_text(PASSPHRASE)
    cfg = tmp_path / "notice.toml"
    cfg.write_text(
        'relay_url = "http://127.0.0.1:9"\n'
        f'keystore = "{tmp_path / "a.ks"}"\n'
        f'passphrase_file = "{tmp_path / "pass"}"\n'
        f'root_key = "{b64e(root.signing_key().public)}"\n'
        f'data_dir = "{tmp_path / "data"}"\n'
        "reconnect_min_s = 0.05\nreconnect_max_s = 0.1\n"
    )
    yield cfg


@pytest.mark.slow
def test_daemon_command_stops_cleanly_on_sigterm(live_authority: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CPAR_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from clients.cli import main; sys.exit(main())",
            "--config",
            str(live_authority),
            "daemon",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stderr is not None
        seen = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            seen.append(line)
            if "relay connection failed" in line or not line:
                break
        assert any("daemon for it-tpc starting" in s for s in seen), seen
        assert any("relay connection failed" in s for s in seen), seen
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped" in err and "Traceback" not in err
    assert PASSPHRASE not in "".join(seen) + err and out == ""


async def test_message_ids_may_be_shortened_to_a_unique_prefix(
    relay: RelayEnv, notice: Notice, it: Authority, fr: Authority
) -> None:
    ids = []
    async with running_daemon(relay, fr) as daemon:
        for text in ("one", "two"):
            r = await notice(
                it, "send", "--to", "fr-oclcc", "--kind", "free_text", "--text", text, "--json"
            )
            ids.append(r.json()["id"])
            await received(daemon, ids[-1])
        first, second = ids
        # Sent in the same millisecond of the fixed clock: the ids share a long prefix.
        common = next(i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b)
        assert common >= 8
        err = (await notice(it, "status", first[:8])).refused()
        assert "ambiguous" in err and first in err and second in err
        short = first[: common + 1]
        assert (await notice(it, "status", short, "--json")).json()["id"] == first
        assert (await notice(fr, "show", short, "--json")).json()["id"] == first
        r = await notice(fr, "ack", short, "--person", "Lt. Durand", "--json")
        assert r.code == 0 and r.json()["id"] == first
        err = (await notice(it, "show", short)).refused()
        assert f"notice status {first}" in err  # it sent that one
        reply = ("send", "--to", "it-tpc", "--kind", "reply", "--text", "on it", "--in-reply-to")
        assert (await notice(fr, *reply, short)).code == 0
        [answer] = [m for m in (await notice(fr, "sent", "--json")).json()]
        assert first in answer["summary"]  # the full id, not the prefix
        assert "ambiguous" in (await notice(fr, *reply, first[:8])).refused()
        assert "not a message id" in (await notice(it, "status", first[:7])).refused(2)


async def test_watch_prints_each_verified_receipt_until_the_message_is_acknowledged(
    relay: RelayEnv, notice: Notice, it: Authority, fr: Authority
) -> None:
    async with running_daemon(relay, fr) as daemon:
        r = await notice(
            it, "send", "--to", "fr-oclcc", "--kind", "free_text", "--text", "x", "--json"
        )
        msg_id = r.json()["id"]
        await received(daemon, msg_id)
        settings = await asyncio.to_thread(load_client_settings, fr.config)
        # Watching while the message is open; the acknowledgement ends the watch.
        watching = asyncio.create_task(
            notice(it, "watch", msg_id[:13], "--json", "--interval", "0.2")
        )
        await decide(
            settings,
            relay.net["fr-oclcc"],
            settings.inbox_path,
            msg_id,
            "acknowledged",
            person="Lt. Durand",
            clock=relay.clock,
        )
        r = await asyncio.wait_for(watching, 30)
    assert r.code == 0, r.err
    events = [json.loads(line) for line in r.out.splitlines()]
    receipts = [e for e in events if e["event"] == "receipt"]
    assert [e["status"] for e in receipts] == ["accepted", "delivered", "acknowledged"]
    assert all(e["verified"] for e in receipts) and receipts[-1]["person"] == "Lt. Durand"
    assert events[-1] == {"event": "end", "id": msg_id, "state": "acknowledged"}
    text = (await notice(it, "watch", msg_id)).out
    assert "acknowledged" in text and "Lt. Durand" in text and "State: acknowledged" in text


async def test_a_decision_receipt_the_relay_refuses_is_shown_and_not_retried(
    relay: RelayEnv, notice: Notice, fr: Authority
) -> None:
    # A message the relay never carried (stored here directly): its receipt is refused.
    sealed = seal(
        relay.net["it-tpc"],
        relay.net.directory,
        to=["fr-oclcc"],
        content={"kind": "free_text", "text": "never through the relay"},
        now=relay.clock(),
    )
    opened = open_envelope(
        sealed.token, relay.net.directory, relay.net["fr-oclcc"], now=relay.clock()
    )
    async with await Inbox.open(fr.data_dir / "inbox.sqlite3") as inbox:
        await inbox.received.store(opened, sealed.token, received_at=relay.clock())
    err = (await notice(fr, "ack", sealed.id, "--person", "Lt. Durand")).refused()
    assert "acknowledged in the local inbox, but the relay refused its receipt" in err
    [row] = (await notice(fr, "inbox", "--json")).json()
    assert row["id"] == sealed.id and row["receipt_upload"] == "failed"
    assert "REFUSED" in (await notice(fr, "inbox")).out
    async with await Inbox.open(fr.data_dir / "inbox.sqlite3") as inbox:
        assert await inbox.uploads.due(relay.clock() + 3_600_000) == []  # not retried
        # The decision stands locally, so the audit trail holds it, refusal or not.
        [entry] = await inbox.audit.list()
    assert (entry.person, entry.action, entry.message_id) == (
        "Lt. Durand",
        "acknowledged",
        sealed.id,
    )


def test_the_daemon_takes_its_options_after_the_command_too(
    notice_fixed: Notice, offline_it: Authority, tmp_path: Path
) -> None:
    bare = tmp_path / "bare.toml"
    bare.write_text(
        "".join(
            line + "\n"
            for line in offline_it.config.read_text().splitlines()
            if not line.startswith("passphrase_file")
        )
    )
    # Not "No such option" (2): the options are taken, and the missing passphrase is what
    # stops it (it never prompts).
    err = notice_fixed.sync(None, "daemon", "--config", bare).refused()
    assert "no passphrase" in err and "--passphrase-file" in err


async def test_notice_log_keeps_the_head_and_refuses_a_rewritten_log(
    relay: RelayEnv, notice: Notice, it: Authority
) -> None:
    from keys.merkle import Frontier
    from relay.api.state import STORE
    from relay.store.sqlite import SQLiteStore

    r = await notice(it, "log")
    assert r.code == 0 and "first head seen here" in r.out
    sent = await notice(
        it, "send", "--to", "fr-oclcc", "--kind", "free_text", "--text", "x", "--json"
    )
    msg_id = sent.json()["id"]
    r = await notice(it, "log", "--json")
    assert r.code == 0, r.err
    assert r.json()["size"] == 1 and r.json()["held_size"] == 0 and r.json()["consistent"]
    r = await notice(it, "log")
    assert "the same head" in r.out
    # The operator rewrites the relay's log (and adds to it, so the head moves on).
    assert relay.server is not None
    store = relay.server.app[STORE]
    assert isinstance(store, SQLiteStore)

    def rewrite(conn: Any) -> None:
        conn.execute("DELETE FROM log_nodes")
        store._log.frontier = Frontier()
        for token in ("forged.one.x", "forged.two.x"):
            store._log.append(conn, token)

    await store._write(rewrite)
    for args in (("log",), ("status", msg_id)):
        refused = (await notice(it, *args)).refused()
        assert "rewritten or forked" in refused, refused
    kept = it.data_dir / "log-head.json"
    held = json.loads(await asyncio.to_thread(kept.read_text))["head"]
    r = await notice(it, "status", msg_id, "--offline")
    assert r.code == 0  # the local records still answer
    assert json.loads(await asyncio.to_thread(kept.read_text))["head"] == held


async def test_notice_evidence_writes_a_bundle_keys_verifies_offline(
    relay: RelayEnv, notice: Notice, it: Authority, tmp_path: Path
) -> None:
    from keys.cli import main as keys_main

    sent = await notice(
        it, "send", "--to", "fr-oclcc", "--kind", "free_text", "--text", "x", "--json"
    )
    msg_id = sent.json()["id"]
    out = tmp_path / "court" / "evidence.json"
    await asyncio.to_thread(out.parent.mkdir)
    r = await notice(it, "evidence", msg_id[:13], "--out", out)
    assert r.code == 0, r.err
    assert f"evidence for message {msg_id}" in r.out and "keys evidence verify" in r.out
    assert stat.S_IMODE((await asyncio.to_thread(os.stat, out)).st_mode) == 0o600
    root = tmp_path / "root.pub"
    await asyncio.to_thread(root.write_text, b64e(relay.net.root.signing_key().public) + "\n")
    code = await asyncio.to_thread(
        keys_main, ["evidence", "verify", str(out), "--root-key-file", str(root), "--json"]
    )
    assert code == 0
    # Someone else's message, or one that does not exist: one line, exit 1.
    refused = (
        await notice(it, "evidence", "0" * 8 + "-0000-7000-8000-000000000000", "--out", out)
    ).refused()
    assert "notice: error: " in refused
