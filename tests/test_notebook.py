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


def _run_notebook(csv: Path, monkeypatch) -> list:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("SWEEP_CSV", str(csv))
    # The kernel imports this checkout's package even where another copy is installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs


def test_notebook_executes(tmp_path, monkeypatch):
    pytest.importorskip("nbclient")
    from hybrid_retrieval.report import main as report_main

    sweep = tmp_path / "sweep"
    for n, (batch, alpha, seed) in enumerate((b, a, s) for b in (16, 64) for a in (0.0, 1.0) for s in (0, 1)):
        fake_job(sweep, str(n), batch, alpha, seed, value=0.3 + 0.001 * batch + 0.05 * alpha + 0.01 * seed)
    report_main([str(sweep)])
    outputs = _run_notebook(sweep / "sweep.csv", monkeypatch)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1 + 2  # curves + one pair-delta heatmap per α
    assert any("clear" in o.get("data", {}).get("text/markdown", "") for o in outputs)


def test_notebook_executes_on_a_study_csv(tmp_path, monkeypatch):
    """A CSV from job records (report --records): one group per direction, main grid only."""
    pytest.importorskip("nbclient")
    from hybrid_retrieval.report import study_report
    from tests.test_sweeps import _record

    res = tmp_path / "jobs"
    res.mkdir()
    for train, evald in (("xquad-r", "mlqa-r"), ("mlqa-r", "xquad-r")):
        for batch in (16, 64):
            for alpha in (0.0, 0.5, 1.0):
                for seed in (0, 1):
                    rec = _record(train, evald, batch, alpha, seed, 0.5 + 0.001 * batch + 0.01 * seed)
                    (res / f"{train}-{batch}-{alpha}-{seed}.json").write_text(json.dumps(rec))
    side = _record("xquad-r", "mlqa-r", 64, 0.25, 0, 0.9)  # a side study: not in the groups
    (res / "side.json").write_text(json.dumps(side))
    study_report(res, tmp_path / "out", baselines={"mlqa-r": {"cross/map": 0.4}})
    outputs = _run_notebook(tmp_path / "out" / "sweep.csv", monkeypatch)
    text = "".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in outputs)
    assert "'train mlqa-r → eval xquad-r': 12" in text and "'train xquad-r → eval mlqa-r': 12" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2 * (1 + 3)  # per direction: curves + one pair-delta heatmap per α
    markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "| 64 | hybrid (α=0.5) |" in markdown and "16 → 64 | +0.0480 | [" in markdown
