"""Delivery hooks: real files, real subprocesses and a real local web server as targets."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import ValidationError

from clients.hooks import (
    MAX_BACKOFF_S,
    CommandHook,
    FileHook,
    HookConfig,
    HookRunner,
    WebhookHook,
    backoff_ms,
    parse_hooks,
)
from clients.store import Inbox
from keys.models import AttachmentManifestEntry
from tests.inboxfixture import NOTICE, PHOTO, deliver
from tests.netfixture import NOW, Network
from tests.waiting import until

SECRET_WORD = "Etruscan"  # appears in the content: it must never reach a log line


class Clock:
    def __init__(self, now: int = NOW + 5000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
async def inbox(tmp_path: Path) -> AsyncIterator[Inbox]:
    box = await Inbox.open(tmp_path / "daemon" / "inbox.db")
    yield box
    await box.close()


async def _store(net: Network, inbox: Inbox, hooks: list[HookConfig], **kwargs: Any) -> str:
    opened, token = deliver(net, **kwargs)
    assert await inbox.received.store(
        opened, token, received_at=NOW + 2000, hooks=[h.name for h in hooks]
    )
    return opened.header.id


async def _read(path: Path) -> bytes:
    return await asyncio.to_thread(path.read_bytes)


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://127.0.0.2/hook",
        "http://[::1]:9000/",
        "https://localhost/hook",
        "http://LOCALHOST:1/",
    ],
)
def test_webhook_to_loopback_is_accepted(url: str) -> None:
    hook = WebhookHook(type="webhook", name="case", url=url)
    assert hook.shares_onward is True


@pytest.mark.parametrize(
    ("url", "allow_remote", "message"),
    [
        ("http://case.example.org/hook", False, "not loopback"),
        ("https://10.0.0.5/hook", False, "not loopback"),
        ("https://localhost.example.org/", False, "not loopback"),
        ("http://case.example.org/hook", True, "must use https"),
        ("ftp://127.0.0.1/x", False, "http"),
        ("http://user:pw@127.0.0.1/", False, "credentials"),
        ("http:///nohost", False, "with a host"),
    ],
)
def test_webhook_off_this_machine_is_refused_at_config(
    url: str, allow_remote: bool, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_hooks([{"type": "webhook", "name": "w", "url": url, "allow_remote": allow_remote}])


def test_remote_https_webhook_needs_explicit_permission() -> None:
    [hook] = parse_hooks(
        [{"type": "webhook", "name": "w", "url": "https://case.example.org/", "allow_remote": True}]
    )
    assert isinstance(hook, WebhookHook) and hook.shares_onward


def test_config_defaults_and_refusals(tmp_path: Path) -> None:
    hooks = parse_hooks(
        [
            {"type": "file", "name": "archive", "directory": str(tmp_path)},
            {"type": "command", "name": "cmd", "argv": ["/bin/true"]},
        ]
    )
    file_hook, command = hooks
    assert isinstance(file_hook, FileHook) and not file_hook.shares_onward
    assert isinstance(command, CommandHook) and command.shares_onward
    assert (command.max_attempts, command.backoff_base) == (8, 2.0)
    with pytest.raises(ValueError, match="unique"):
        parse_hooks([{"type": "command", "name": "x", "argv": ["a"]}] * 2)
    with pytest.raises(ValidationError, match="absolute"):
        parse_hooks([{"type": "file", "name": "x", "directory": "relative/dir"}])
    with pytest.raises(ValidationError) as err:
        parse_hooks([{"type": "command", "name": "x", "argv": []}])
    assert [(e["type"], e["loc"]) for e in err.value.errors()] == [
        ("too_short", (0, "command", "argv"))
    ]
    with pytest.raises(ValidationError) as err:
        parse_hooks([{"type": "shell", "name": "x", "script": "rm -rf /"}])
    assert [(e["type"], e["loc"]) for e in err.value.errors()] == [("union_tag_invalid", (0,))]
    with pytest.raises(ValidationError, match="Extra inputs"):
        parse_hooks([{"type": "command", "name": "x", "argv": ["a"], "shell": True}])


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    hook = CommandHook(type="command", name="c", argv=["x"], backoff_base=2)
    assert [backoff_ms(hook, n, 0.999999) for n in (1, 2, 3, 4)] == [1999, 3999, 7999, 15999]
    assert [backoff_ms(hook, n, 0.0) for n in (1, 2, 3, 4)] == [1000, 2000, 4000, 8000]
    assert backoff_ms(hook, 50, 0.999999) <= MAX_BACKOFF_S * 1000
    assert backoff_ms(hook, 50, 0.0) == MAX_BACKOFF_S * 500


# --- file hook -------------------------------------------------------------------------------


async def test_file_hook_writes_private_json_once(
    net: Network, inbox: Inbox, tmp_path: Path
) -> None:
    out = tmp_path / "drop"
    hook = FileHook(type="file", name="archive", directory=out)
    msg_id = await _store(
        net, inbox, [hook], handling=["no-onward-sharing", "no-evidential-use"], attachments=[PHOTO]
    )
    async with HookRunner(inbox, [hook], clock=Clock()) as runner:
        assert await runner.run_due() == 1
        assert await runner.run_due() == 0

    target = out / f"{msg_id}.json"
    st = await asyncio.to_thread(os.stat, target)
    assert stat.S_IMODE(st.st_mode) == 0o600
    data = json.loads(await _read(target))
    assert data["id"] == msg_id
    assert data["sender"] == "it-tpc"
    assert data["to"] == ["fr-oclcc"]
    assert data["received_at"] == NOW + 2000
    assert data["kind"] == "identification_notice"
    assert data["content"] == NOTICE
    assert [h["code"] for h in data["handling"]] == ["no-onward-sharing", "no-evidential-use"]
    assert data["handling"][0]["meaning"].startswith("Do not disseminate")
    assert data["attachments"] == [
        {"name": "front.jpg", "type": "image/jpeg", "size": 1000, "path": None}
    ]
    # Atomic: no temporary file is left behind.
    assert await asyncio.to_thread(lambda: sorted(p.name for p in out.iterdir())) == [
        f"{msg_id}.json"
    ]
    [job] = await inbox.hook_jobs.of_message(msg_id)
    assert (job.state, job.attempts) == ("done", 1)


async def test_downloaded_attachments_are_handed_over_with_their_path(
    net: Network, inbox: Inbox, tmp_path: Path
) -> None:
    hook = FileHook(type="file", name="archive", directory=tmp_path / "drop")
    other = AttachmentManifestEntry(
        h="cd" * 32, n=64, key=PHOTO.key, name="../back.jpg", type="image/jpeg", size=40
    )
    msg_id = await _store(net, inbox, [hook], attachments=[PHOTO, other])
    photo = inbox.attachment_path(msg_id, "front.jpg")
    await asyncio.to_thread(photo.parent.mkdir, parents=True)
    await asyncio.to_thread(photo.write_bytes, b"jpeg")
    async with HookRunner(inbox, [hook], clock=Clock()) as runner:
        await runner.run_due()
    data = json.loads(await _read(tmp_path / "drop" / f"{msg_id}.json"))
    assert [(a["name"], a["path"]) for a in data["attachments"]] == [
        ("front.jpg", str(photo)),
        ("../back.jpg", None),
    ]


async def test_file_hook_failure_is_retried(net: Network, inbox: Inbox, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    await asyncio.to_thread(blocker.write_bytes, b"")
    hook = FileHook(type="file", name="archive", directory=blocker)
    msg_id = await _store(net, inbox, [hook])
    clock = Clock()
    async with HookRunner(inbox, [hook], clock=clock, rand=lambda: 0.0) as runner:
        await runner.run_due()
    [job] = await inbox.hook_jobs.of_message(msg_id)
    assert (job.state, job.attempts, job.next_attempt_at) == ("pending", 1, clock.now + 1000)
    assert job.last_error is not None and "cannot write" in job.last_error


# --- command hook ----------------------------------------------------------------------------

COPY_STDIN = (
    "import os, sys, json\n"
    "data = sys.stdin.buffer.read()\n"
    "env = {k: v for k, v in os.environ.items()}\n"
    "open(os.environ['OUT'], 'w').write(json.dumps({'stdin': data.decode(), 'env': env}))\n"
)


async def test_command_hook_gets_the_message_on_stdin_and_a_clean_env(
    net: Network, inbox: Inbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CPAR_PASSPHRASE", "daemon secret")
    out = tmp_path / "out.json"
    hook = CommandHook(type="command", name="case", argv=_py(COPY_STDIN), env={"OUT": str(out)})
    msg_id = await _store(net, inbox, [hook])
    async with HookRunner(inbox, [hook], clock=Clock()) as runner:
        assert await runner.run_due() == 1
    got = json.loads(await _read(out))
    message = json.loads(got["stdin"])
    assert message["id"] == msg_id and message["content"] == NOTICE
    assert got["env"]["CPAR_MESSAGE_ID"] == msg_id
    assert got["env"]["CPAR_HOOK"] == "case"
    assert "CPAR_PASSPHRASE" not in got["env"]
    [job] = await inbox.hook_jobs.of_message(msg_id)
    assert job.state == "done"


async def test_command_argv_never_goes_through_a_shell(
    net: Network, inbox: Inbox, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    hook = CommandHook(
        type="command", name="echo", argv=["/bin/echo", f"x; touch {marker}"], shares_onward=False
    )
    await _store(net, inbox, [hook])
    async with HookRunner(inbox, [hook], clock=Clock()) as runner:
        await runner.run_due()
    assert not await asyncio.to_thread(marker.exists)


async def test_failing_command_is_retried_on_schedule_then_given_up(
    net: Network, inbox: Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hook = CommandHook(
        type="command",
        name="case",
        argv=_py("import sys; sys.stdin.read(); sys.exit(3)"),
        max_attempts=3,
        backoff_base=2,
    )
    msg_id = await _store(net, inbox, [hook])
    clock = Clock()
    async with HookRunner(inbox, [hook], clock=clock, rand=lambda: 0.5) as runner:
        assert await runner.run_due() == 1
        [job] = await inbox.hook_jobs.of_message(msg_id)
        assert (job.state, job.attempts, job.last_error) == ("pending", 1, "exited with status 3")
        assert job.next_attempt_at == clock.now + 1500  # 2 s, jittered to 75 %

        assert await runner.run_due() == 0  # not due yet
        clock.now += 1499
        assert await runner.run_due() == 0
        clock.now += 1
        assert await runner.run_due() == 1
        [job] = await inbox.hook_jobs.of_message(msg_id)
        assert (job.state, job.attempts, job.next_attempt_at) == ("pending", 2, clock.now + 3000)

        clock.now += 3000
        assert await runner.run_due() == 1
        [job] = await inbox.hook_jobs.of_message(msg_id)
        assert (job.state, job.attempts, job.next_attempt_at) == ("failed", 3, None)
        assert job.last_error == "exited with status 3"

        clock.now += 10**9
        assert await runner.run_due() == 0
    assert "gave up" in caplog.text and msg_id in caplog.text
    assert SECRET_WORD not in caplog.text


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] == "Z"  # a zombie has exited
    except FileNotFoundError:
        return True


async def _wait_gone(pid: int) -> None:
    async def gone() -> bool:
        return await asyncio.to_thread(_gone, pid)

    await until(gone, 5)


SLEEPER = (
    "import os, subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "open(os.environ['OUT'], 'w').write(f'{os.getpid()} {child.pid}')\n"
    "time.sleep(60)\n"
)


async def test_command_that_hangs_is_killed_with_its_children(
    net: Network, inbox: Inbox, tmp_path: Path
) -> None:
    out = tmp_path / "pids"
    hook = CommandHook(
        type="command", name="slow", argv=_py(SLEEPER), env={"OUT": str(out)}, timeout=1.0
    )
    msg_id = await _store(net, inbox, [hook])
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with HookRunner(inbox, [hook], clock=Clock()) as runner:
        assert await runner.run_due() == 1
    assert loop.time() - started < 10
    [job] = await inbox.hook_jobs.of_message(msg_id)
    assert (job.state, job.attempts) == ("pending", 1)
    assert job.last_error == "timed out after 1 s and was killed"
    pid, child = map(int, (await _read(out)).split())
    await _wait_gone(pid)
    await _wait_gone(child)


async def test_missing_command_is_a_failure_not_a_crash(net: Network, inbox: Inbox) -> None:
    hook = CommandHook(type="command", name="gone", argv=["/nonexistent/cpar-hook"])
    msg_id = await _store(net, inbox, [hook])
    async with HookRunner(inbox, [hook], clock=Clock()) as runner:
        assert await runner.run_due() == 1
    [job] = await inbox.hook_jobs.of_message(msg_id)
    assert job.state == "pending"
    assert job.last_error is not None and job.last_error.startswith("cannot start")


# --- webhook ---------------------------------------------------------------------------------


@dataclass
class Target:
    server: TestServer
    statuses: list[int] = field(default_factory=list)
    """Statuses to answer with, in order; 200 once they run out."""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    """Set to let the ``/slow`` handler answer."""

    def url(self, path: str = "/hook") -> str:
        return str(self.server.make_url(path))


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    holder: list[Target] = []

    async def hook(request: web.Request) -> web.Response:
        t = holder[0]
        t.received.append((dict(request.headers), await request.read()))
        return web.Response(status=t.statuses.pop(0) if t.statuses else 200)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/hook")

    async def slow(request: web.Request) -> web.Response:
        await holder[0].release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/slow", slow)
    app.router.add_post("/hook", hook)
    app.router.add_post("/redirect", redirect)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    holder.append(Target(server))
    try:
        yield holder[0]
    finally:
        holder[0].release.set()
        await server.close()


async def test_webhook_posts_the_message_json(net: Network, inbox: Inbox, target: Target) -> None:
    hook = WebhookHook(type="webhook", name="case", url=target.url(), headers={"X-Token": "t"})
    msg_id = await _store(net, inbox, [hook], handling=["no-evidential-use"])
    async with HookRunner(inbox, [hook], clock=Clock()) as runner:
        assert await runner.run_due() == 1
    [(headers, body)] = target.received
    assert headers["Content-Type"] == "application/json"
    # The key names the event: a reminder about the same message is another delivery.
    assert headers["Idempotency-Key"] == f"{msg_id}:received"
    assert (headers["X-Cpar-Event"], headers["X-Cpar-Message-Id"]) == ("received", msg_id)
    assert headers["X-Token"] == "t"
    data = json.loads(body)
    assert data["id"] == msg_id and data["content"] == NOTICE and data["event"] == "received"
    assert data["handling"][0]["code"] == "no-evidential-use"
    [job] = await inbox.hook_jobs.of_message(msg_id)
    assert job.state == "done"


@pytest.mark.parametrize(
    ("status", "error"), [(500, "answered HTTP 500"), (404, "answered HTTP 404")]
)
async def test_webhook_error_status_is_retried_until_success(
    net: Network, inbox: Inbox, target: Target, status: int, error: str
) -> None:
    target.statuses = [status]
    hook = WebhookHook(type="webhook", name="case", url=target.url())
    msg_id = await _store(net, inbox, [hook])
    clock = Clock()
    async with HookRunner(inbox, [hook], clock=clock) as runner:
        await runner.run_due()
        [job] = await inbox.hook_jobs.of_message(msg_id)
        assert (job.state, job.last_error) == ("pending", error)
        assert job.next_attempt_at is not None
        clock.now = job.next_attempt_at
        assert await runner.run_due() == 1
    [job] = await inbox.hook_jobs.of_message(msg_id)
    assert (job.state, job.attempts) == ("done", 2)
    assert len(target.received) == 2


async def test_webhook_redirect_is_not_followed(net: Network, inbox: Inbox, target: Target) -> None:
    hook = WebhookHook(type="webhook", name="case", url=target.url("/redirect"))
    msg_id = await _store(net, inbox, [hook])
    async with HookRunner(inbox, [hook], clock=Clock()) as runner:
        await runner.run_due()
    assert target.received == []
    [job] = await inbox.hook_jobs.of_message(msg_id)
    assert (job.state, job.last_error) == ("pending", "answered HTTP 302")


async def test_webhook_that_does_not_answer_in_time_is_a_retried_failure(
    net: Network, inbox: Inbox, target: Target
) -> None:
    hook = WebhookHook(type="webhook", name="case", url=target.url("/slow"), timeout=0.3)
    msg_id = await _store(net, inbox, [hook])
    async with HookRunner(inbox, [hook], clock=Clock()) as runner:
        await runner.run_due()
    [job] = await inbox.hook_jobs.of_message(msg_id)
    assert (job.state, job.attempts, job.last_error) == ("pending", 1, "timed out after 0.3 s")


async def test_webhook_down_is_a_retried_failure(
    net: Network, inbox: Inbox, target: Target
) -> None:
    url = target.url()
    await target.server.close()
    hook = WebhookHook(type="webhook", name="case", url=url)
    msg_id = await _store(net, inbox, [hook])
    async with HookRunner(inbox, [hook], clock=Clock()) as runner:
        await runner.run_due()
    [job] = await inbox.hook_jobs.of_message(msg_id)
    assert job.state == "pending"
    assert job.last_error is not None and job.last_error.startswith("request failed")


# --- handling codes ----------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["no-onward-sharing", "originator-consent-required", "X-NEW"])
async def test_restricted_message_never_reaches_a_hook_that_shares_onward(
    net: Network, inbox: Inbox, target: Target, tmp_path: Path, code: str
) -> None:
    sharing = WebhookHook(type="webhook", name="partner", url=target.url())
    local = FileHook(type="file", name="archive", directory=tmp_path / "drop")
    msg_id = await _store(net, inbox, [sharing, local], handling=[code])
    clock = Clock()
    async with HookRunner(inbox, [sharing, local], clock=clock) as runner:
        assert await runner.run_due() == 2
        clock.now += 10**9
        assert await runner.run_due() == 0  # skipped for good, never retried
    assert target.received == []
    jobs = {j.hook: j for j in await inbox.hook_jobs.of_message(msg_id)}
    assert jobs["archive"].state == "done"
    assert jobs["partner"].state == "skipped"
    assert jobs["partner"].attempts == 0
    assert jobs["partner"].skipped_reason is not None
    assert code in jobs["partner"].skipped_reason
    written = await asyncio.to_thread((tmp_path / "drop" / f"{msg_id}.json").read_text)
    assert json.loads(written)["id"] == msg_id  # the hook that does not share onward ran


async def test_unrestricted_codes_do_not_block_sharing(
    net: Network, inbox: Inbox, target: Target
) -> None:
    hook = WebhookHook(type="webhook", name="partner", url=target.url())
    msg_id = await _store(
        net, inbox, [hook], handling=["no-evidential-use", "law-enforcement-only"]
    )
    async with HookRunner(inbox, [hook], clock=Clock()) as runner:
        await runner.run_due()
    assert len(target.received) == 1
    [job] = await inbox.hook_jobs.of_message(msg_id)
    assert job.state == "done"


# --- restarts and the loop ---------------------------------------------------------------------


async def test_jobs_survive_a_restart(net: Network, tmp_path: Path) -> None:
    path = tmp_path / "inbox.db"
    out = tmp_path / "drop"
    failing = CommandHook(
        type="command", name="case", argv=_py("import sys; sys.exit(1)"), max_attempts=2
    )
    archive = FileHook(type="file", name="archive", directory=out)
    box = await Inbox.open(path)
    msg_id = await _store(net, box, [failing, archive])
    clock = Clock()
    async with HookRunner(box, [failing], clock=clock) as runner:  # archive not run yet
        await runner.run_due()
    await box.close()

    box = await Inbox.open(path)
    try:
        clock.now += 10**6
        async with HookRunner(box, [failing, archive], clock=clock) as runner:
            assert await runner.run_due() == 2
        jobs = {j.hook: j for j in await box.hook_jobs.of_message(msg_id)}
        assert (jobs["case"].state, jobs["case"].attempts) == ("failed", 2)
        assert jobs["archive"].state == "done"
        written = await asyncio.to_thread((out / f"{msg_id}.json").read_text)
        assert json.loads(written)["id"] == msg_id
    finally:
        await box.close()


async def test_jobs_of_an_unconfigured_hook_wait_for_it(
    net: Network, inbox: Inbox, tmp_path: Path
) -> None:
    archive = FileHook(type="file", name="archive", directory=tmp_path / "drop")
    msg_id = await _store(net, inbox, [archive])
    async with HookRunner(inbox, [], clock=Clock()) as runner:
        assert await runner.run_due() == 0
    [job] = await inbox.hook_jobs.of_message(msg_id)
    assert job.state == "pending"


async def test_run_forever_survives_a_failed_round_and_stops(
    net: Network, inbox: Inbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hook = FileHook(type="file", name="archive", directory=tmp_path / "drop")
    msg_id = await _store(net, inbox, [hook])
    runner = HookRunner(inbox, [hook], clock=Clock())
    real = runner.run_due
    rounds = 0
    stop = asyncio.Event()

    async def flaky() -> int:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise RuntimeError("database hiccup")
        ran = await real()
        if ran:
            stop.set()
        return ran

    runner.run_due = flaky  # type: ignore[method-assign]
    await asyncio.wait_for(runner.run_forever(stop, interval=0.01), timeout=10)
    assert rounds >= 2
    assert "hook round failed" in caplog.text
    [job] = await inbox.hook_jobs.of_message(msg_id)
    assert job.state == "done"


async def test_logs_and_errors_never_carry_content(
    net: Network, inbox: Inbox, target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    echo = CommandHook(
        type="command",
        name="loud",
        argv=_py("import sys; d = sys.stdin.read(); print(d); sys.exit(2)"),
    )
    target.statuses = [500]
    web_hook = WebhookHook(type="webhook", name="case", url=target.url())
    msg_id = await _store(net, inbox, [echo, web_hook])
    async with HookRunner(inbox, [echo, web_hook], clock=Clock()) as runner:
        assert await runner.run_due() == 2
    assert msg_id in caplog.text
    assert SECRET_WORD not in caplog.text
    for job in await inbox.hook_jobs.of_message(msg_id):
        assert job.last_error is not None and SECRET_WORD not in job.last_error
