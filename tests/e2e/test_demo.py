"""`make demo` runs clients.demo: the whole job with real processes, and it must finish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from clients import demo


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_demo_runs_end_to_end(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--workdir", str(tmp_path)]) == 0
    out = capfd.readouterr().out
    for expected in (
        "Key ceremony",
        "Signed directory cpar-demo version 1",
        "keys --passphrase-file",
        "tls create --relay-id relay-eu",
        'tls_spki_sha256 = ["',
        "relay listening on https://127.0.0.1:",
        "accepted by the relay; its signed receipt verified",
        "HANDLING RESTRICTIONS",
        "Acknowledged",
        "State: acknowledged",
        "not acknowledged yet; reminded fr-central; step 1",
        "fr-central has not acknowledged; released to fr-ocbc",
        "relay stopped for maintenance (exit 0)",
        "QUEUED ",
        "receipt not sent yet",
        "relay stopped (exit 0)",
        "VERIFIED: evidence for message",
        "Officer consoles",
        "Demo complete.",
    ):
        assert expected in out, expected
    # The daemons and the CLI spoke TLS to the relay, pinned through the directory.
    assert 'relay_url = "https://' in (tmp_path / "it-tpc" / "client.toml").read_text()
    assert out.count("verified") >= 3  # accepted, delivered, acknowledged
    # Every command is printed on one line, as it can be pasted into a shell.
    assert "$ notice --config fr-ocbc/client.toml ack " in out
    assert "--person 'Capt. Martin (duty officer)'" in out
    # After the restart, with no second command: the queued notice was delivered and the
    # acknowledgement made while the relay was down reached the sender.
    after = out.split("The relay is back")[1]
    assert "delivered" in after and "Lt. Girard (duty desk)" in after
    assert f"kept in {tmp_path}" in " ".join(out.split()) and tmp_path.exists()
    for ks in tmp_path.rglob("*.ks"):
        assert (os.stat(ks).st_mode & 0o777) == 0o600
    photos = list((tmp_path / "fr-ocbc" / "data" / "attachments").rglob("mirror.png"))
    assert len(photos) == 1 and photos[0].read_bytes() == (tmp_path / "mirror.png").read_bytes()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_keep_running_leaves_the_consoles_up_until_interrupted(tmp_path: Path) -> None:
    """cpar-demo --keep-running: the links it prints open a console; Ctrl-C ends it all."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "clients.demo", "--workdir", str(tmp_path), "--keep-running"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        link = None
        for line in proc.stdout:
            if line.startswith("it-tpc: http://127.0.0.1:"):
                link = line.split(": ", 1)[1].strip()
            if "stays up" in line:
                break
        assert link is not None
        # Opening the link signs the authority's demo officer in: the inbox follows.
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with browser.open(link, timeout=10) as resp:
            page = resp.read().decode()
        assert resp.status == 200 and "Demo officer, it-tpc" in page and "Inbox" in page
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0]
        assert proc.returncode == 0, rest
        assert "relay stopped (exit 0)" in rest and "Demo complete." in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
