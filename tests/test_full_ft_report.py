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
                rec["metrics"]["val/multi/rank_distance"] = 100.0 + b / 16 + s  # seed noise, so its families exist
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
    family = lambda title: md.split(f"**{title}**")[1].split("\n**")[0]  # noqa: E731
    # the paper's hybrid gains are set against the strategy families' power, not the batch families'
    assert "The paper's hybrid − baseline gains (+0.003 to +0.005)" in family("top 2 layers, strategy, cross mAP")
    assert "paper's" not in family("top 2 layers, batch, cross mAP")
    assert "| α=0: B 256 − 64 | +12.0 |" in family("top 2 layers, batch, rank dist.")  # ranks: one decimal
    per_pair = md.split("## Per language pair")[1]
    assert "| top 2 layers | 0.5 | 2 | 2 | +0.0100 |" in per_pair  # en→de and de→en, each +0.01 from B=16 to 256
    assert "| full fine-tuning | 1 |" not in per_pair  # its B=256 cell is missing: no Δ, not a partial one
    assert (tmp_path / "out" / "pair_deltas" / "full_ft" / "pair_delta_alpha0.5.png").exists()
    csv = (tmp_path / "out" / "regimes.csv").read_text().splitlines()
    assert len(csv) == 19 and csv[0].startswith("regime,batch_size,alpha,seeds,lr")


def test_a_cell_with_several_learning_rates_is_refused(tmp_path):
    _write(tmp_path / "full", _grid(None, 0.1, seeds=(0,)) + _grid(None, 0.1, seeds=(1,), lr=3e-5))
    _write(tmp_path / "top2", _grid(2, 0.0))
    with pytest.raises(SystemExit, match="several learning rates"):
        report.main(["--full", str(tmp_path / "full"), "--top2", str(tmp_path / "top2"), "--out", str(tmp_path / "out")])


def _control_records(seeds=(0, 1, 2), lr=1.41e-4, skip=()):
    """Top-2 grid records at B=256 and B=1024 (64 steps) and control records at B=256 for 256 steps; cross mAP
    0.55 + 0.004 for B=1024, + 0.002 for the control, + 0.001·seed."""
    grid, control = [], []
    for b, steps, bump in ((256, 64, 0.0), (1024, 64, 0.004), (256, 256, 0.002)):
        for a in (0.0, 0.5, 1.0):
            for s in seeds:
                if (b, steps, a) in skip:
                    continue
                rec = _record("xquad-r", "mlqa-r", b, a, s, cross=0.55 + bump + 0.001 * s, layers=2)
                rec.update(lr=lr, steps=steps, job=f"{rec['job']}-{steps}")
                rec["sampling"].update(pairs=b * steps, distinct_items=1190)
                if steps == 256:
                    rec["passes"] = b * steps / 1190
                (control if steps == 256 else grid).append(rec)
    return grid, control


def test_the_equal_pairs_control_compares_its_own_cells(tmp_path):
    grid, control = _control_records(skip={(256, 256, 1.0)})
    _write(tmp_path / "full", _grid(None, 0.1))
    _write(tmp_path / "top2", _grid(2, 0.0, lr=1.41e-4, skip={(256, a) for a in (0.0, 0.5, 1.0)}) + grid)
    _write(tmp_path / "control", control)
    argv = ["--full", str(tmp_path / "full"), "--top2", str(tmp_path / "top2"), "--out", str(tmp_path / "out")]
    assert report.main([*argv, "--control", str(tmp_path / "control")]) == 0
    md = (tmp_path / "out" / "regimes.md").read_text()
    assert "| 256 × 256 | 0 | 3 | 65,536 | 55.1 | 0.5530 ± 0.0010 |" in md  # passes from the record
    assert "| 1024 × 64 | 0 | 3 | 65,536 | 55.1 | 0.5550 ± 0.0010 |" in md  # passes = pairs / distinct items
    assert "| 256 × 256 | 1 | 0 | — | — |" in md and "Not finished yet: 1 of 9 cells" in md
    equal_pairs = md.split("**control, equal pairs (B=1024×64 − B=256×256), cross mAP**")[1].split("survive")[0]
    assert "| α=0 | +0.0020 |" in equal_pairs and "| α=1 |" not in equal_pairs  # the missing cell: no comparison
    equal_batch = md.split("**control, equal batch (B=256×256 − B=256×64), cross mAP**")[1].split("survive")[0]
    assert "| α=0.5 | +0.0020 |" in equal_batch
    rows = (tmp_path / "out" / "control.csv").read_text().splitlines()
    assert len(rows) == 1 + 24 and rows[0].startswith("cell,batch_size,steps,alpha,seed,pairs,passes")


def test_the_control_refuses_a_second_learning_rate_and_runs_before_its_records(tmp_path):
    grid, control = _control_records()
    _, other_rate = _control_records(seeds=(3,), lr=2.83e-4)
    _write(tmp_path / "full", _grid(None, 0.1))
    _write(tmp_path / "top2", _grid(2, 0.0, lr=1.41e-4, skip={(256, a) for a in (0.0, 0.5, 1.0)}) + grid)
    (tmp_path / "empty").mkdir()
    argv = ["--full", str(tmp_path / "full"), "--top2", str(tmp_path / "top2"), "--out", str(tmp_path / "out")]
    assert report.main([*argv, "--control", str(tmp_path / "empty")]) == 0
    assert "Not finished yet: 3 of 9 cells" in (tmp_path / "out" / "regimes.md").read_text()
    _write(tmp_path / "control", control + other_rate)
    with pytest.raises(SystemExit, match="several learning rates"):
        report.main([*argv, "--control", str(tmp_path / "control")])


def test_the_rate_probe_sits_beside_the_control_and_the_big_batch(tmp_path):
    grid, control = _control_records()
    rate = []
    for rec in control:  # the control's α=0.5 jobs at a quarter of its rate, cross mAP +0.003 (0.556 against 0.555 at B=1024)
        if rec["alpha"] == 0.5:
            new = json.loads(json.dumps(rec)) | {"lr": 1.41e-4 / 4, "job": rec["job"] + "-quarter"}
            new["metrics"]["val/cross/map"] += 0.003
            rate.append(new)
    _write(tmp_path / "full", _grid(None, 0.1))
    _write(tmp_path / "top2", _grid(2, 0.0, lr=1.41e-4, skip={(256, a) for a in (0.0, 0.5, 1.0)}) + grid)
    _write(tmp_path / "control", control)
    argv = ["--full", str(tmp_path / "full"), "--top2", str(tmp_path / "top2"), "--out", str(tmp_path / "out")]
    argv += ["--control", str(tmp_path / "control")]
    _write(tmp_path / "two", rate[:2])  # seeds 0 and 1: compared, the missing seed named
    assert report.main([*argv, "--control-rate", str(tmp_path / "two")]) == 0
    md = (tmp_path / "out" / "regimes.md").read_text().split("### The rate")[1]
    assert "| 256 × 256, 3.53e-05 | 0.5 | 2 | 65,536 | 55.1 | 0.5555 ± 0.0007 |" in md
    assert "Not finished yet: the probe has 2 of 3 seeds at α=0.5." in md
    _write(tmp_path / "rate", rate)
    assert report.main([*argv, "--control-rate", str(tmp_path / "rate")]) == 0
    md = (tmp_path / "out" / "regimes.md").read_text().split("### The rate")[1]
    assert "| 256 × 256, 0.000141 | 0.5 | 3 | 65,536 | 55.1 | 0.5530 ± 0.0010 |" in md  # the control at its own rate
    assert "| 256 × 256, 3.53e-05 | 0.5 | 3 | 65,536 | 55.1 | 0.5560 ± 0.0010 |" in md and "Not finished" not in md
    family = md.split("**rate probe, α=0.5, cross mAP**")[1].split("survive Holm")[0]  # both questions, one Holm family
    assert "| the rate: 256×256 at lr/4 − at lr | +0.0030 |" in family
    assert "| the batch at equal pairs and step size: 1024×64 − 256×256 at lr/4 | -0.0010 |" in family
    assert len((tmp_path / "out" / "control_rate.csv").read_text().splitlines()) == 1 + 3
    rate[0]["lr"] = 1.41e-4  # the control's own rate in the probe's folder: another experiment, refused
    _write(tmp_path / "rate", rate)
    with pytest.raises(SystemExit, match="rate probe: records at"):
        report.main([*argv, "--control-rate", str(tmp_path / "rate")])
    with pytest.raises(SystemExit):  # the probe needs the control it is compared with
        report.main([*argv[:-2], "--control-rate", str(tmp_path / "two")])


def test_the_anchor_sets_a_rerun_beside_its_grid_record(tmp_path):
    grid, _ = _control_records()
    _write(tmp_path / "full", _grid(None, 0.1))
    _write(tmp_path / "top2", _grid(2, 0.0, lr=1.41e-4, skip={(256, a) for a in (0.0, 0.5, 1.0)}) + grid)
    argv = ["--full", str(tmp_path / "full"), "--top2", str(tmp_path / "top2"), "--out", str(tmp_path / "out")]
    anchor = tmp_path / "anchor"
    anchor.mkdir()
    assert report.main([*argv, "--anchor", str(anchor)]) == 0
    assert "Not run yet" in (tmp_path / "out" / "regimes.md").read_text()
    old = next(r for r in grid if r["batch_size"] == 256 and r["alpha"] == 0.5 and r["seed"] == 0)
    new = json.loads(json.dumps(old)) | {"commit": "def4567"}
    new["metrics"]["val/cross/map"] += 0.0003  # 0.5500 → 0.5503
    new["metrics"]["val/en-de/map"] = 0.9  # only in the rerun: not compared
    _write(anchor, [new])
    assert report.main([*argv, "--anchor", str(anchor)]) == 0
    row = (tmp_path / "out" / "regimes.md").read_text().split("### Anchor")[1].splitlines()[-1]
    assert row.startswith(f"| {old['job']} | abc → def4567 | yes | 0.5500 → 0.5503, +0.0003 | 0.4000 → 0.4000, +0.0000 |")
    assert row.endswith("| 0.0003 over 3 | 0.0010 (3 seeds) |")  # mono / cross / multi mAP; seeds 0, 1, 2 of the cell
    new["sampling"]["batch_settings"] = {"en-en": 11, "de-de": 9, "en-de": 44}
    _write(anchor, [new])
    assert report.main([*argv, "--anchor", str(anchor)]) == 0
    assert f"| {old['job']} | abc → def4567 | no |" in (tmp_path / "out" / "regimes.md").read_text()


def test_the_committed_report_recomputes_from_the_committed_records(tmp_path, capsys):
    """docs/results/full_ft_study/regimes.md and its CSVs are exactly what the records give (the README's command):
    a new record, or a change to the report, must regenerate them in the same change."""
    from tests.conftest import REPO

    out, ft, bs = tmp_path / "again", REPO / "docs/results/full_ft_study", REPO / "docs/results/batch_size_study"
    argv = ["--full", str(ft / "jobs"), "--top2", str(bs / "jobs"), "--control", str(bs / "control"), "--out", str(out)]
    argv += ["--control-rate", str(bs / "control_rate"), "--anchor", str(bs / "anchor")]
    assert report.main(argv) == 0
    for name in ("regimes.md", "regimes.csv", "control.csv", "control_rate.csv", "pair_deltas.csv"):
        assert (out / name).read_text(encoding="utf-8") == (ft / name).read_text(encoding="utf-8"), name
