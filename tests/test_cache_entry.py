"""Cache entries that heal (hybrid_retrieval/common/cache_entry.py): a manifest written last and checked before use, a
damaged entry rebuilt with one warning and never read, one builder while the others wait, and a failed build
reported at once to the processes that waited for it. Real processes where processes matter."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hybrid_retrieval.common import cache_entry
from hybrid_retrieval.common.cache_entry import MANIFEST, CacheBuildError, ensure_entry, entry_problem, write_manifest
from hybrid_retrieval.common.errors import DataFormatError
from hybrid_retrieval.data.item_store import build_store
from tests.helpers import results_of_processes
from tests.test_item_store import _flat, _jsonl

SPAWN = multiprocessing.get_context("spawn")


def _entries(folder: Path) -> list[str]:
    """Entry folders (not the hidden .{key}.lock / .{key}.failed beside them)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_the_manifest_finds_truncation_and_changed_bytes_in_small_and_sampled_files(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_entry, "FULL_DIGEST_BYTES", 1 << 20)  # files above 1 MiB are sampled
    folder = tmp_path / "entry"
    folder.mkdir()
    small, big = folder / "meta.json", folder / "states.bin"
    small.write_text('{"n": 3}')
    big.write_bytes(np.random.default_rng(0).bytes(3 << 20))
    manifest = write_manifest(folder)
    assert manifest["files"]["states.bin"]["digest"].startswith("sampled:")
    assert not manifest["files"]["meta.json"]["digest"].startswith("sampled:")
    assert entry_problem(folder) is None
    data = big.read_bytes()
    big.write_bytes(data[:-1])
    assert entry_problem(folder) == f"states.bin has {len(data) - 1:,} bytes, the manifest says {len(data):,}"
    big.write_bytes(data[:4096] + bytes(cache_entry.BLOCK_BYTES) + data[4096 + cache_entry.BLOCK_BYTES :])  # same size
    assert entry_problem(folder) == "states.bin does not match its digest"
    big.write_bytes(data)
    small.write_text('{"n": 4}')
    assert entry_problem(folder) == "meta.json does not match its digest"
    small.unlink()
    assert entry_problem(folder) == "meta.json is missing"
    (folder / MANIFEST).unlink()
    assert entry_problem(folder).startswith("no manifest.json")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "no-manifest"])
def test_a_damaged_item_store_is_rebuilt_with_one_warning_and_never_read(tmp_path, caplog, damage):
    src = _jsonl(tmp_path / "train.jsonl")
    first = build_store(src, root=tmp_path / "cache")
    want = _flat(first)
    arrow = first.folder / "items.arrow"
    size = arrow.stat().st_size
    del first  # the memory map
    if damage == "truncated":  # a copy or a disk that stopped half way
        with arrow.open("r+b") as fh:
            fh.truncate(size // 2)
    elif damage == "garbage":  # same size, other bytes
        arrow.write_bytes(b"\0" * size)
    else:  # an entry from before manifests (or a build killed between its last file and the manifest)
        (arrow.parent / MANIFEST).unlink()
    with caplog.at_level(logging.WARNING, logger="hybrid_retrieval.common.cache_entry"):
        again = build_store(src, root=tmp_path / "cache")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "item store" in warnings[0] and "rebuilding it" in warnings[0]
    assert {"truncated": "bytes, the manifest says", "garbage": "does not match its digest", "no-manifest": "no manifest"}[
        damage
    ] in warnings[0]
    assert _flat(again) == want and entry_problem(again.folder) is None
    assert _entries(tmp_path / "cache") == [again.folder.name]  # the damaged copy is gone, no temporary left


def test_a_damaged_prefix_cache_entry_is_rebuilt(tiny_encoder_factory, tmp_path, monkeypatch, caplog):
    from hybrid_retrieval.models import prefix_cache as pc

    monkeypatch.setenv("HYBRID_RETRIEVAL_CACHE", str(tmp_path / "cache"))

    enc = tiny_encoder_factory(train_layers=1, prefix_cache=True)
    ids = enc.token_ids(["a river city", "the king of music", "paper science"] * 4, "passage")
    first = pc.load_or_build(enc, ids, "passage", progress=False)
    want = np.asarray(first.states).copy()
    states = first.path / "states.bin"
    del first
    with states.open("r+b") as fh:
        fh.truncate(states.stat().st_size - 64)
    with caplog.at_level(logging.WARNING, logger="hybrid_retrieval.common.cache_entry"):
        again = pc.load_or_build(enc, ids, "passage", progress=False)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.startswith("prefix cache ") and "states.bin has" in warning and "rebuilding it" in warning
    assert np.array_equal(np.asarray(again.states), want)


def _store_worker(src, root, log_file, barrier, out_q):
    """Build one item store from a second process; count the builds in ``log_file``."""
    from hybrid_retrieval.data import item_store

    write = item_store._write_table

    def slow_counted_write(*args, **kwargs):
        with open(log_file, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        time.sleep(1.5)  # long enough that the other process arrives while this one builds
        return write(*args, **kwargs)

    item_store._write_table = slow_counted_write
    barrier.wait(timeout=120)
    store = item_store.build_store(src, root=root)
    out_q.put((str(store.folder), _flat(store)))


@pytest.mark.slow
def test_two_processes_building_one_item_store_at_once_build_it_once_and_both_use_it(tmp_path):
    src = _jsonl(tmp_path / "train.jsonl")
    log_file = tmp_path / "builds.txt"
    barrier = SPAWN.Barrier(2)
    got = results_of_processes(_store_worker, [(src, tmp_path / "cache", log_file, barrier)] * 2)
    assert len(log_file.read_text().split()) == 1  # one build; the other process waited and read it
    assert got[0] == got[1] and got[0][1] == _flat(build_store(src, root=tmp_path / "cache"))
    assert _entries(tmp_path / "cache") == [Path(got[0][0]).name]


def _guard_worker(store_folder, cache, log_file, barrier, out_q):
    """The zero-shot guard's training keys of one store, from a second process; count the builds in ``log_file``."""
    os.environ["HYBRID_RETRIEVAL_CACHE"] = str(cache)
    from hybrid_retrieval.data import guard
    from hybrid_retrieval.data.item_store import ItemStore

    keys_of = guard._keys_of_store

    def slow_counted(*args, **kwargs):
        with open(log_file, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        time.sleep(1.5)  # the other process arrives while this one builds
        return keys_of(*args, **kwargs)

    guard._keys_of_store = slow_counted
    barrier.wait(timeout=120)
    keys = guard.train_keys(ItemStore(store_folder))
    out_q.put({k: v.tolist() for k, v in keys.items()})


@pytest.mark.slow
def test_two_processes_reading_one_stores_guard_keys_build_them_once(tmp_path):
    """What DDP ranks and a parallel sweep's jobs do at start-up: one computes the store's guard keys, the others
    wait and read the same keys (the list path's hashes)."""
    from hybrid_retrieval.data.guard import _keys_of_items
    from hybrid_retrieval.data.pairs import load_jsonl_items

    src = _jsonl(tmp_path / "train.jsonl")
    store = build_store(src, root=tmp_path / "cache" / "items")
    log_file = tmp_path / "builds.txt"
    barrier = SPAWN.Barrier(2)
    got = results_of_processes(_guard_worker, [(store.folder, tmp_path / "cache", log_file, barrier)] * 2)
    assert len(log_file.read_text().split()) == 1
    expected = {k: v.tolist() for k, v in _keys_of_items(load_jsonl_items(src)).items()}
    assert got[0] == got[1] == expected


def _failing_builder(target, started):
    def build(folder):
        Path(started).write_text("building")
        time.sleep(2.0)
        raise DataFormatError("train.jsonl", "line 7", "one JSON object per line")

    try:
        ensure_entry(target, build, "item store")
    except DataFormatError:
        os._exit(2)
    os._exit(0)


def test_a_failed_build_fails_every_process_that_waited_for_it_at_once_with_its_message(tmp_path):
    """What DDP ranks and parallel sweep jobs see when rank 0 (the builder) fails: its message, seconds later,
    without repeating the build (before, the other ranks waited up to 3,600 s)."""
    target, started = tmp_path / "cache" / "k", tmp_path / "started"
    builder = SPAWN.Process(target=_failing_builder, args=(target, started))
    builder.start()
    deadline = time.monotonic() + 120
    while not started.exists():
        assert time.monotonic() < deadline and builder.is_alive()
        time.sleep(0.05)
    ran = []
    t0 = time.monotonic()
    with pytest.raises(CacheBuildError) as err:
        ensure_entry(target, ran.append, "item store")
    waited = time.monotonic() - t0
    builder.join(timeout=60)
    assert builder.exitcode == 2
    assert str(err.value).startswith("train.jsonl: line 7: one JSON object per line (the item store build of process ")
    assert ran == [] and waited < 30  # the builder sleeps 2 s; nothing is rebuilt here
    assert not target.exists() and _entries(tmp_path / "cache") == []
    # Later, with no build in progress, the old note does not stand in the way: this process builds itself.
    ensure_entry(target, lambda folder: (folder / "x").write_text("ok"), "item store")
    assert (target / "x").read_text() == "ok" and entry_problem(target) is None
    assert not (tmp_path / "cache" / ".k.failed").exists()


def test_the_failure_note_names_the_builder(tmp_path):
    def build(folder):
        raise DataFormatError("a.jsonl", "line 1", "x")

    with pytest.raises(DataFormatError):
        ensure_entry(tmp_path / "k", build, "item store")
    note = json.loads((tmp_path / ".k.failed").read_text())
    assert note["pid"] == os.getpid() and note["message"] == "a.jsonl: line 1: x"


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["lightning", "srun"])
def test_under_ddp_a_bad_training_file_fails_every_rank_in_seconds_with_one_line(tiny_data, tiny_model_dir, tmp_path, launcher):
    """The training file's last line is cut short. Lightning's launcher starts rank 1 after rank 0's preflight,
    which fails first. A cluster launcher (srun; torchrun without its agent killing the peers) starts every rank
    at once as its own process, so one rank builds the item store while the other waits for it: that one fails
    with the builder's message as soon as the build fails (it used to wait 3,600 s for an entry never written)."""
    from tests.conftest import REPO
    from tests.test_train_e2e import tiny_overrides

    n = 300_000  # ~70 MB, a build of ~5 s: the later rank arrives while the first builds
    src = _jsonl(tmp_path / "train.jsonl", n=n)
    with src.open("r+b") as fh:  # the last line cut short
        fh.truncate(src.stat().st_size - 6)
    run_dir = tmp_path / "run"
    args = [*tiny_overrides(tiny_data, tiny_model_dir, run_dir), "trainer=ddp_cpu", "logger=none"]
    args += ["data.train.format=jsonl", f"data.train.path={src}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYBRID_RETRIEVAL_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    ranks = [{}] if launcher == "lightning" else [{"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2"} for r in (0, 1)]
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "hybrid_retrieval.train", *args],
            cwd=tmp_path,
            env={**env, **rank_env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29533"} if rank_env else env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank_env in ranks
    ]
    stderrs = [p.communicate(timeout=600)[1] for p in procs]
    took = time.monotonic() - t0
    expected = f"error: {src}: line {n}: one JSON object per line"
    for p, err in zip(procs, stderrs, strict=True):
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert p.returncode == 2 and len(errors) == 1 and errors[0].startswith(expected), err[-3000:]
        assert "Traceback" not in err, err[-3000:]
    if launcher == "srun":  # one rank built, the other waited for it and reports the builder's message
        assert sum("(the item store build of process" in err for err in stderrs) == 1, stderrs
    assert took < 240 and not run_dir.exists()
    assert _entries(tmp_path / "cache" / "items") == []


@pytest.mark.slow
def test_a_joblib_sweep_of_two_parallel_jobs_sharing_one_item_store_and_one_prefix_cache(tiny_data, tiny_model_dir, tmp_path):
    """``hydra/launcher=joblib n_jobs=2``: two jobs start together on the same training file and frozen prefix, so
    they build the same item-store entry and the same prefix-cache entries at once. Each entry is built once (one
    job waits for the other), and every job's record equals the record of the same sweep run one job at a time."""
    from tests.conftest import REPO
    from tests.test_train_e2e import _records, _study_args, run_cli

    src = _jsonl(tmp_path / "train.jsonl", n=60)
    records = {}
    for launcher in ("basic", "joblib"):
        cache = tmp_path / f"cache-{launcher}"
        args = _study_args(tiny_data, tiny_model_dir, tmp_path, tmp_path / launcher, tmp_path / f"results-{launcher}")
        args = [a for a in args if not a.startswith(("data.batch_size=", "data.train.root="))]
        args += ["data.batch_size=4", "data.train.format=jsonl", f"data.train.path={src}", "model.encoder.prefix_cache=true"]
        if launcher == "joblib":
            args += ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
        env = {**os.environ, "PYTHONPATH": str(REPO), "HYBRID_RETRIEVAL_CACHE": str(cache)}
        proc = run_cli(args, tmp_path, multirun=True, env=env, timeout=900)
        assert "[sweep] 2/2 jobs done (0 failed, 0 skipped)" in proc.stdout, proc.stdout[-3000:]
        records[launcher] = _records(tmp_path / f"results-{launcher}")
        assert len(_entries(cache / "items")) == 1 and entry_problem(cache / "items" / _entries(cache / "items")[0]) is None
        prefix = _entries(cache / "prefix")
        assert prefix and all(entry_problem(cache / "prefix" / name) is None for name in prefix)
        assert not [p for p in cache.rglob("*") if ".tmp-" in p.name]  # nothing half-built left
        if launcher == "joblib":  # the same entries as the one-at-a-time sweep built
            assert prefix == _entries(tmp_path / "cache-basic" / "prefix")
    assert records["joblib"].keys() == records["basic"].keys() and len(records["basic"]) == 2
    for name, rec in records["joblib"].items():
        ref = records["basic"][name]
        assert rec["status"] == ref["status"] == "ok" and rec["steps"] == ref["steps"] and rec["sampling"] == ref["sampling"]
        for k in ("val/mono/map", "val/cross/map", "val/multi/map", "val/multi/rank_distance", "train/loss"):
            assert abs(rec["metrics"][k] - ref["metrics"][k]) <= 1e-6, (name, k)
