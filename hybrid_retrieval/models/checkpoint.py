"""Reading a TextRetrievalModule checkpoint back into an encoder (pure torch, no Lightning, no Hydra).

One place for what evaluate, export, search and resume all need: the frozen-prefix check (a checkpoint of the
top layers only must be completed by the same base model), loading ``encoder.*`` weights strictly, and
building the encoder a checkpoint records. The file is read once per call.

Safety: a checkpoint is a pickle, and unpickling can run code. Every read here is weights-only
(``torch.load(weights_only=True)``: tensors, numbers, strings and containers, plus :data:`ALLOWED_GLOBALS`), and
:func:`check_checkpoint` lists the globals a file would import from its pickle opcodes (nothing is executed) and
refuses it before loading, with one line naming the file and the globals.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from hybrid_retrieval.common.errors import CheckpointError
from hybrid_retrieval.models.digest import tensor_digest
from hybrid_retrieval.models.encoder import DualEncoder

#: Globals a checkpoint may import beyond torch's weights-only set. Empty: what this project and Lightning write
#: (state dicts, optimizer and loop states, callback states, RNG tensors, the encoder's settings) is tensors, numbers,
#: strings, lists, dicts and OrderedDicts. Anything added here must be plain data whose unpickling runs no code.
ALLOWED_GLOBALS: tuple[type, ...] = ()


def refusal(names: list[str]) -> str:
    """Why a checkpoint whose pickle imports ``names`` is not loaded (one line, without the file name)."""
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return (
        f"refused: loading it would import {shown}, which can run arbitrary code (a hybrid_retrieval checkpoint "
        "holds only tensors and plain values; re-save it from code you trust with its state_dict)"
    )


def unsafe_globals(path: str | Path) -> list[str]:
    """The globals a zip-format checkpoint's pickle imports beyond the weights-only set and :data:`ALLOWED_GLOBALS`,
    read from its opcodes (nothing in the file runs). Raises :class:`CheckpointError` for an unreadable archive."""
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in ALLOWED_GLOBALS}
    try:
        return [name for name in torch.serialization.get_unsafe_globals_in_checkpoint(path) if name not in allowed]
    except Exception as error:  # a zip that is not a torch archive, or a damaged pickle
        first = str(error).split(". ")[0].strip()
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or another format: {first})") from None


def check_checkpoint(ckpt_path: str | Path) -> Path:
    """Refuse a missing, truncated or unsafe checkpoint before anything loads it (one :class:`CheckpointError` line).

    Unsafe: its pickle imports a global outside the weights-only set and :data:`ALLOWED_GLOBALS`; found by reading
    the pickle's opcodes (``torch.serialization.get_unsafe_globals_in_checkpoint``), so nothing in the file runs.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or another format)")
    names = unsafe_globals(path)
    if names:
        raise CheckpointError(f"{path}: {refusal(names)}")
    return path


def read_checkpoint(ckpt_path: str | Path) -> dict:
    """The checkpoint's dict (CPU tensors), read weights-only; a missing, truncated or unsafe file is a
    :class:`CheckpointError` naming it (see :func:`check_checkpoint`)."""
    path = check_checkpoint(ckpt_path)
    try:
        with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # the weights-only unpickler met a global the opcode scan did not list
        raise CheckpointError(f"{path}: {refusal([str(error).split('GLOBAL ')[-1].split(' ')[0]])}") from None
    except Exception as error:  # torch raises RuntimeError / EOFError for broken files
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
    """Load the ``encoder.*`` weights of a TextRetrievalModule checkpoint (strict on those keys).

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
