"""The GPU path (issue #43): what only runs on CUDA, each against a reference computed in the same test.

Marked ``cuda`` and skipped without a CUDA device (CI and the 2-core development machines); a lent GPU runs them
through ``bash benchmarks/gpu_check.sh``. TF32 is switched off where a test compares with an fp32 reference.
"""

from __future__ import annotations

import copy
import json
import os
import sys

import numpy as np
import pytest
import torch

from hybrid_retrieval.models.grad_cache import contrastive_backward
from hybrid_retrieval.models.loss import InfoNCELoss
from tests.test_grad_cache import _batch, _full_graph_backward, _grads, assert_same_loss_and_grads

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
TEXTS = ["How long is the Danube?", "Wie lang ist die Donau?", "多瑙河有多长？", "Дунай длинный", "¿Cuánto mide el Danubio?"]


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _cuda(features: dict) -> dict:
    return {k: v.cuda() for k, v in features.items()}


def test_grad_cache_with_dropout_equals_the_full_batch_on_cuda(tiny_encoder_factory):
    """CUDA RNG state saved and restored per chunk: the same dropout masks in the recompute, so loss and every
    gradient equal the full-batch computation (chunk-wise forward with the graph, one backward)."""
    torch.manual_seed(0)
    enc = tiny_encoder_factory().cuda().train()
    loss_fn = InfoNCELoss(temperature=0.05, learnable_temperature=True).cuda()
    enc2, loss2 = copy.deepcopy(enc), copy.deepcopy(loss_fn)
    q, p, n = (_cuda(_batch(enc, k, seed, kind)) for k, seed, kind in ((12, 1, "query"), (12, 2, "passage"), (24, 3, "passage")))
    torch.manual_seed(123)
    full = _full_graph_backward(enc.encode, loss_fn, q, p, n, chunk=5)
    torch.manual_seed(123)
    cached = contrastive_backward(enc2.encode, loss2, q, p, n, chunk_size=5)
    assert_same_loss_and_grads(full, cached, enc, enc2)
    # dropout really acts on CUDA, drawn from the CUDA generator: other seed, other masks
    torch.cuda.manual_seed(999)
    one = enc2.encode(q, "query")
    torch.cuda.manual_seed(123)
    assert not torch.allclose(one, enc2.encode(q, "query"))


def test_bf16_autocast_step_is_close_to_fp32_and_finite(tiny_encoder_factory):
    """Lightning's bf16-mixed is autocast over fp32 weights: loss within 2 % of fp32 (bf16 keeps 8 mantissa bits),
    gradients pointing the same way (cosine >= 0.99), nothing non-finite (no skipped batch)."""
    torch.manual_seed(0)
    enc = tiny_encoder_factory().cuda().eval()
    loss_fn = InfoNCELoss(temperature=0.05)
    q, p = _cuda(_batch(enc, 16, 1, "query")), _cuda(_batch(enc, 16, 2, "passage"))
    ref = contrastive_backward(enc.encode, loss_fn, q, p, chunk_size=None)
    g_ref = torch.cat([g.flatten() for g in _grads(enc).values()])
    enc.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = contrastive_backward(enc.encode, loss_fn, q, p, chunk_size=4)
    g_got = torch.cat([g.flatten() for g in _grads(enc).values()])
    assert torch.isfinite(got) and bool(torch.isfinite(g_got).all())
    assert float(got) == pytest.approx(float(ref), rel=0.02)
    assert float(torch.nn.functional.cosine_similarity(g_got, g_ref, dim=0)) >= 0.99


def test_prefix_cache_built_on_the_gpu_equals_the_cpu_cache(tiny_encoder_factory, tmp_path):
    """Frozen-prefix states computed on the GPU (host <- device copies into the memory-mapped store) equal those
    computed on the CPU, and a GPU step from the cached rows equals the uncached GPU step."""
    from hybrid_retrieval.common.padding import pad_batch, pad_rows
    from hybrid_retrieval.models.prefix_cache import load_or_build

    cpu = tiny_encoder_factory(train_layers=1, prefix_cache_dtype="fp32").eval()
    gpu = copy.deepcopy(cpu).cuda()
    ids = cpu.token_ids(TEXTS * 3, "passage")
    a = load_or_build(cpu, ids, "passage", root=tmp_path / "cpu", progress=False)
    b = load_or_build(gpu, ids, "passage", root=tmp_path / "gpu", progress=False)
    for i in range(len(ids)):
        np.testing.assert_allclose(np.asarray(b[i]), np.asarray(a[i]), rtol=1e-4, atol=1e-5)
    pad = cpu.tokenizer.pad_token_id
    rows = [torch.as_tensor(np.asarray(b[i])) for i in range(len(ids))]
    with torch.no_grad():
        cached = gpu.encode(_cuda(pad_rows(rows, pad)), "passage")
        plain = gpu.encode(_cuda(pad_batch(ids, pad)), "passage")
    assert float((cached - plain).abs().max()) <= 1e-4


def test_lightning_fit_on_gpu_sigterm_resume_equals_uninterrupted(tiny_data, tiny_model_dir, tmp_path, monkeypatch):
    """trainer=gpu (bf16-mixed): 8 steps saved, SIGTERM'd at step 6, resumed: the same metrics as a clean run."""
    from tests.test_train_e2e import sigterm_then_resume

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (trainer.deterministic=true)
    sigterm_then_resume(tiny_data, tiny_model_dir, tmp_path, monkeypatch, extra_overrides=["trainer=gpu"])


def test_image_text_one_epoch_on_cuda(tmp_path, tiny_model_dir):
    """The image–text task through the CLI on the GPU: 6 steps of the synthetic set, evaluated."""
    import subprocess

    run = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HYBRID_RETRIEVAL_CACHE": str(tmp_path / "cache")}
    args = ["+experiment=image_text_synthetic", f"model.encoder.text_tower.name={tiny_model_dir}", "data.train.renderings=1"]
    args += ["data.languages=[en,de]", "data.image_size=16", "model.encoder.image_tower.width=4", "data.batch_size=32"]
    args += ["trainer=gpu", "trainer.max_epochs=1", "logger=csv", f"hydra.run.dir={run}"]
    cmd = [sys.executable, "-m", "hybrid_retrieval.train", *args]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "GPU available: True (cuda), used: True" in proc.stdout + proc.stderr
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["global_step"] == 6 and 0.0 <= final["metrics"]["val/t2i/r@1"] <= 1.0
