"""sd_notify over a real AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from riffradio.control.systemd import Notifier, Watchdog


class ManagerSocket:
    """The listening end that systemd would own."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(10)

    def receive(self) -> dict[str, str]:
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n"))

    def pending(self) -> list[dict[str, str]]:
        messages = []
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(4096).decode()
                messages.append(dict(line.split("=", 1) for line in data.split("\n")))
        except BlockingIOError:
            return messages
        finally:
            self.sock.settimeout(10)


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[ManagerSocket]:
    m = ManagerSocket(str(tmp_path / "notify"))
    yield m
    m.sock.close()


def test_ready_status_stopping_reach_the_socket(manager: ManagerSocket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": manager.address})
    assert notifier.enabled
    assert notifier.ready("on air: jazzy lofi\nhip hop")
    assert manager.receive() == {"READY": "1", "STATUS": "on air: jazzy lofi hip hop"}
    assert notifier.status("buffer 10.2 s ahead")
    assert manager.receive() == {"STATUS": "buffer 10.2 s ahead"}
    assert notifier.stopping()
    assert manager.receive() == {"STOPPING": "1"}
    notifier.close()


def test_abstract_namespace_socket() -> None:
    manager = ManagerSocket(f"@riffradio-test-{uuid.uuid4().hex}")
    try:
        notifier = Notifier({"NOTIFY_SOCKET": manager.address})
        assert notifier.watchdog()
        assert manager.receive() == {"WATCHDOG": "1"}
    finally:
        manager.sock.close()


def test_without_systemd_everything_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert Watchdog(notifier).pet() is False


def test_a_vanished_manager_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.watchdog() is False
    assert notifier.watchdog() is False
    assert sum("systemd notify" in r.getMessage() for r in caplog.records) == 1  # logged once


def test_watchdog_pets_at_half_the_interval(manager: ManagerSocket) -> None:
    now = [100.0]
    notifier = Notifier({"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "2000000"})
    watchdog = Watchdog(notifier, clock=lambda: now[0])
    assert watchdog.pet_interval_seconds == 1.0
    sent = []
    for _block in range(16):  # a block every 0.25 s for 4 s
        sent.append(watchdog.pet())
        now[0] += 0.25
    assert sent == [True, False, False, False] * 4
    assert manager.pending() == [{"WATCHDOG": "1"}] * 4


def test_watchdog_for_another_pid_is_ignored(manager: ManagerSocket) -> None:
    env = {"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Watchdog(Notifier(env)).pet() is False
    env["WATCHDOG_PID"] = str(os.getpid())
    assert Watchdog(Notifier(env)).pet() is True


def test_a_child_process_reads_the_environment_like_a_service(manager: ManagerSocket) -> None:
    code = (
        "from riffradio.control.systemd import Notifier, Watchdog\n"
        "n = Notifier(); w = Watchdog(n)\n"
        "assert n.ready('started'), 'not sent'\n"
        "assert w.pet() and not w.pet()\n"
    )
    env = dict(os.environ, NOTIFY_SOCKET=manager.address, WATCHDOG_USEC="30000000")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    assert manager.pending() == [{"READY": "1", "STATUS": "started"}, {"WATCHDOG": "1"}]


def test_a_manager_that_does_not_read_never_blocks_the_clock(manager: ManagerSocket) -> None:
    """Unix datagram queues are short (net.unix.max_dgram_qlen); a full one must not stall a block."""
    notifier = Notifier({"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "2000000"})
    started = time.monotonic()
    sent = [notifier.status(f"block {i}") for i in range(2000)]
    assert time.monotonic() - started < 5.0
    assert sent[0] and not all(sent)  # the queue filled up and later messages were dropped
    manager.pending()  # systemd reads again
    assert Watchdog(notifier).pet()


def test_status_follows_the_title_on_air(manager: ManagerSocket) -> None:
    import numpy as np

    from riffradio.control.systemd import StatusReporter
    from riffradio.core.types import AudioBlock, NowPlaying

    reporter = StatusReporter(Notifier({"NOTIFY_SOCKET": manager.address}), lambda: "Drill FM")

    def block(title: str, fallback: bool = False) -> AudioBlock:
        return AudioBlock(np.zeros((2, 2048), np.float32), 44100, 0, NowPlaying(0, title, None, 0.0, fallback=fallback))

    for title in ("jazzy lofi", "jazzy lofi", "jazzy lofi → church bells", "jazzy lofi → church bells"):
        reporter.on_block(block(title))
    assert [m["STATUS"] for m in manager.pending()] == [
        "on air: Drill FM: jazzy lofi", "on air: Drill FM: jazzy lofi → church bells",
    ]  # fmt: skip: one STATUS= per title, not per block


JOURNAL_CHILD = """
import logging, sys
from riffradio.app.cli import configure_logging
configure_logging("DEBUG")
log = logging.getLogger("riffradio.drill")
log.debug("every block"); log.info("on air"); log.warning("underrun"); log.error("reload failed")
try:
    raise ValueError("two\\nlines")
except ValueError:
    log.exception("clip failed")
"""


@pytest.mark.parametrize("journal", [True, False])
def test_log_lines_carry_their_priority_when_stderr_is_the_journal(journal: bool) -> None:
    """stderr is a stream socket, as systemd gives it; JOURNAL_STREAM names it (or not)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    st = os.fstat(theirs.fileno())
    env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}" if journal else "")
    child = subprocess.run([sys.executable, "-c", JOURNAL_CHILD], stderr=theirs, env=env, timeout=60)
    theirs.close()
    ours.settimeout(10)
    text = b"".join(iter(lambda: ours.recv(65536), b"")).decode()
    ours.close()
    assert child.returncode == 0, text
    lines = text.splitlines()
    if not journal:
        assert not any(line.startswith("<") for line in lines), lines
        return
    assert all(line[:3] in ("<7>", "<6>", "<4>", "<3>") for line in lines), lines  # a traceback's lines too
    assert [line[:3] for line in lines if "riffradio.drill" in line] == ["<7>", "<6>", "<4>", "<3>", "<3>"]
    assert lines[-1] == "<3>ValueError: two" or lines[-1] == "<3>lines"
