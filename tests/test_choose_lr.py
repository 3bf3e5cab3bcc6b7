"""scripts/choose_lr.py: the full fine-tuning study's rate per batch size, by the rule fixed before the dev jobs."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO, load_script

choose_lr = load_script("choose_lr.py")


def _record(tmp_path, batch, lr, score, validated_on="xquad-r-dev", status="ok"):
    record = {
        "status": status,
        "job": f"B{batch}-lr{lr}",
        "batch_size": batch,
        "lr": lr,
        "validated_on": validated_on,
        "metrics": {"val/multi/map": score},
    }
    (tmp_path / f"B{batch}-lr{lr}-{validated_on}.json").write_text(json.dumps(record))


def test_best_dev_score_wins_and_near_ties_go_to_the_smaller_rate(tmp_path):
    for lr, score in [(1e-5, 0.50), (3e-5, 0.5995), (1e-4, 0.600), (3e-4, 0.55)]:
        _record(tmp_path, 16, lr, score)
    for lr, score in [(1e-5, 0.50), (3e-5, 0.58), (1e-4, 0.61)]:
        _record(tmp_path, 64, lr, score)
    _record(tmp_path, 64, 3e-4, 0.99, validated_on="mlqa-r")  # an evaluation-benchmark score: never counts
    _record(tmp_path, 64, 1e-3, 0.99, status="failed")
    chosen = choose_lr.choose(choose_lr.load_dev_records(tmp_path))
    assert chosen[16]["lr"] == 3e-5 and not chosen[16]["top_edge"]  # 0.5995 is within 0.001 of 0.600
    assert chosen[64]["lr"] == 1e-4 and chosen[64]["top_edge"]
    assert set(chosen[64]["scores"]) == {1e-5, 3e-5, 1e-4}


def test_cli_prints_one_rate_for_a_batch_and_names_what_is_missing(tmp_path, capsys):
    _record(tmp_path, 16, 1e-4, 0.5)
    assert choose_lr.main(["--records", str(tmp_path), "--batch", "16"]) == 0
    assert capsys.readouterr().out.strip() == "0.0001"
    with pytest.raises(SystemExit, match="no dev record for batch size 64"):
        choose_lr.main(["--records", str(tmp_path), "--batch", "64"])
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(SystemExit, match=r"broken\.json"):
        choose_lr.main(["--records", str(tmp_path)])


def test_committed_dev_records_choose_a_rate_per_batch():
    chosen = choose_lr.choose(choose_lr.load_dev_records(REPO / "docs/results/full_ft_study/dev"))
    assert set(chosen) == {16, 64, 256}
    for row in chosen.values():
        assert row["val/multi/map"] == max(row["scores"].values()) or not row["top_edge"]
