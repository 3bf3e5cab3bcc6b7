"""The README's commands that take under a minute run exactly as written (from the repository root), and each
of them is still in the README word for word (so this list cannot drift from what users read)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
SHARED = REPO.parent / "shared" / "data"
README = (REPO / "README.md").read_text(encoding="utf-8")
COMMANDS = [
    # (command as in the README, needs ../shared/data)
    (
        "python -m hybrid_retrieval.train +experiment=xquad_r data.train.format=jsonl "
        "data.train.path=examples/parallel_train.jsonl data.batch_size=2 data.eval.max_questions=50 trainer.max_steps=4",
        True,
    ),
    ("python -m hybrid_retrieval.inspect_data --train ../shared/data/mlqa-r --eval ../shared/data/xquad-r --alpha 0 0.5 1", True),
    ("python -m hybrid_retrieval.report --csv docs/results/sweep.csv --out /tmp/again", False),
]


@pytest.mark.parametrize(("command", "needs_data"), COMMANDS, ids=[c.split()[2] for c, _ in COMMANDS])
def test_readme_command_runs_as_written(command, needs_data, tmp_path):
    assert command in " ".join(README.split()), f"not in the README any more: {command}"
    if needs_data and not (SHARED / "xquad-r").is_dir():
        pytest.skip("needs ../shared/data beside the checkout")
    argv = shlex.split(command)
    argv[0] = sys.executable
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr
