"""scripts/full_ft_study_report.py on synthetic records: both regimes in one table, effects per regime with Holm,
unfinished cells listed (never filled in), a cell mixing learning rates refused."""

from __future__ import annotations

import json

import pytest

from tests.conftest import load_script
from tests.test_sweeps import _record

report = load_script("full_ft_study_report.py")


def _write(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    for i, rec in enumerate(records):
        (folder / f"r{i}.json").write_text(json.dumps(rec))


def _grid(layers, shift, seeds=(0, 1, 2), lr=1e-4, skip=()):
    out = []
    for b in (16, 64, 256):
        for a in (0.0, 0.5, 1.0):
            for s in seeds:
                if (b, a) in skip:
                    continue
                rec = _record("xquad-r", "mlqa-r", b, a, s, cross=0.5 + shift + 0.01 * (b == 256) + 0.001 * s, layers=layers)
                rec["lr"] = lr
                out.append(rec)
    return out


def test_both_regimes_side_by_side_with_holm_and_the_missing_cells(tmp_path, capsys):
    _write(tmp_path / "full", _grid(None, 0.1, skip={(256, 1.0)}))
    _write(tmp_path / "top2", _grid(2, 0.0))
    assert report.main(["--full", str(tmp_path / "full"), "--top2", str(tmp_path / "top2"), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "regimes.md").read_text()
    assert "| full fine-tuning | 256 | 1 | — | 0 |" in md  # the unfinished cell: listed, not filled in
    assert "Not finished yet: 1 of 18 cells" in md
    assert "**full fine-tuning, batch, cross mAP**" in md and "**top 2 layers, strategy, cross mAP**" in md
    assert "survive Holm's control" in md and (tmp_path / "out" / "regimes.png").exists()
    csv = (tmp_path / "out" / "regimes.csv").read_text().splitlines()
    assert len(csv) == 19 and csv[0].startswith("regime,batch_size,alpha,seeds,lr")


def test_a_cell_with_several_learning_rates_is_refused(tmp_path):
    _write(tmp_path / "full", _grid(None, 0.1, seeds=(0,)) + _grid(None, 0.1, seeds=(1,), lr=3e-5))
    _write(tmp_path / "top2", _grid(2, 0.0))
    with pytest.raises(SystemExit, match="several learning rates"):
        report.main(["--full", str(tmp_path / "full"), "--top2", str(tmp_path / "top2"), "--out", str(tmp_path / "out")])
