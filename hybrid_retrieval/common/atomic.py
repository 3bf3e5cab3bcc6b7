"""Atomic writes: a file or a directory appears complete under its final name or not at all.

The one implementation for checkpoints, job records, prefix-cache entries and the converted offline model.
A temporary sits beside its target as ``{name}.tmp-{pid}-{random}``; a process killed mid-write leaves only
that, which :func:`remove_stale_temporaries` deletes once its pid no longer runs. Standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

TMP_MARK = ".tmp-"


def _prefix(target: Path) -> str:
    return f"{target.name}{TMP_MARK}{os.getpid()}-"


def _pid_of(temporary: Path) -> int | None:
    try:
        return int(temporary.name.rsplit(TMP_MARK, 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return None


def remove_stale_temporaries(folder: Path, name: str = "*") -> list[Path]:
    """Delete the temporaries of ``name`` (a glob) in ``folder`` whose writing process is gone; returns them."""
    removed = []
    for tmp in Path(folder).glob(f"{name}{TMP_MARK}*"):
        pid = _pid_of(tmp)
        if pid is None or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
            removed.append(tmp)
        except PermissionError:  # alive, another user's
            continue
    return removed


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and replaces ``path`` (else it is removed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    fd, name = tempfile.mkstemp(prefix=_prefix(path), dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


@contextlib.contextmanager
def atomic_directory(target: str | Path, complete: str) -> Iterator[Path]:
    """Yield a fresh temporary directory to fill; on success it is renamed to ``target``.

    If another process renamed its (identical) copy first, that one is kept and this one dropped, provided
    ``target / complete`` exists (the file that marks an entry complete); a failure removes the temporary."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target.parent, target.name)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(target), dir=target.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / complete).exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MB blocks (downloads are verified and item stores keyed by it)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
