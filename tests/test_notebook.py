"""The analysis notebook runs top to bottom (nbclient) on a sweep CSV, and is committed without outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.test_report import fake_job

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "batch_size_study.ipynb"


def test_notebook_is_stripped():
    nb = json.loads(NOTEBOOK.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


def test_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from hybrid_retrieval.report import main as report_main

    sweep = tmp_path / "sweep"
    for n, (batch, alpha, seed) in enumerate((b, a, s) for b in (16, 64) for a in (0.0, 1.0) for s in (0, 1)):
        fake_job(sweep, str(n), batch, alpha, seed, value=0.3 + 0.001 * batch + 0.05 * alpha + 0.01 * seed)
    report_main([str(sweep)])
    monkeypatch.setenv("SWEEP_CSV", str(sweep / "sweep.csv"))
    # The kernel imports this checkout's package even where another copy is installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1 + 2  # curves + one pair-delta heatmap per α
    assert any("clear" in o.get("data", {}).get("text/markdown", "") for o in outputs)
