"""Benchmarks that must keep running where they cannot be measured: benchmarks/gpu_throughput.py's CPU dry run
(the same code as on a GPU, tiny configs) and its equal-work check."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_gpu_benchmark_dry_run_on_the_cpu(tmp_path):
    pytest.importorskip("sentence_transformers")
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, str(REPO / "benchmarks/gpu_throughput.py"), "--cpu-dry-run", "--models", "e5-small", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu (dry run)" and result["bf16_matmul_peak_tflops"] > 0
    rows = {r["batch"]: r for r in result["settings"]}
    assert rows[8]["chunk"] is None and rows[32]["chunk"] == 8  # plain MNRL vs CachedMNRL
    for r in rows.values():
        assert r["ours_pairs_per_s"] > 0 and r["theirs_pairs_per_s"] > 0 and 0 < r["ours_mfu"] < 1
        assert r["ratio"] == pytest.approx(r["ours_pairs_per_s"] / r["theirs_pairs_per_s"])
        assert r["loss_check"]["abs_diff"] <= 1e-4, r["loss_check"]  # the same loss on the same batch and weights
    assert result["encode"][0]["texts"] == 64 and result["encode"][0]["texts_per_s"] > 0
