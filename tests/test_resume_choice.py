"""Which checkpoint resume=true continues from (training/preemption.newest_last_checkpoint)."""

from __future__ import annotations

import os

from hybrid_retrieval.training.preemption import newest_last_checkpoint


def _ckpt(folder, name, mtime):
    path = folder / name
    path.write_bytes(b"x")
    os.utime(path, (mtime, mtime))
    return path


def test_a_newer_last_v1_wins_over_a_stale_last_ckpt(tmp_path):
    """The layout the #40 study met: last.ckpt -> step 22 (an older version's SIGTERM), last-v1.ckpt -> step 160."""
    _ckpt(tmp_path, "resume-step22.ckpt", 1_000)
    _ckpt(tmp_path, "resume-step160.ckpt", 2_000)
    (tmp_path / "last.ckpt").symlink_to("resume-step22.ckpt")
    (tmp_path / "last-v1.ckpt").symlink_to("resume-step160.ckpt")
    assert newest_last_checkpoint(tmp_path).resolve().name == "resume-step160.ckpt"


def test_last_ckpt_when_it_is_the_newest_or_the_only_one(tmp_path):
    _ckpt(tmp_path, "resume-step5.ckpt", 1_000)
    _ckpt(tmp_path, "resume-step9.ckpt", 2_000)
    (tmp_path / "last.ckpt").symlink_to("resume-step9.ckpt")
    (tmp_path / "last-v1.ckpt").symlink_to("resume-step5.ckpt")
    assert newest_last_checkpoint(tmp_path).name == "last.ckpt"
    (tmp_path / "last-v1.ckpt").unlink()
    assert newest_last_checkpoint(tmp_path).name == "last.ckpt"


def test_same_target_prefers_last_ckpt_and_ignores_dangling_links_and_other_names(tmp_path):
    _ckpt(tmp_path, "resume-step4.ckpt", 1_000)
    _ckpt(tmp_path, "last_good_model.ckpt", 9_000)  # not a last link: a user's file that starts with "last"
    (tmp_path / "last.ckpt").symlink_to("resume-step4.ckpt")
    (tmp_path / "last-v1.ckpt").symlink_to("resume-step4.ckpt")
    (tmp_path / "last-v2.ckpt").symlink_to("resume-step99.ckpt")  # dangling
    assert newest_last_checkpoint(tmp_path).name == "last.ckpt"


def test_no_checkpoint_folder_or_no_link(tmp_path):
    assert newest_last_checkpoint(tmp_path / "missing") is None
    _ckpt(tmp_path, "resume-step4.ckpt", 1_000)
    assert newest_last_checkpoint(tmp_path) is None
