"""Reading a HybridRetrievalModule checkpoint back into an encoder (pure torch, no Lightning, no Hydra).

One place for what evaluate, export, search and resume all need: the frozen-prefix check (a checkpoint of the
top layers only must be completed by the same base model), loading ``encoder.*`` weights strictly, and
building the encoder a checkpoint records. The file is read once per call.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hybrid_retrieval.errors import CheckpointError
from hybrid_retrieval.models.digest import tensor_digest
from hybrid_retrieval.models.encoder import DualEncoder


def read_checkpoint(ckpt_path: str | Path) -> dict:
    """The checkpoint's dict (CPU tensors); a missing or truncated file is a :class:`CheckpointError` naming it."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises RuntimeError / UnpicklingError / EOFError for broken files
        first = str(error).split(". ")[0].strip()  # torch appends a paragraph of advice
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or another format: {first})") from None


def check_frozen_prefix(checkpoint: dict, state: dict[str, torch.Tensor], prefix: str, where: str) -> list[str]:
    """For a frozen-prefix checkpoint, check that ``state`` holds the same frozen weights it was trained on.

    ``prefix`` is stripped from the checkpoint's key names to match ``state`` (e.g. ``"encoder."`` when
    ``state`` is the encoder's own). Returns the frozen names (in ``state``'s naming), [] for full checkpoints.
    """
    info = checkpoint.get("frozen_prefix")
    if not info:
        return []
    keys = [k[len(prefix) :] for k in info["keys"] if k.startswith(prefix)]
    absent = [k for k in keys if k not in state]
    if absent or tensor_digest((k, state[k]) for k in keys) != info["digest"]:
        raise CheckpointError(
            f"{where}: this checkpoint holds only the top {info.get('train_layers')} layers; its frozen lower layers "
            "must come from the same base model, but the configured model.encoder differs (other name, weights or "
            "architecture). Use the encoder settings the run was trained with."
        )
    return keys


def load_checkpoint_into(encoder, ckpt_path: str | Path, checkpoint: dict | None = None) -> None:
    """Load the ``encoder.*`` weights of a HybridRetrievalModule checkpoint (strict on those keys).

    ``checkpoint``: the already-read file (so a caller that needs its metadata too reads it only once)."""
    if checkpoint is None:
        checkpoint = read_checkpoint(ckpt_path)
    state = checkpoint.get("state_dict", {})
    enc_state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    if not enc_state:
        raise CheckpointError(f"{ckpt_path}: no encoder.* weights (is it a hybrid_retrieval checkpoint?)")
    # A frozen-prefix checkpoint lacks the frozen lower layers: they must be the configured base model's.
    frozen = set(check_frozen_prefix(checkpoint, encoder.state_dict(), prefix="encoder.", where=str(ckpt_path)))
    missing, unexpected = encoder.load_state_dict(enc_state, strict=False)
    missing = [m for m in missing if m not in frozen]
    if unexpected or [m for m in missing if not m.startswith("passage_model.") or not encoder.shared]:
        raise CheckpointError(
            f"{ckpt_path}: checkpoint does not match the encoder config (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )


def encoder_from_checkpoint(ckpt_path: str | Path, **overrides) -> DualEncoder:
    """The :class:`DualEncoder` a checkpoint was trained with, its weights loaded (``overrides``: e.g. a
    local ``name`` for the base model, or ``prefix_cache=True``)."""
    checkpoint = read_checkpoint(ckpt_path)
    record = (checkpoint.get("hybrid_retrieval") or {}).get("encoder")
    if record is None:
        raise CheckpointError(
            f"{ckpt_path}: the checkpoint does not record its encoder settings (older than this version); pass them explicitly"
        )
    encoder = DualEncoder(**{**record, **overrides})
    load_checkpoint_into(encoder, ckpt_path, checkpoint)
    return encoder.eval()
