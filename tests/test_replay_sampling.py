"""scripts/replay_sampling.py: a finished job's sampling block rebuilt from its record's overrides alone (no model),
checked field by field against what the job itself recorded; a record the replay does not reproduce is named."""

from __future__ import annotations

import json

import pytest

from tests.conftest import load_script
from tests.test_train_e2e import run_cli, tiny_overrides

replay = load_script("replay_sampling.py")
pytestmark = pytest.mark.slow  # one tiny training run (a subprocess)


def test_a_replay_reproduces_what_a_trained_job_recorded_and_names_a_field_that_differs(
    tiny_data, tiny_model_dir, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    args = [*tiny_overrides(tiny_data, tiny_model_dir, run_dir), "logger=none", "data.sampler.alpha=0.5"]
    run_cli([*args, "data.sampler.alpha_schedule=stratified"], tmp_path)
    path = run_dir / "result.json"
    rec = json.loads(path.read_text())
    assert rec["steps"] == 6 and rec["sampling"]["distinct_pairs"] > 0
    # the record as the grid's were written: without the field the replay is there to add
    del rec["sampling"]["distinct_pairs"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(rec))
    out = tmp_path / "replayed.json"
    assert replay.main([str(old), "--out", str(out)]) == 0
    got = json.loads(out.read_text())[rec["job"]]
    assert got["replayed"] == {"distinct_pairs": json.loads(path.read_text())["sampling"]["distinct_pairs"]}
    assert set(got["fields_checked"]) == set(rec["sampling"]) and {"realised_alpha", "batch_settings"} <= set(
        got["fields_checked"]
    )
    assert f"{len(rec['sampling'])} recorded sampling fields reproduced" in capsys.readouterr().out
    # a record the replay does not match (another seed's batches): refused, the field named, nothing written
    rec["sampling"]["batch_settings"] = {"en-en": 6}
    old.write_text(json.dumps(rec))
    out.unlink()
    assert replay.main([str(old), "--out", str(out)]) == 1
    assert "batch_settings: recorded {'en-en': 6}" in capsys.readouterr().err and not out.exists()
