"""data.tokenize=lazy (the default) trains exactly as upfront tokenization did: the same global batches (items,
languages, token ids), the same losses and metrics, with hard negatives and duplicate masking on."""

from __future__ import annotations

import json
import os

from tests.conftest import REPO
from tests.test_train_e2e import run_cli, tiny_overrides


def test_lazy_and_upfront_tokenization_train_identically(tiny_data, tiny_model_dir, tmp_path):
    runs = {}
    for mode in ("lazy", "upfront"):
        run_dir, batches = tmp_path / mode, tmp_path / f"{mode}.jsonl"
        args = [
            *tiny_overrides(tiny_data, tiny_model_dir, run_dir),
            "logger=none",
            f"data.tokenize={mode}",
            "data.hard_negatives=1",
            "model.loss.mask_duplicates=true",
            "trainer.deterministic=true",
            "+callbacks.record._target_=tests.helpers.RecordBatches",
            f"+callbacks.record.path={batches}",
            "+callbacks.record.with_tokens=true",
        ]
        run_cli(args, tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
        runs[mode] = (
            [json.loads(line) for line in batches.read_text().splitlines()],
            json.loads((run_dir / "final_metrics.json").read_text()),
        )
    (lazy_batches, lazy), (up_batches, up) = runs["lazy"], runs["upfront"]
    assert len(lazy_batches) == 6 and lazy_batches == up_batches  # items, languages and token ids, every step
    assert lazy["global_step"] == up["global_step"] == 6
    for key in ("train/loss", "val/mono/map", "val/cross/map", "val/multi/map", "val/multi/rank_distance"):
        assert abs(lazy["metrics"][key] - up["metrics"][key]) <= 1e-6, (key, lazy["metrics"][key], up["metrics"][key])
