"""qkrag.atomic: atomic writes and the one-writer file lock."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qkrag.atomic import atomic_folder, atomic_open, file_lock, output_folder, write_json, write_text
from qkrag.errors import InputError, QkragError

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


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as handle:
            handle.write("half of the new")
            raise RuntimeError("killed midway")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_atomic_open_writes_bytes_readable_by_others(tmp_path: Path) -> None:
    target = tmp_path / "new" / "blob.bin"
    with atomic_open(target, "wb") as handle:
        handle.write(b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01" and target.stat().st_mode & 0o777 == 0o644


def test_write_json_is_indented_utf8_with_a_final_newline(tmp_path: Path) -> None:
    write_json(tmp_path / "s.json", {"name": "café", "n": [1, 2]})
    text = (tmp_path / "s.json").read_text(encoding="utf-8")
    assert text.endswith("}\n") and "café" in text and json.loads(text) == {"name": "café", "n": [1, 2]}


def test_output_folder_is_made_now_and_refuses_a_file_or_an_unwritable_place(tmp_path: Path) -> None:
    assert output_folder(tmp_path / "a" / "b", "--out").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match=r"--out .*file: is a file, not a folder\. Fix: pass a folder path"):
        output_folder(tmp_path / "file", "--out")
    with pytest.raises(InputError, match=r"--out .*: cannot be written \(.*\)\. Fix: choose a folder"):
        output_folder(tmp_path / "file" / "below", "--out")  # a parent that is a file: no one can create it
    assert not list((tmp_path / "a" / "b").iterdir())  # the write check leaves nothing behind


def test_atomic_folder_replaces_a_whole_folder_or_leaves_it_untouched(tmp_path: Path) -> None:
    target = tmp_path / "index"
    with atomic_folder(target) as tmp:
        (tmp / "one").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "two").write_text("2")
            raise RuntimeError("failed while saving")
    assert sorted(p.name for p in target.iterdir()) == ["one"]
    with atomic_folder(target) as tmp:
        (tmp / "three").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["three"]  # the old content went, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"] and target.stat().st_mode & 0o777 == 0o755


def test_an_output_folder_of_another_kind_is_refused(tmp_path):
    from qkrag.atomic import folder_kind, output_folder
    from qkrag.errors import InputError

    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "model.safetensors").write_bytes(b"x")
    assert folder_kind(tmp_path / "proj") == "projection"
    with pytest.raises(InputError, match="holds a projection; writing a pairs folder into it"):
        output_folder(tmp_path / "proj", "--out", "pairs folder")
    assert output_folder(tmp_path / "proj", "--out", "projection") == tmp_path / "proj"
    assert output_folder(tmp_path / "new", "--out", "pairs folder").is_dir()


@pytest.mark.parametrize("kind", ["pairs folder", "projection", "BM25 index"])
def test_require_whole_refuses_a_folder_missing_any_file_its_writer_leaves(tmp_path, kind):
    from qkrag.atomic import WHOLE_FILES, require_whole

    folder = tmp_path / "f"
    with pytest.raises(InputError, match=f"no {kind} there"):
        require_whole(folder, kind)
    folder.mkdir()
    for name in WHOLE_FILES[kind][:-1]:
        (folder / name).write_text("x")
    with pytest.raises(InputError, match=f"is an incomplete {kind}.*Fix: rerun"):
        require_whole(folder, kind)
    (folder / WHOLE_FILES[kind][-1]).write_text("x")
    assert require_whole(folder, kind) == folder


def test_a_killed_atomic_folder_writer_leaves_nothing_after_the_next_write(tmp_path):
    target = tmp_path / "bm25" / "coll"
    code = ("import os, sys\nfrom qkrag.atomic import atomic_folder\n"
            f"with atomic_folder({str(target)!r}) as tmp:\n    (tmp / 'half').write_text('x')\n"
            "    os.kill(os.getpid(), 9)\n")
    proc = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    assert proc.returncode == -signal.SIGKILL
    assert [p.name for p in (tmp_path / "bm25").iterdir() if p.name.endswith(".tmp")]  # what a kill leaves
    with atomic_folder(target) as tmp:
        (tmp / "whole").write_text("y")
    assert sorted(p.name for p in (tmp_path / "bm25").iterdir()) == ["coll"]
    with atomic_folder(target) as tmp:  # a live writer's folder (this process) is never taken
        from qkrag.atomic import remove_stale

        assert remove_stale(target) == [] and tmp.exists()
