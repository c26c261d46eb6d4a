"""Safe file writes: atomic replacement and one writer at a time.

`atomic_open` writes to a temporary file beside the target, fsyncs, then renames over it: a reader (or a re-run after
a kill) sees either the old file or the new one, never half of one. `file_lock` holds an exclusive advisory lock
(flock) on a lock file, so two processes never write one resource (a Chroma collection) at once; the kernel drops the
lock when its holder dies, so a killed writer never leaves a stale lock behind. `atomic_folder` replaces a whole
folder (one a library saves into, like a BM25 index) the same way: complete or absent, never half-written.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from qkrag.errors import fail


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; results and figures are meant to be read by others
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


#: What each kind of qkrag output leaves at the top of its folder (file names owned by pairs.store, projection.model,
#: bench and Chroma): enough to tell that a folder holds another kind of run before writing into it.
KIND_MARKERS = {"pairs folder": ("pairs.parquet", "journal.jsonl"), "projection": ("model.safetensors",),
                "bench report": ("bench.json",), "BEIR collection": ("corpus.jsonl",),
                "Chroma database": ("chroma.sqlite3",)}


#: What a whole folder of each kind holds, as its writer leaves it: every file named here, the last written last
#: (pairs.store writes stats.json last, a BM25 index its manifest last; a projection is replaced as a whole).
WHOLE_FILES = {"pairs folder": ("pairs.parquet", "stats.json"), "projection": ("model.safetensors", "config.json"),
               "BM25 index": ("qkrag-bm25.json",)}
REBUILD = {"pairs folder": "rerun `qkrag generate ... --out` into it (it resumes)",
           "projection": "rerun `qkrag train ... --out` into it",
           "BM25 index": "rerun `qkrag index DATA --hybrid` (same --collection/--path/--host)"}


def require_whole(folder: str | os.PathLike[str], kind: str) -> Path:
    """`folder` when it holds a whole artefact of `kind` (a key of WHOLE_FILES): it exists and has every file its
    writer leaves. The one check every reader of a pairs folder, projection folder or BM25 index goes through; a
    Chroma collection's counterpart is `ChromaIndex.require_complete`. Anything less is one "incomplete" error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise fail(str(folder), f"no {kind} there" if not folder.exists() else "is a file, not a folder",
                   f"pass the folder a finished run wrote, or {REBUILD[kind]}")
    missing = [name for name in WHOLE_FILES[kind] if not (folder / name).is_file()]
    if missing:
        raise fail(str(folder), f"is an incomplete {kind} (no {', '.join(missing)}; its writing was interrupted)",
                   REBUILD[kind])
    return folder


def folder_kind(path: str | os.PathLike[str]) -> str | None:
    """Which kind of qkrag output (or input) `path` holds, by the files at its top; None for anything else."""
    path = Path(path)
    return next((kind for kind, names in KIND_MARKERS.items() if any((path / n).exists() for n in names)), None)


def output_folder(path: str | os.PathLike[str], what: str, kind: str | None = None) -> Path:
    """Create the output folder `path` (and its parents) now, before any expensive work, so a path that is a file or
    cannot be written fails in a second rather than after minutes of training or LLM calls. With `kind` (a key of
    KIND_MARKERS), refuse a folder that holds another kind of run: writing there would mix the two."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise fail(f"{what} {path}", "is a file, not a folder", "pass a folder path (it is created when missing)")
    found = folder_kind(path) if kind and path.is_dir() else None
    if found and found != kind:
        raise fail(f"{what} {path}", f"holds a {found}; writing a {kind} into it would mix the two",
                   f"choose an empty folder, or one that holds a {kind}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".qkrag-write-check-")
        probe.close()
    except OSError as err:
        raise fail(f"{what} {path}", f"cannot be written ({err.strerror})",
                   "choose a folder you can write to") from None
    return path


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


# Locks this process holds, by path: flock conflicts between two descriptors of one process too, so a nested
# `file_lock` on a path already held here (build_index inside a caller's lock) just counts instead of deadlocking.
_held: dict[str, int] = {}
_held_guard = threading.Lock()


@contextmanager
def file_lock(path: str | os.PathLike[str], timeout: float, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if needed) for the with-block. Waits up to `timeout` seconds for
    another holder, then raises a `QkragError` naming `what`, the holder's pid and the lock file."""
    key = str(Path(path).resolve())
    with _held_guard:
        if key in _held:
            _held[key] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield
        finally:
            with _held_guard:
                _held[key] -= 1
        return
    fd = _acquire(Path(key), timeout, what)
    with _held_guard:
        _held[key] = 1
    try:
        yield
    finally:
        with _held_guard:
            del _held[key]
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _acquire(path: Path, timeout: float, what: str) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise fail(what, f"cannot create its lock file {path} ({err.strerror})",
                   "check that the folder exists and is writable") from None
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise fail(what, f"another process (pid {holder}) is writing it; waited {timeout:g} s",
                           "let that run finish, then run again (it resumes); or raise the lock timeout. "
                           f"The lock is {path}, released when its holder exits") from None
            time.sleep(0.1)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)  # for the message of whoever waits next
    return fd
@contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside `path` to fill; on success it replaces `path` (and whatever was there).

    A folder cannot be renamed over a non-empty one, so the old folder is first moved aside, then the new one moved
    in, then the old one deleted: a kill in between leaves `path` missing (a reader rebuilds) or complete, never
    half-written. On an exception the temporary folder is removed and `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp"))
    os.chmod(tmp, 0o755)  # mkdtemp makes 0700; saved indexes are meant to be read by others
    try:
        yield tmp
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".old"))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary folders `atomic_folder` left beside `path` when its writer was killed (named
    `.NAME.PID.*.tmp` / `.old`, PID no longer running); a live writer's are left alone. Returns what was removed."""
    path = Path(path)
    removed = []
    for leftover in path.parent.glob(f".{path.name}.*"):
        pid = leftover.name[len(path.name) + 2:].split(".", 1)[0]
        if leftover.suffix in (".tmp", ".old") and leftover.is_dir() and pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(leftover)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True
