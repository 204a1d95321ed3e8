"""The shipped Prometheus alert rules: valid, unit-tested with promtool, and about metrics
the relay really exposes."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest
import yaml

from relay.api.ops import token_digest
from relay.cli import main as relay_main
from relay.settings import OperatorCredential, RelaySettings
from tests.netfixture import Network
from tests.relayfixture import RelayEnv, write_relay_files

HERE = Path(__file__).resolve().parent
RULES = HERE.parents[1] / "relay" / "prometheus" / "alerts.yml"
RULE_TESTS = HERE / "prometheus" / "alerts_test.yml"
TOKEN = "alert-rules-operator-token-0123456789abcdefghij"


@pytest.fixture
def relay_settings(tmp_path: Path, net: Network) -> RelaySettings:
    cred = OperatorCredential(name="prometheus", token_sha256=token_digest(TOKEN))
    return write_relay_files(tmp_path, net).model_copy(update={"operators": [cred]})


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:  # fail, never skip: .ci/run and `make test` install it
        pytest.fail("promtool is missing: apt-get install -y prometheus (.ci/run does)")
    return found


def test_promtool_checks_the_rules() -> None:
    done = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 5 rules found" in done.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    done = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=RULE_TESTS.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_relay_alert_rules_prints_the_shipped_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert relay_main(["alert-rules"]) == 0
    assert capsys.readouterr().out == RULES.read_text(encoding="utf-8")


async def test_every_metric_the_rules_use_is_exposed(relay: RelayEnv) -> None:
    rules = yaml.safe_load(await asyncio.to_thread(RULES.read_text, encoding="utf-8"))
    names = {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in re.findall(r"\bcpar_[a-z_]+", rule["expr"])
    }
    assert names == {
        "cpar_authority_unreachable_seconds",
        "cpar_directory_expires_timestamp_seconds",
        "cpar_messages_at_notify_step",
        "cpar_overdue_timers",
        "cpar_store_up",
    }
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(relay.base_url + "/metrics", headers=headers) as reply,
    ):
        assert reply.status == 200
        text = await reply.text()
    exposed = {line.split("{")[0].split(" ")[0] for line in text.splitlines()}
    assert names <= exposed
