"""The image–text task on the shared training core (hybrid_retrieval/training/core.py): gradient caching gives the
full-batch loss and gradients; 2 processes (gloo) with gathered negatives give one process with the whole batch; a
non-finite loss on ONE rank makes both ranks skip together (never a hang); SIGTERM → resume equals an
uninterrupted run."""

from __future__ import annotations

import functools
import json
import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hybrid_retrieval.models.distributed import all_gather_variable, average_gradients
from hybrid_retrieval.models.grad_cache import cached_backward
from tests.conftest import REPO
from tests.test_distributed import _free_port
from tests.test_train_e2e import run_cli

WORDS = ["red", "green", "blue", "circle", "square", "left", "right", "small", "large", "rot", "grün", "Kreis"]
B, WORLD = 8, 2


def make_module(model_dir, chunk=None, pair_weight=0.5, lock_text=False):
    """A small-CNN (GroupNorm) image tower and a trained tiny text tower; symmetric, learnable-T, duplicate-masking
    InfoNCE; caption→caption pairs weighted ``pair_weight``."""
    from hybrid_retrieval.models.encoder import DualEncoder
    from hybrid_retrieval.models.loss import InfoNCELoss
    from hybrid_retrieval.tasks.image_text.model import ImageTextEncoder, ImageTextModule, ImageTower, TextTower

    torch.manual_seed(0)
    text = TextTower(DualEncoder(name=str(model_dir), max_length=16))
    tower = ImageTower("small_cnn", image_size=16, width=8, out_dim=16, norm="group")
    enc = ImageTextEncoder(tower, text, dim=8, lock_image=False, lock_text=lock_text)
    loss = InfoNCELoss(temperature=0.1, learnable_temperature=True, symmetric=True, mask_duplicates=True)
    optimizer = functools.partial(torch.optim.SGD, lr=0.1)
    return ImageTextModule(enc, loss, optimizer, text_pair_weight=pair_weight, grad_cache={"chunk_size": chunk})


def make_batch(n: int, seed: int = 0, lo: int = 0, hi: int | None = None) -> dict:
    """Rows [lo, hi) of one global batch of ``n`` (so ranks can take their slices of the same batch)."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(n, 3, 16, 16, generator=g) * 2 - 1  # (n, 3, 16, 16)
    pick = torch.randint(0, len(WORDS), (n, 2, 3), generator=g)
    captions = [" ".join(WORDS[int(i)] for i in pick[r, 0]) for r in range(n)]
    pairs = [" ".join(WORDS[int(i)] for i in pick[r, 1]) for r in range(n)]
    hi = n if hi is None else hi
    return {
        "index": torch.arange(n)[lo:hi],
        "pixel_values": pixels[lo:hi],
        "captions": captions[lo:hi],
        "caption_langs": ["en", "de"] * (n // 2),
        "pair_captions": pairs[lo:hi],
        "keys": (torch.arange(n) % 5)[lo:hi],  # images 0 and 5 show the same scene: not each other's negatives
    }


def backward(module, batch) -> tuple[float, dict[str, torch.Tensor]]:
    """What the core's training step computes before the optimizer step: loss and (rank-averaged) gradients."""
    loss = cached_backward(module.sides(batch), functools.partial(module.batch_loss, batch), module.chunk_size)
    average_gradients(module.parameters())
    return float(loss), {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def assert_same(a, b, rel=1e-4) -> None:
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    assert grads_a.keys() == grads_b.keys()
    assert any(k.startswith("encoder.image_tower") for k in grads_a) and any(k.startswith("encoder.text_tower") for k in grads_a)
    assert "loss_fn.log_inv_temperature" in grads_a
    # relative to each gradient, floored at 1e-3 of the whole gradient's norm: a gradient that is mathematically 0
    # (the first conv's bias, removed by a one-channel GroupNorm: ~1e-7 here) is compared absolutely
    total = float(torch.cat([g.flatten() for g in grads_b.values()]).norm())
    for k in grads_a:
        err = float((grads_a[k] - grads_b[k]).norm() / grads_b[k].norm().clamp_min(1e-3 * total))
        assert err <= rel, (k, err)


@pytest.mark.parametrize("pair_weight", [0.0, 0.5])
def test_gradient_caching_equals_the_full_batch(tiny_model_dir, pair_weight):
    batch = make_batch(B)
    full, cached = make_module(tiny_model_dir, None, pair_weight).eval(), make_module(tiny_model_dir, 3, pair_weight).eval()
    assert len(cached.sides(batch)) == (3 if pair_weight else 2)
    assert_same(backward(cached, batch), backward(full, batch))


def test_gradient_caching_replays_dropout_masks(tiny_model_dir):
    """Dropout on (train mode): the cached run equals the same chunks encoded WITH the graph and one backward
    (the masks of a one-pass forward have another shape), so each chunk's RNG was restored in the second pass."""
    batch = make_batch(B)
    ref, cached = make_module(tiny_model_dir, 3).train(), make_module(tiny_model_dir, 3).train()
    torch.manual_seed(7)
    embs = [torch.cat([s.encode(c) for c in s.chunks(3)[0]]) for s in ref.sides(batch)]  # contiguous chunks
    loss = ref.batch_loss(batch, *embs)
    loss.backward()
    want = (float(loss.detach()), {n: p.grad.clone() for n, p in ref.named_parameters() if p.grad is not None})
    torch.manual_seed(7)
    assert_same(backward(cached, batch), want)
    torch.manual_seed(8)  # not vacuous: other masks give other gradients
    other = backward(make_module(tiny_model_dir, 3).train(), batch)
    assert abs(other[0] - want[0]) > 1e-6


def test_batch_norm_tower_with_gradient_caching_is_refused(tiny_model_dir):
    from hybrid_retrieval.models.encoder import DualEncoder
    from hybrid_retrieval.models.loss import InfoNCELoss
    from hybrid_retrieval.tasks.image_text.model import ImageTextEncoder, ImageTextModule, ImageTower, TextTower

    enc = ImageTextEncoder(ImageTower("small_cnn", image_size=16, width=8), TextTower(DualEncoder(name=str(tiny_model_dir))))
    with pytest.raises(ValueError, match=r"image_tower\.norm=group"):
        ImageTextModule(enc, InfoNCELoss(), torch.optim.SGD, grad_cache={"chunk_size": 4})


DDP_CASES = ((None, 0.5), (2, 0.5), (None, 0.0))  # (gradient-cache chunk, caption→caption pair weight)


def _ddp_worker(rank, port, model_dir, out_path):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        results = []
        for chunk, pair_weight in DDP_CASES:
            module = make_module(model_dir, chunk, pair_weight).eval()
            loss, grads = backward(module, make_batch(B, lo=rank * B // WORLD, hi=(rank + 1) * B // WORLD))
            # each rank's loss is the mean over its own (equally many) queries: the global loss is their mean
            results.append((float(all_gather_variable(torch.tensor([loss])).mean()), loss, grads))
        if rank == 0:
            torch.save(results, out_path)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_equal_one_process_with_the_whole_batch(tmp_path, tiny_model_dir):
    out = tmp_path / "rank0.pt"
    args = (_free_port(), str(tiny_model_dir), str(out))
    mp.start_processes(_ddp_worker, args=args, nprocs=WORLD, join=True, start_method="spawn")
    got = torch.load(out)
    for (chunk, pair_weight), (global_loss, rank0_loss, grads) in zip(DDP_CASES, got, strict=True):
        one = backward(make_module(tiny_model_dir, None, pair_weight).eval(), make_batch(B))
        assert_same((global_loss, grads), one)
        # not vacuous: rank 0's own loss (its half of the queries, against all passages) is not the global one
        assert abs(rank0_loss - one[0]) > 1e-4, (chunk, pair_weight)


def image_text_overrides(model_dir, run_dir, *extra) -> list[str]:
    return [
        "+experiment=image_text_synthetic",
        f"model.encoder.text_tower.name={model_dir}",
        "data.train.renderings=1",
        "data.languages=[en,de]",
        "data.image_size=16",
        "model.encoder.image_tower.width=4",
        "data.batch_size=16",
        "data.sampler.batches_per_epoch=4",
        "data.eval_batch_size=96",
        "trainer.max_epochs=2",
        "logger=none",
        f"hydra.run.dir={run_dir}",
        "seed=0",
        "callbacks.resume_checkpoint.every_n_train_steps=100",
        *extra,
    ]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["skip", "raise"])
def test_ddp_nonfinite_loss_on_one_rank_every_rank_acts_together(tmp_path, tiny_model_dir, monkeypatch, mode):
    """NaN on rank 0 only, under trainer=ddp_cpu: skip → both ranks skip the same step and end with identical,
    finite weights; raise → both ranks stop (the run fails within the timeout instead of hanging in all_reduce)."""
    monkeypatch.setenv("HYBRID_RETRIEVAL_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    args = image_text_overrides(
        tiny_model_dir,
        run_dir,
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        "model.loss._target_=tests.helpers.NaNAtStepLoss",
        "+model.loss.nan_at_call=2",
        "+model.loss.rank=0",
        f"model.nonfinite={mode}",
        "+callbacks.save_params._target_=tests.helpers.SaveParamsAtEnd",
        f"+callbacks.save_params.out_dir={tmp_path / 'params'}",
    )
    started = time.time()
    proc = run_cli(args, tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False, timeout=400)
    log = proc.stdout + proc.stderr
    if mode == "raise":
        assert proc.returncode != 0 and time.time() - started < 400
        assert "non-finite loss at global step 1 (rank 0 loss nan" in log and "rank 1 loss" in log, log[-3000:]
        return
    assert proc.returncode == 0, log[-3000:]
    assert "rank 1 loss" in log and "rank 0 loss nan" in log, log[-3000:]  # both ranks saw the skip
    summary = json.loads((run_dir / "final_metrics.json").read_text())
    assert summary["skipped_batches"] == 1 and summary["global_step"] == 3  # 4 batches, one skipped
    r0, r1 = (torch.load(tmp_path / "params" / f"rank{r}.pt") for r in (0, 1))
    assert r0.keys() == r1.keys() and r0
    for k in r0:
        assert torch.isfinite(r0[k]).all() and torch.equal(r0[k], r1[k]), k


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra", [(), ("model.grad_cache.chunk_size=6", "model.encoder.image_tower.norm=group")], ids=["plain", "grad-cache"]
)
def test_sigterm_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_model_dir, monkeypatch, extra):
    """SIGTERM at the start of step 5 of 8 (epoch 2, mid-epoch), then resume=true: every metric within 1e-6 of the
    run that was never stopped (RNG, sampler position and the epoch's captions restored by the core)."""
    monkeypatch.setenv("HYBRID_RETRIEVAL_CACHE", str(tmp_path / "cache"))
    clean_dir, stopped_dir, sent = tmp_path / "clean", tmp_path / "stopped", tmp_path / "sigterm_sent"
    run_cli(image_text_overrides(tiny_model_dir, clean_dir, *extra), tmp_path)
    args = image_text_overrides(tiny_model_dir, stopped_dir, *extra)
    term = ["+callbacks.term._target_=tests.helpers.SigtermAtStep", "+callbacks.term.step=5", f"+callbacks.term.once_file={sent}"]
    proc = run_cli([*args, *term], tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert (stopped_dir / "checkpoints" / "last.ckpt").resolve().name == "resume-step6.ckpt"
    run_cli([*args, "resume=true"], tmp_path)
    clean = json.loads((clean_dir / "final_metrics.json").read_text())
    resumed = json.loads((stopped_dir / "final_metrics.json").read_text())
    assert resumed["global_step"] == clean["global_step"] == 8
    for key in ("val/t2i/r@1", "val/i2t/r@1", "val/multi/map", "val/clipscore", "train/loss", "val/t2i/r@1_best"):
        assert abs(resumed["metrics"][key] - clean["metrics"][key]) <= 1e-6, (key, resumed["metrics"][key], clean["metrics"][key])
