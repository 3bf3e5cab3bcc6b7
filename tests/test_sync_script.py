"""scripts/sync_study_records.sh: copies only new, valid records from a study clone and commits them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "sync_study_records.sh"
JOBS = "docs/results/batch_size_study/jobs"


ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=ENV, check=True, capture_output=True, text=True).stdout


def _sync(repo: Path, clone: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(repo / "scripts" / SCRIPT.name), str(clone)], env=ENV, capture_output=True, text=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_sync_copies_new_valid_records_and_commits_them(tmp_path):
    repo, clone = tmp_path / "main", tmp_path / "study"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "scripts")
    (repo / JOBS).mkdir(parents=True)
    (repo / JOBS / "old.json").write_text(json.dumps({"status": "ok", "v": 1}))
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "init")
    (clone / JOBS).mkdir(parents=True)
    (clone / JOBS / "old.json").write_text(json.dumps({"status": "ok", "v": 2}))  # differs: kept as committed
    (clone / JOBS / "a.json").write_text(json.dumps({"status": "ok"}))
    (clone / JOBS / "b.json").write_text(json.dumps({"status": "failed"}))
    (clone / JOBS / "torn.json").write_text('{"status": "o')  # not JSON: skipped
    (clone / JOBS / ".c.json.tmp-12").write_text("{}")  # a record being written: not a *.json name
    run = _sync(repo, clone)
    assert run.returncode == 0, run.stderr
    assert "committed 2 new record(s), 3 in" in run.stdout
    assert "old.json differs" in run.stderr and "torn.json is not valid JSON" in run.stderr
    assert json.loads((repo / JOBS / "old.json").read_text())["v"] == 1
    assert not (repo / JOBS / "torn.json").exists()
    assert _git(repo, "log", "-1", "--format=%s").strip() == "study: 2 more job record(s) (3 in jobs/)"
    assert sorted(_git(repo, "show", "--name-only", "--format=", "HEAD").split()) == [f"{JOBS}/a.json", f"{JOBS}/b.json"]
    assert _git(repo, "status", "--porcelain").strip() == ""
    again = _sync(repo, clone)
    assert again.returncode == 0 and "no new records" in again.stdout
    assert _git(repo, "rev-list", "--count", "HEAD").strip() == "2"
    missing = _sync(repo, tmp_path)
    assert missing.returncode == 2 and "no records folder" in missing.stderr


WATCH = SCRIPT.with_name("watch_study.sh")
FULL = "docs/results/full_ft_study"
FAKE_REPORT = """import pathlib, sys
out = pathlib.Path(sys.argv[sys.argv.index("--out") + 1])
n = len(list(pathlib.Path(sys.argv[sys.argv.index("--full") + 1]).glob("*.json")))
(out / "regimes.md").write_text(f"{n} records\\n")
"""


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_watch_commits_records_and_report_together_and_leaves_the_readme_alone(tmp_path):
    repo, clone = tmp_path / "main", tmp_path / "study"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "scripts")
    shutil.copy(WATCH, repo / "scripts")
    (repo / "scripts" / "full_ft_study_report.py").write_text(FAKE_REPORT)  # stands in for the real report
    (repo / FULL / "jobs").mkdir(parents=True)
    (repo / FULL / "README.md").write_text("readme\n")
    (repo / FULL / "regimes.md").write_text("0 records\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "init")
    (repo / FULL / "README.md").write_text("readme, being edited\n")  # work in progress: not the watcher's to commit
    (clone / FULL / "jobs").mkdir(parents=True)
    for name in ("a", "b"):
        (clone / FULL / "jobs" / f"{name}.json").write_text(json.dumps({"status": "ok"}))
    env = {**ENV, "ROUNDS": "1", "INTERVAL": "0"}
    run = subprocess.run(["bash", str(repo / "scripts" / WATCH.name), str(clone)], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "report regenerated in" in run.stdout
    assert _git(repo, "rev-list", "--count", "HEAD").strip() == "2"  # one commit: the records and their report
    changed = sorted(_git(repo, "show", "--name-only", "--format=", "HEAD").split())
    assert changed == [f"{FULL}/jobs/a.json", f"{FULL}/jobs/b.json", f"{FULL}/regimes.md"]
    assert _git(repo, "show", f"HEAD:{FULL}/regimes.md") == "2 records\n"
    assert _git(repo, "status", "--porcelain").strip() == f"M {FULL}/README.md"
