"""Atomic file output: every file is written to a temporary sibling and renamed into place.

A crash never leaves a half-written file under the final name, so "the file exists" means
"the file is complete".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

STALE_AFTER_S = 24 * 3600  # a temporary of another host is taken as abandoned after this long
_OWNER = re.compile(r"^\.tmp-.*~(?P<host>[^~]+)~(?P<pid>\d+)~")


def _owner_tag() -> str:
    """``~host~pid~``: temporaries say who writes them, so a later run removes only dead writers' files."""
    host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:40] or "host"
    return f"~{host}~{os.getpid()}~"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps the final suffix (libraries that pick a format from the suffix work),
    starts with ``.tmp-`` and carries the writer's host and process id (:func:`remove_stale_temporaries`).
    Errors name ``path``, not the temporary.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".tmp-{final.stem}{_owner_tag()}", suffix=final.suffix, dir=final.parent
        )
    except OSError as err:
        raise OSError(f"{final}: cannot write ({err.strerror or err})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o666 & ~_umask())  # mkstemp creates 0600; outputs get the usual permissions
    try:
        yield tmp
        tmp.replace(final)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if str(tmp) in (str(err.filename), str(err.filename2)):
            raise OSError(f"{final}: cannot write ({err.strerror or err})") from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: str | os.PathLike[str], max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove ``.tmp-*`` files and folders in ``folder`` left by writers that are provably dead: written on
    this host by a process that no longer exists, or (any host) untouched for ``max_age_s``. Live work of
    a concurrent run or a Dask worker elsewhere is never touched. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    host = _owner_tag().split("~")[1]
    removed = []
    for entry in folder.glob(".tmp-*"):
        match = _OWNER.match(entry.name)
        try:  # a store being filled changes its patches/ folder, not its own entry
            touched = max(p.lstat().st_mtime for p in (entry, entry / "patches") if p.exists())
        except (FileNotFoundError, ValueError):
            continue
        age = time.time() - touched
        dead_here = match is not None and match["host"] == host and not _alive(int(match["pid"]))
        if dead_here or age > max_age_s:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    if removed:
        log.info("%s: removed %d temporary file(s) of interrupted runs", folder, len(removed))
    return removed


@contextlib.contextmanager
def exclusive_folder(folder: str | os.PathLike[str], what: str = "a run") -> Iterator[Path]:
    """Hold ``folder/.lock`` for the block, so that a second process writing the same folder fails at
    once with a one-line error instead of interleaving its files. The operating system drops the lock
    when the holder dies, so a killed run never blocks its resume."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path / ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise BlockingIOError(f"{path}: another process is writing {what} here; wait for it or stop it") from None
    try:
        yield path
    finally:
        lock.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, read in 4 MiB pieces."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as UTF-8 JSON with sorted-stable formatting (keys in insertion order)."""
    write_text_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")
