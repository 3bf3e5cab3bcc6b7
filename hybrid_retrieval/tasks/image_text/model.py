"""Image–text dual encoder and its LightningModule: an image tower and a text tower, each projected to a shared
space, either tower lockable (LiT: locked image tower, trained text tower, as multilingual CLIP models are made).

Towers:

* image: ``small_cnn`` (trained from scratch; the offline synthetic check), a transformers vision model by name
  or path (``CLIPVisionModel``, ``SiglipVisionModel``, ``ViTModel``; pooled output), or a whole CLIP / SigLIP
  checkpoint (its ``get_image_features``: the image side of M-CLIP-style models);
* text: the project's :class:`~hybrid_retrieval.models.encoder.DualEncoder` (any text model it loads; captions
  are encoded as queries), or the text side of a whole CLIP / SigLIP checkpoint (:meth:`ImageTextEncoder.from_hub`).

A locked tower runs in eval mode without gradients and its outputs are cached per training image / caption:
each is encoded once per run (the frozen-prefix idea). Hub names load with the real ``from_pretrained``; offline,
a name that is not cached is one line naming the config key.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoImageProcessor, AutoModel, AutoProcessor

from hybrid_retrieval.common.errors import require_choice
from hybrid_retrieval.models.encoder import DualEncoder, from_pretrained_or_explain
from hybrid_retrieval.models.grad_cache import Side
from hybrid_retrieval.tasks.image_text.data import load_image, simple_preprocess
from hybrid_retrieval.training.core import ContrastiveModule

SMALL_CNN = "small_cnn"
SMALL_CNN_NORMS = ("batch", "group", "none")


def _from_pretrained(loader, key: str, name: str, **kwargs):
    return from_pretrained_or_explain(loader.from_pretrained, key, name, "; use a cached hub name or a local path", **kwargs)


def check_norm(value) -> None:
    require_choice("model.encoder.image_tower.norm", value, SMALL_CNN_NORMS)


class SmallConvNet(nn.Module):
    """Three conv blocks and a linear layer over the flattened map (positions matter, so no global pooling).

    ``norm``: ``batch`` (BatchNorm: statistics over the batch, so gradient caching cannot chunk it), ``group``
    (GroupNorm, 8 groups or fewer in a narrower layer: each image on its own) or ``none``."""

    def __init__(self, image_size: int = 32, width: int = 32, out_dim: int = 256, norm: str = "batch"):
        super().__init__()
        if image_size % 8:
            raise ValueError(f"image_size={image_size}: expected a multiple of 8 for the small CNN")
        check_norm(norm)
        layers, c = [], 3
        for w in (width, 2 * width, 4 * width):
            layer = {
                "batch": lambda w=w: nn.BatchNorm2d(w),
                "group": lambda w=w: nn.GroupNorm(math.gcd(8, w), w),
                "none": nn.Identity,
            }
            layers += [nn.Conv2d(c, w, 3, padding=1), layer[norm](), nn.ReLU(), nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c * (image_size // 8) ** 2, out_dim)
        self.out_dim = out_dim

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixel_values).flatten(1))  # (B, out_dim)


class ImageTower(nn.Module):
    """``name``: ``small_cnn``, a vision model, or a whole CLIP / SigLIP checkpoint (name or local path)."""

    def __init__(self, name: str = SMALL_CNN, image_size: int = 32, width: int = 32, out_dim: int = 256, norm: str = "batch"):
        super().__init__()
        self.name, self.image_size = name, int(image_size)
        self.processor = None
        if name == SMALL_CNN:
            self.model = SmallConvNet(image_size, width, out_dim, norm)
            self.out_dim = out_dim
            return
        self.model = _from_pretrained(AutoModel, "model.image_tower.name", name)
        self.processor = _from_pretrained(AutoImageProcessor, "model.image_tower.name", name)
        cfg = self.model.config
        if hasattr(self.model, "get_image_features"):  # a whole CLIP / SigLIP: its projected image features
            self.out_dim = int(getattr(cfg, "projection_dim", None) or cfg.vision_config.hidden_size)
        else:
            self.out_dim = int(cfg.hidden_size)

    def own_modules(self) -> list[nn.Module]:
        """What locking this tower freezes: the vision half of a whole CLIP / SigLIP built by ``from_hub`` (its text
        half is the text tower), else everything."""
        if getattr(self, "shared_model", False):
            return [m for m in (self.model.vision_model, getattr(self.model, "visual_projection", None)) if m is not None]
        return [self]

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        if self.processor is None:
            return simple_preprocess(images, self.image_size)
        return self.processor(images=list(images), return_tensors="pt")["pixel_values"]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.name == SMALL_CNN:
            return self.model(pixel_values)
        if hasattr(self.model, "get_image_features"):
            out = self.model.get_image_features(pixel_values=pixel_values)
            return out if isinstance(out, torch.Tensor) else out.pooler_output
        out = self.model(pixel_values=pixel_values)
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out.last_hidden_state[:, 0]  # (B, hidden)


class TextTower(nn.Module):
    """The project's text encoder (captions encoded as ``kind``, by default as queries)."""

    def __init__(self, encoder: DualEncoder, kind: str = "query"):
        super().__init__()
        self.encoder, self.kind = encoder, kind
        self.out_dim = encoder.dim

    def own_modules(self) -> list[nn.Module]:
        return [self]

    def forward(self, texts: list[str]) -> torch.Tensor:
        dev = next(self.encoder.parameters()).device
        feats = {k: v.to(dev) for k, v in self.encoder.tokenize(texts, self.kind).items()}
        return self.encoder.encode(feats, self.kind)  # (B, dim)


class HubTextTower(nn.Module):
    """The text side of a whole CLIP / SigLIP checkpoint (its tokenizer and ``get_text_features``)."""

    def __init__(self, model: nn.Module, processor, max_length: int = 64):
        super().__init__()
        self.model, self.processor, self.max_length = model, processor, max_length
        cfg = model.config
        self.out_dim = int(getattr(cfg, "projection_dim", None) or cfg.text_config.hidden_size)

    def own_modules(self) -> list[nn.Module]:
        """The text half of the whole model (the image tower holds the vision half)."""
        return [m for m in (self.model.text_model, getattr(self.model, "text_projection", None)) if m is not None]

    def forward(self, texts: list[str]) -> torch.Tensor:
        dev = next(self.model.parameters()).device
        enc = self.processor(text=list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        enc = {k: v.to(dev) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        out = self.model.get_text_features(**enc)
        return out if isinstance(out, torch.Tensor) else out.pooler_output


class TorchmetricsCLIP(nn.Module):
    """A whole CLIP as torchmetrics' CLIPScore expects it: torchmetrics 1.9 divides ``get_*_features(...)`` by its
    norm, but transformers 5 returns an output object there (the projected features in ``pooler_output``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.config = model, model.config

    @staticmethod
    def _tensor(out) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def get_image_features(self, *args, **kwargs) -> torch.Tensor:
        return self._tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs) -> torch.Tensor:
        return self._tensor(self.model.get_text_features(*args, **kwargs))


class ImageTextEncoder(nn.Module):
    """Image and text towers with projections to ``dim`` (``projection=false`` keeps a whole CLIP's own space).

    ``encode_images`` / ``encode_texts`` return L2-normalised (B, dim) embeddings. ``cache_keys`` (training):
    a locked tower's outputs are kept per key and computed once."""

    def __init__(
        self,
        image_tower: ImageTower,
        text_tower: nn.Module,
        dim: int = 256,
        lock_image: bool = False,
        lock_text: bool = True,
        projection: bool = True,
    ):
        super().__init__()
        if not isinstance(text_tower, nn.Module) or not hasattr(text_tower, "out_dim"):
            text_tower = TextTower(text_tower)
        self.image_tower, self.text_tower = image_tower, text_tower
        self.lock_image, self.lock_text = bool(lock_image), bool(lock_text)
        if lock_image and lock_text and not projection:
            raise ValueError("model.lock_image=true and model.lock_text=true without projections: nothing would train")
        self.dim = int(dim) if projection else int(image_tower.out_dim)
        if not projection and image_tower.out_dim != text_tower.out_dim:
            raise ValueError(
                f"model.projection=false needs towers of equal width (image {image_tower.out_dim}, text {text_tower.out_dim})"
            )
        self.image_proj = nn.Linear(image_tower.out_dim, self.dim, bias=False) if projection else nn.Identity()
        self.text_proj = nn.Linear(text_tower.out_dim, self.dim, bias=False) if projection else nn.Identity()
        for tower, locked in ((self.image_tower, lock_image), (self.text_tower, lock_text)):
            if locked:
                for m in tower.own_modules():
                    m.requires_grad_(False)
        self._cache: dict[str, dict] = {"image": {}, "text": {}}
        self.clip_model = None  # set by from_hub for a whole CLIP (CLIPScore through torchmetrics)
        self.clip_processor = None
        self.train(True)

    @classmethod
    def from_hub(
        cls,
        name: str,
        lock_image: bool = False,
        lock_text: bool = False,
        max_length: int = 64,
        trust_remote_code: bool = False,
        image_tower=None,
        text_tower=None,
        dim=None,
        projection=None,
    ):
        """Both towers of one CLIP / SigLIP checkpoint (name or local path), in its own embedding space.

        ``image_tower``, ``text_tower``, ``dim``, ``projection``: the image_text config group's keys, unused here
        (conf/model/image_text_hub.yaml sets them to null: Hydra cannot delete inherited keys)."""
        kwargs = {"trust_remote_code": True} if trust_remote_code else {}
        model = _from_pretrained(AutoModel, "model.encoder.name", name, **kwargs)
        processor = _from_pretrained(AutoProcessor, "model.encoder.name", name, **kwargs)
        image = ImageTower.__new__(ImageTower)
        nn.Module.__init__(image)
        image.name, image.model, image.processor, image.shared_model = name, model, processor.image_processor, True
        image.image_size = int(getattr(model.config.vision_config, "image_size", 224))
        image.out_dim = int(getattr(model.config, "projection_dim", None) or model.config.vision_config.hidden_size)
        text = HubTextTower(model, processor, max_length)
        enc = cls(image, text, lock_image=lock_image, lock_text=lock_text, projection=False)
        if type(model).__name__ == "CLIPModel":
            enc.clip_model, enc.clip_processor = model, processor
        return enc

    def train(self, mode: bool = True):
        super().train(mode)
        for tower, locked in ((self.image_tower, self.lock_image), (self.text_tower, self.lock_text)):
            if locked:
                for m in tower.own_modules():
                    m.eval()  # a locked tower never uses dropout / batch statistics: its cached outputs stay valid
        return self

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.image_tower.preprocess(images)

    def cached_features(self, kind: str) -> dict[str, torch.Tensor]:
        """A locked tower's cached outputs (``image`` / ``text``), on the CPU (what a checkpoint keeps)."""
        return {k: v.cpu() for k, v in self._cache[kind].items()}

    def restore_features(self, kind: str, cached: dict[str, torch.Tensor], device) -> None:
        self._cache[kind].update({k: v.to(device) for k, v in cached.items()})

    def trains_batch_norm(self) -> bool:
        """Does a trained tower normalise over the batch (BatchNorm)? Then chunked encoding changes the outputs."""
        towers = [t for t, locked in ((self.image_tower, self.lock_image), (self.text_tower, self.lock_text)) if not locked]
        return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for t in towers for m in t.modules())

    def _tower_out(self, kind: str, tower: Callable, inputs, keys: Sequence | None, locked: bool) -> torch.Tensor:
        if not locked:
            return tower(inputs)
        if keys is None:
            with torch.no_grad():
                return tower(inputs)
        cache = self._cache[kind]
        missing = [i for i, k in enumerate(keys) if k not in cache]
        if missing and inputs is None:
            raise RuntimeError(f"{len(missing)} {kind} features not cached and no inputs given (e.g. {keys[missing[0]]!r})")
        if missing:
            sub = inputs[missing] if isinstance(inputs, torch.Tensor) else [inputs[i] for i in missing]
            with torch.no_grad():
                out = tower(sub).detach()
            for i, row in zip(missing, out, strict=True):
                cache[keys[i]] = row
        return torch.stack([cache[k] for k in keys])

    def encode_images(self, pixel_values: torch.Tensor, cache_keys: Sequence | None = None) -> torch.Tensor:
        feats = self._tower_out("image", self.image_tower, pixel_values, cache_keys, self.lock_image)  # (B, d_img)
        return F.normalize(self.image_proj(feats.float()), dim=-1)  # (B, dim)

    def encode_texts(self, texts: list[str], cache: bool = False) -> torch.Tensor:
        feats = self._tower_out("text", self.text_tower, list(texts), list(texts) if cache else None, self.lock_text)
        return F.normalize(self.text_proj(feats.float()), dim=-1)  # (B, dim)


class ImageTextModule(ContrastiveModule):
    """Symmetric InfoNCE over (caption, image) pairs of a hybrid batch (+ optional caption→caption pairs), trained
    by the shared core (gradient caching, gathered negatives, the non-finite policy, exact resume): this class says
    only how a batch becomes image and caption sides and their loss, and how evaluation images are embedded."""

    def __init__(self, encoder: ImageTextEncoder, *args, text_pair_weight: float = 0.0, **kwargs):
        """``encoder``, the core's arguments (:class:`ContrastiveModule`), and ``text_pair_weight``: the weight of the
        caption X → caption Y loss (> 0 with ``data.text_pairs=true``)."""
        super().__init__(encoder, *args, **kwargs)
        self.text_pair_weight = float(text_pair_weight)
        if self.chunk_size and encoder.trains_batch_norm():
            raise ValueError(
                f"model.grad_cache.chunk_size={self.chunk_size}: gradient caching needs encoders that treat rows "
                "independently, but the trained image tower has BatchNorm (its statistics would differ per chunk); "
                "use model.encoder.image_tower.norm=group, or lock the image tower"
            )

    @torch.no_grad()
    def on_fit_start(self) -> None:
        """A locked image tower: every training image's features once, up front (then batches skip decoding)."""
        dm = self.trainer.datamodule
        if not self.encoder.lock_image or dm is None or not hasattr(dm, "skip_image_decoding"):
            return
        items, step = dm.train_items, dm.eval_batch_size
        for lo in tqdm(range(0, len(items), step), desc="image features (locked tower)", unit="batch", disable=None):
            chunk = items[lo : lo + step]
            pixels = self.encoder.preprocess([load_image(it.image, it.item_id) for it in chunk]).to(self.device)
            self.encoder.encode_images(pixels, cache_keys=[f"train{lo + j}" for j in range(len(chunk))])
        dm.skip_image_decoding()

    # ------------------------------------------------------------------ the core's hooks
    def _pair_rows(self, batch: dict) -> list[int]:
        """Rows with a caption in a second language, when caption→caption pairs are trained (weight > 0, ≥ 2 rows)."""
        pairs = [i for i, c in enumerate(batch["pair_captions"]) if c is not None]
        return pairs if self.text_pair_weight > 0 and len(pairs) > 1 else []

    def sides(self, batch: dict) -> list[Side]:
        keys = [f"train{int(i)}" for i in batch["index"]]
        n = len(keys)

        def images(rows) -> torch.Tensor:  # rows = (pixel values (b, 3, H, W) or None, cache keys)
            return self.encoder.encode_images(rows[0], cache_keys=rows[1])  # (b, dim)

        def captions(texts) -> torch.Tensor:
            return self.encoder.encode_texts(texts, cache=True)  # (b, dim)

        out = [
            Side(images, (batch["pixel_values"], keys), n, self.device),
            Side(captions, list(batch["captions"]), n, self.device),
        ]
        pairs = self._pair_rows(batch)
        if pairs:
            out.append(Side(captions, [batch["pair_captions"][i] for i in pairs], len(pairs), self.device))
        return out

    def _nce(self, queries: torch.Tensor, candidates: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return (
            self.loss_fn(queries, candidates, p_keys=keys) if self.loss_fn.mask_duplicates else self.loss_fn(queries, candidates)
        )

    def batch_loss(self, batch: dict, img: torch.Tensor, txt: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        # img (B, dim), txt (B, dim) captions; other (b, dim): the second-language captions of the pair rows
        loss = self._nce(txt, img, batch["keys"])
        if other is not None:
            sel = torch.tensor(self._pair_rows(batch), device=img.device)
            loss = loss + self.text_pair_weight * self._nce(txt[sel], other, batch["keys"][sel])
        return loss

    def batch_languages(self, batch: dict) -> dict[str, list[str]]:
        return {"caption langs": batch["caption_langs"]}

    # A locked text tower's outputs are cached per caption as first computed, padded with the other captions of that
    # batch: the same caption computed in another batch differs in the last bits. The cache therefore travels with the
    # checkpoint, so a resumed run uses the values the uninterrupted run had (a locked image tower's cache is rebuilt
    # identically by on_fit_start).
    def checkpoint_state(self) -> dict:
        return {"text_cache": self.encoder.cached_features("text")}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        cached = (checkpoint.get("hybrid_retrieval") or {}).get("text_cache") or {}
        self.encoder.restore_features("text", cached, self.device)

    def is_monolingual(self, batch: dict) -> bool:
        return len(set(batch["caption_langs"])) == 1

    def validation_step(self, batch, batch_idx: int):
        """(image indices (b,), image embeddings (b, dim)) on the CPU for :class:`ImageTextEvaluator`."""
        index, pixels = batch
        return index.cpu(), self.encoder.encode_images(pixels).detach().cpu()
