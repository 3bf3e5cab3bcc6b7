"""Cache entries that heal: built by one process, checked before every use, rebuilt when damaged.

The item store (``{cache}/items/{key}/``) and the frozen-prefix cache (``{cache}/prefix/{key}/``) are shared by
every job of a sweep, every DDP rank and every later run, so one damaged entry would break all of them. An entry
is a folder whose LAST file is ``manifest.json``: the size and a content digest of every other file. Before use
the manifest is checked against the files; a folder without one (an interrupted build, or an entry written
before manifests existed) or whose files disagree with it (truncated, overwritten, half-copied) is moved aside
with one warning line and rebuilt, never read.

One process builds an entry; the others wait on a lock (``.{key}.lock`` beside it: ``flock``, which the kernel
releases when its holder dies, so a killed builder never leaves the others waiting). When the builder fails it
leaves its message in ``.{key}.failed`` before releasing the lock, and every process that was waiting for that
build raises the same message at once instead of repeating the build (under DDP: every rank fails within
seconds with rank 0's message). A process that finds no build in progress always builds itself, so a stale
note from an older failure is never reported.

Digests: files up to 64 MiB are hashed whole; larger ones (a 1M-item store, a prefix cache of a large corpus)
by their size and 256 blocks of 64 KiB spread over the file, so a check reads at most 16 MiB per file. That
catches truncation and any damage larger than the gaps; a flipped byte inside a large file can pass.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from hybrid_retrieval.common.atomic import TMP_MARK, atomic_directory
from hybrid_retrieval.common.errors import UserError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FULL_DIGEST_BYTES = 64 << 20
SAMPLE_BLOCKS = 256
BLOCK_BYTES = 64 << 10


class CacheBuildError(UserError):
    """Another process's build of the same cache entry failed while this one waited for it: its message."""


def file_digest(path: Path, size: int) -> str:
    """blake2b of the whole file (small files) or of its size and :data:`SAMPLE_BLOCKS` spread blocks."""
    h = hashlib.blake2b(digest_size=16)
    with Path(path).open("rb") as fh:
        if size <= FULL_DIGEST_BYTES:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
            return h.hexdigest()
        h.update(f"sampled|{size}".encode())
        last = size - BLOCK_BYTES
        for i in range(SAMPLE_BLOCKS):
            fh.seek(i * last // (SAMPLE_BLOCKS - 1))
            h.update(fh.read(BLOCK_BYTES))
    return "sampled:" + h.hexdigest()


def write_manifest(folder: Path) -> dict:
    """Record every file of ``folder`` (sizes and digests) in its manifest, written last: it marks the entry whole."""
    files = {}
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and path.name != MANIFEST:
            size = path.stat().st_size
            files[path.name] = {"size": size, "digest": file_digest(path, size)}
    manifest = {"files": files}
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def entry_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a whole cache entry (None when it is): the first file that disagrees, and how."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
    except FileNotFoundError:
        return f"no {MANIFEST} (an interrupted build, or an entry from before manifests)"
    except (json.JSONDecodeError, KeyError, TypeError):
        return f"{MANIFEST} is not valid"
    for name, want in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != want["size"]:
            return f"{name} has {size:,} bytes, the manifest says {want['size']:,}"
        if file_digest(path, size) != want["digest"]:
            return f"{name} does not match its digest"
    return None


@contextlib.contextmanager
def _lock(target: Path) -> Iterator[float | None]:
    """Hold the entry's lock; yields None when it was free, else the time this process began to wait."""
    lock_path = target.parent / f".{target.name}.lock"
    with lock_path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            waited_since = None
        except BlockingIOError:
            waited_since = time.time()
            log.info("waiting for another process to build %s", target)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield waited_since
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _discard(target: Path) -> None:
    """Move a damaged entry out of the way (renamed as a temporary first, so a crash mid-delete is cleaned later)."""
    aside = target.with_name(f"{target.name}{TMP_MARK}{os.getpid()}-damaged")
    os.rename(target, aside)
    shutil.rmtree(aside, ignore_errors=True)


def ensure_entry(target: str | Path, build: Callable[[Path], None], what: str) -> Path:
    """The whole cache entry at ``target``, made by ``build(folder)`` (which fills a fresh folder) when it is
    missing or damaged. One process builds; the others wait for it and use its entry, or raise its error."""
    target = Path(target)
    if entry_problem(target) is None:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    failed = target.parent / f".{target.name}.failed"
    with _lock(target) as waited_since:
        problem = entry_problem(target)  # another process may have built it while this one waited
        if problem is None:
            return target
        if waited_since is not None and failed.exists():
            note = json.loads(failed.read_text())
            if note["time"] >= waited_since - 1.0:
                raise CacheBuildError(f"{note['message']} (the {what} build of process {note['pid']}, waited for)")
        failed.unlink(missing_ok=True)
        if target.exists():
            log.warning("%s %s is damaged (%s): rebuilding it", what, target, problem)
            _discard(target)
        try:
            with atomic_directory(target, complete=MANIFEST) as tmp:
                build(tmp)
                write_manifest(tmp)
        except Exception as err:
            note = {"time": time.time(), "pid": os.getpid(), "message": str(err) or type(err).__name__}
            failed.write_text(json.dumps(note))
            raise
    return target
