"""qkrag.atomic: atomic writes and the one-writer file lock."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qkrag.atomic import file_lock, write_text
from qkrag.errors import QkragError

HOLD_SCRIPT = """
import sys, time
sys.path.insert(0, {src!r})
from qkrag.atomic import file_lock
with file_lock({path!r}, 5, "test resource"):
    print("held", flush=True)
    time.sleep(60)
"""


def hold_in_child(path: Path) -> subprocess.Popen:
    src = str(Path(__file__).resolve().parents[1] / "src")
    child = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT.format(src=src, path=str(path))],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def test_a_second_holder_waits_then_fails_naming_the_holder(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    child = hold_in_child(lock)
    try:
        started = time.monotonic()
        with pytest.raises(QkragError, match=rf"test resource: another process \(pid {child.pid}\) is writing it; "
                                             r"waited 0.3 s\. Fix: let that run finish"):
            with file_lock(lock, 0.3, "test resource"):
                pass
        assert 0.3 <= time.monotonic() - started < 5
    finally:
        child.kill()
        child.wait(10)


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    child = hold_in_child(lock)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    with file_lock(lock, 1, "test resource"):  # the kernel released it with the process
        pass


def test_the_lock_is_reentrant_within_a_process_and_released_after(tmp_path: Path) -> None:
    lock = tmp_path / "sub" / "x.lock"
    with file_lock(lock, 1, "r"):
        with file_lock(tmp_path / "sub" / "." / "x.lock", 0.1, "r"):  # same file, other spelling: no deadlock
            pass
        assert lock.read_text() != ""  # the holder's pid, for the next waiter's message
    with file_lock(lock, 0.1, "r"):
        pass


def test_a_lock_in_an_unwritable_place_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(QkragError, match="r: cannot create its lock file .*Fix: check that the folder"):
        with file_lock(blocker / "x.lock", 0.1, "r"):
            pass


def test_write_text_replaces_whole(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.txt"
    write_text(target, "one")
    write_text(target, "two")
    assert target.read_text() == "two" and [p.name for p in target.parent.iterdir()] == ["b.txt"]
