"""`make demo` runs clients.demo: it must complete and show each stage of the story."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clients import demo


def test_demo_runs_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(demo.PASS_ENV, "test passphrase")
    assert demo.main(["--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for expected in (
        "Key ceremony",
        "Signed directory cpar-demo version 1",
        "OK directory cpar-demo",
        "identical to the original",
        "accepted",
        "delivered",
        "acknowledged",
        "refused (TamperedError)",
        "Demo complete.",
    ):
        assert expected in out, expected
    for ks in tmp_path.glob("*.ks"):
        assert (os.stat(ks).st_mode & 0o777) == 0o600
    assert (tmp_path / "received-mirror.png").read_bytes() == (tmp_path / "mirror.png").read_bytes()
