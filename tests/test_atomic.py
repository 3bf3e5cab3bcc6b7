"""hybrid_retrieval.common.atomic: complete under the final name or not there; killed writers' leftovers cleaned."""

from __future__ import annotations

import os

import pytest

from hybrid_retrieval.common.atomic import atomic_directory, atomic_file, remove_stale_temporaries, write_text_atomic

DEAD_PID = 999_999_999  # above pid_max: no such process


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = write_text_atomic(tmp_path / "record.json", "old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_stale_temporaries_of_dead_writers_go_live_ones_stay(tmp_path):
    dead_file = tmp_path / f"last.ckpt.tmp-{DEAD_PID}-x1"
    dead_dir = tmp_path / f"entry.tmp-{DEAD_PID}-x2"
    live = tmp_path / f"last.ckpt.tmp-{os.getppid()}-x3"  # the parent process: alive
    dead_file.write_text("half")
    dead_dir.mkdir()
    live.write_text("being written")
    (tmp_path / "unrelated.tmp-notapid").write_text("?")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted([dead_file.name, dead_dir.name])
    assert live.exists() and (tmp_path / "unrelated.tmp-notapid").exists()
    with atomic_file(tmp_path / "last.ckpt") as tmp:  # writing the target also cleans its own leftovers
        tmp.write_text("new")
    assert (tmp_path / "last.ckpt").read_text() == "new"


def test_a_directory_appears_whole_and_a_racing_copy_keeps_the_first(tmp_path):
    target = tmp_path / "cache" / "key"
    with atomic_directory(target, complete="meta.json") as tmp:
        (tmp / "states.bin").write_bytes(b"1")
        assert not target.exists()
        (tmp / "meta.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["meta.json", "states.bin"]
    with atomic_directory(target, complete="meta.json") as tmp:  # another process's identical build, second
        (tmp / "meta.json").write_text('{"second": true}')
    assert (target / "meta.json").read_text() == "{}" and sorted(p.name for p in target.parent.iterdir()) == ["key"]
    with pytest.raises(ValueError), atomic_directory(tmp_path / "other", complete="meta.json") as tmp:
        raise ValueError("build failed")
    assert not (tmp_path / "other").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
