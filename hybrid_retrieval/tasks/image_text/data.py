"""Image–caption data with captions in several languages per image: the format, an XM3600 reader, a synthetic
learnable set, and the data module that applies hybrid batching to image–text pairs (docs/method.md).

Format (JSONL, one image per line)::

    {"id": "img1", "image": "images/img1.png", "captions": {"en": ["a red circle"], "de": ["ein roter Kreis"]}}

``image`` is relative to the JSONL's folder (or absolute); ``captions`` maps a language to one caption or a list;
an optional ``group`` names images that show the same thing (the synthetic set's repeated scenes): their pairs are
not negatives of each other in the loss, and retrieving any image of the group counts as a hit.

XM3600 (Crossmodal-3600) as published: ``captions.jsonl`` with ``{"image/key": …, "<lang>": {"caption": [...]}}``
per line and ``images/<key>.jpg``.

Hybrid batching for image–text reuses :class:`~hybrid_retrieval.data.sampler.HybridBatchSampler` on the caption
languages of each image: a monolingual batch pairs every image with a caption in one language X; a mixed batch
(``cross_mode=example``) draws each example's caption language (``query_lang``) and, with ``text_pairs``, the
caption in a second language (``passage_lang``) of the same image as a cross-lingual caption→caption pair.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from hybrid_retrieval.common.errors import DataFormatError, ZeroShotError
from hybrid_retrieval.common.paths import cache_root
from hybrid_retrieval.common.timing import phase
from hybrid_retrieval.data.base import HybridBatchDataModule, ShardedLengthSampler
from hybrid_retrieval.data.item_languages import ItemLanguages
from hybrid_retrieval.data.sampler import Example
from hybrid_retrieval.tasks.image_text.synthetic import make_synthetic_shapes


@dataclass(frozen=True)
class ImageCaptionItem:
    item_id: str
    image: Path
    captions: dict[str, tuple[str, ...]]  # language -> one or more captions
    group: str = ""

    @property
    def languages(self) -> list[str]:
        return sorted(self.captions)

    @property
    def key(self) -> str:
        """Equal key = same scene (the loss masks such pairs; evaluation counts any image of the group as a hit)."""
        return self.group or self.item_id


def _captions(value, file, where: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict) or not value:
        raise DataFormatError(file, where, 'expected "captions": {language: caption or [captions]} with at least one language')
    out = {}
    for lang, caps in value.items():
        caps = [caps] if isinstance(caps, str) else caps
        if not isinstance(caps, list) or not caps or not all(isinstance(c, str) and c.strip() for c in caps):
            raise DataFormatError(file, where, f'captions["{lang}"]: expected a non-empty caption or list of captions')
        out[str(lang)] = tuple(caps)
    return out


def _finish(items: list[ImageCaptionItem], file, languages: Sequence[str] | None) -> list[ImageCaptionItem]:
    if not items:
        raise DataFormatError(file, "file", "at least one image with captions (the file has none)")
    if languages:
        wanted = list(languages)
        kept = []
        for it in items:
            missing = [x for x in wanted if x not in it.captions]
            if missing:
                raise DataFormatError(
                    file, f"item {it.item_id!r}", f"captions in {missing} (languages asked for: {wanted}; it has {it.languages})"
                )
            kept.append(ImageCaptionItem(it.item_id, it.image, {x: it.captions[x] for x in wanted}, it.group))
        items = kept
    return items


def read_image_captions(path: str | Path, languages: Sequence[str] | None = None) -> list[ImageCaptionItem]:
    """Items of an image–caption JSONL; every error names the file, the line or item, and what was expected.

    With ``languages`` every item must have captions in each of them (else the item is named)."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "file", "an existing image–caption JSONL file")
    items, seen = [], set()
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"line {n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataFormatError(path, where, f"a JSON object ({err.msg}; a truncated file?)") from None
            if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not isinstance(row.get("image"), str):
                raise DataFormatError(path, where, 'a JSON object with string "id" and "image" and "captions"')
            if row["id"] in seen:
                raise DataFormatError(path, f"{where} (item {row['id']!r})", "a unique id (it appeared before)")
            seen.add(row["id"])
            image = Path(row["image"])
            image = image if image.is_absolute() else path.parent / image
            if not image.is_file():
                raise DataFormatError(path, f"{where} (item {row['id']!r})", f"an existing image file (missing: {image})")
            captions = _captions(row.get("captions"), path, f"{where} (item {row['id']!r})")
            items.append(ImageCaptionItem(row["id"], image, captions, str(row.get("group") or "")))
    return _finish(items, path, languages)


def read_xm3600(root: str | Path, languages: Sequence[str] | None = None) -> list[ImageCaptionItem]:
    """Crossmodal-3600 as published (``captions.jsonl`` + ``images/<key>.jpg``); 36 languages, ~2 captions each."""
    root = Path(root)
    path = root / "captions.jsonl"
    if not path.is_file():
        raise DataFormatError(path, "file", "XM3600's captions.jsonl (with images/<image key>.jpg beside it)")
    items = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key = row["image/key"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataFormatError(path, f"line {n}", 'a JSON object with "image/key" and per-language captions') from None
            image = root / "images" / f"{key}.jpg"
            if not image.is_file():
                raise DataFormatError(path, f"line {n} (item {key!r})", f"an existing image file (missing: {image})")
            caps = {lang: v["caption"] for lang, v in row.items() if isinstance(v, dict) and v.get("caption")}
            items.append(ImageCaptionItem(key, image, _captions(caps, path, f"line {n} (item {key!r})")))
    return _finish(items, path, languages)


def load_image(path: Path, item: str = "") -> Image.Image:
    """RGB image; an unreadable file is a one-line error naming it (and the item)."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataFormatError(path, f"item {item!r}" if item else "image", f"a readable image ({err})") from None


def check_images(items: Sequence[ImageCaptionItem]) -> None:
    """Open every image once (header and data) so an unreadable one fails before training, naming its item."""
    for it in items:
        load_image(it.image, it.item_id)


# ------------------------------------------------------------------------------------------------ data module
def simple_preprocess(images: Sequence[Image.Image], size: int = 32) -> torch.Tensor:
    """(N, 3, size, size) floats in [-1, 1]: for towers without an image processor (the small CNN)."""
    arr = np.stack([np.asarray(im.convert("RGB").resize((size, size)), dtype=np.float32) for im in images])  # (N, H, W, 3)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).div_(127.5).sub_(1.0)


class ImageTextTrainSet(Dataset):
    """Sampler examples → (image, caption in ``query_lang``[, caption in ``passage_lang``]); images decoded on access."""

    def __init__(self, items: Sequence[ImageCaptionItem], seed: int = 0):
        self.items, self.seed, self.epoch = items, int(seed), 0
        self.decode_images = True  # False once a locked image tower's features of every image are cached

    def __len__(self) -> int:
        return len(self.items)

    def caption(self, item: int, lang: str, salt: int = 0) -> str:
        caps = self.items[item].captions[lang]
        return caps[(item * 7919 + self.epoch * 104729 + self.seed + salt) % len(caps)]  # varies by epoch, seeded

    def __getitem__(self, e: Example) -> dict:
        it = self.items[e.item]
        return {
            "index": e.item,
            "image": load_image(it.image, it.item_id) if self.decode_images else None,
            "caption": self.caption(e.item, e.query_lang),
            "caption_lang": e.query_lang,
            "pair_caption": self.caption(e.item, e.passage_lang, salt=1) if e.passage_lang != e.query_lang else None,
            "pair_lang": e.passage_lang,
            "key": it.key,
        }


@dataclass
class ImageTextCollator:
    preprocess: Callable[[Sequence[Image.Image]], torch.Tensor]
    key_ids: dict[str, int] = field(default_factory=dict)

    def __call__(self, rows: list[dict]) -> dict:
        keys = [self.key_ids.setdefault(r["key"], len(self.key_ids)) for r in rows]
        return {
            "index": torch.tensor([r["index"] for r in rows]),  # (B,)
            # (B, 3, H, W); None when a locked image tower's features are all cached (no decoding needed)
            "pixel_values": self.preprocess([r["image"] for r in rows]) if rows[0]["image"] is not None else None,
            "captions": [r["caption"] for r in rows],
            "caption_langs": [r["caption_lang"] for r in rows],
            "pair_captions": [r["pair_caption"] for r in rows],
            "keys": torch.tensor(keys),  # (B,) equal = same scene
        }


class _EvalImages(Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return i, load_image(self.items[i].image, self.items[i].item_id)


class ImageTextDataModule(HybridBatchDataModule):
    """Hybrid batching over image–caption data; evaluation images and captions for :class:`ImageTextEvaluator`.

    ``train`` / ``eval``: ``{format: jsonl|xm3600|synthetic, path, languages, renderings, seed, image_size}``.
    The synthetic set is generated into the cache on first use. Batches are built as in the text study
    (stratified α, per-example caption languages in mixed batches) and sharded by rank (not by Lightning).
    """

    dataset_follows_epoch = True  # the caption drawn for an image changes with the epoch (ImageTextTrainSet.epoch)

    def __init__(
        self,
        train: dict,
        eval: dict,
        batch_size: int = 32,
        languages: Sequence[str] | None = None,
        sampler: dict | None = None,
        text_pairs: bool = False,
        image_size: int = 32,
        allow_overlap: bool = False,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(batch_size, sampler, seed, num_workers)
        self.train_cfg, self.eval_cfg = dict(train), dict(eval)
        self.languages = list(languages) if languages else None
        self.text_pairs, self.image_size, self.allow_overlap = bool(text_pairs), int(image_size), bool(allow_overlap)
        self.eval_batch_size = int(eval_batch_size)
        self.preprocess: Callable = lambda ims: simple_preprocess(ims, self.image_size)
        self.train_items: list[ImageCaptionItem] | None = None
        self.eval_items: list[ImageCaptionItem] | None = None
        self.train_set: ImageTextTrainSet | None = None
        self._languages: ItemLanguages | None = None

    # -- data
    def _read(self, cfg: dict) -> list[ImageCaptionItem]:
        fmt = cfg.get("format", "jsonl")
        langs = cfg.get("languages") or self.languages
        if fmt == "synthetic":
            folder = Path(cfg.get("path") or cache_root() / "image_text")
            folder = (
                folder / f"shapes-r{cfg.get('renderings', 8)}-s{cfg.get('seed', 0)}-px{cfg.get('image_size', self.image_size)}"
            )
            path = make_synthetic_shapes(
                folder, int(cfg.get("renderings", 8)), int(cfg.get("seed", 0)), int(cfg.get("image_size", self.image_size))
            )
            return read_image_captions(path, langs)
        if fmt == "xm3600":
            return read_xm3600(cfg["path"], langs)
        if fmt == "jsonl":
            return read_image_captions(cfg["path"], langs)
        raise DataFormatError(cfg.get("path", "?"), "config", f"data format {fmt!r}: expected jsonl, xm3600 or synthetic")

    def preflight(self) -> None:
        """Read and check both sides (every image opened once), the zero-shot guard and the sampler: seconds,
        before any model loads."""
        with phase("training items"):
            self.train_items = self._read(self.train_cfg)
            check_images(self.train_items)
        with phase("evaluation data"):
            self.eval_items = self._read(self.eval_cfg)
            check_images(self.eval_items)
        with phase("zero-shot guard"):
            shared = {it.image.resolve() for it in self.train_items} & {it.image.resolve() for it in self.eval_items}
        if shared and not self.allow_overlap:
            example = sorted(shared)[0]
            raise ZeroShotError(
                f"{len(shared)} image file(s) are in both the training and the evaluation data (e.g. {example}); "
                "use disjoint sets or data.allow_overlap=true"
            )
        self._languages = ItemLanguages.from_lists([it.languages for it in self.train_items])
        self.make_sampler(0, 1)  # raises SamplerError if the batches cannot be filled

    def item_languages(self) -> ItemLanguages:
        return self._languages

    def sampler_options(self) -> dict:
        cfg = {"alpha": 0.5, "cross_mode": "example", "alpha_schedule": "stratified", **self.sampler_cfg}
        return {
            "alpha": float(cfg["alpha"]),
            "languages": self.languages,
            "cross_mode": cfg["cross_mode"],
            "language_temperature": float(cfg.get("language_temperature", 0.0)),
            "batches_per_epoch": cfg.get("batches_per_epoch"),
            "alpha_schedule": cfg["alpha_schedule"],
            "min_pool": cfg.get("min_pool"),
        }

    def attach_encoder(self, model) -> None:
        """The model's own image preprocessing (its image processor, or resize + scale for the small CNN)."""
        self.preprocess = model.preprocess

    def setup(self, stage: str | None = None) -> None:
        if self.train_items is None:
            self.preflight()
        if self.train_set is None:
            self.train_set = ImageTextTrainSet(self.train_items, self.seed)

    def skip_image_decoding(self) -> None:
        """A locked image tower has cached every training image's features: batches need no pixels."""
        self.train_set.decode_images = False

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.train_set.epoch = epoch

    def train_dataset(self) -> ImageTextTrainSet:
        return self.train_set

    def train_collator(self) -> ImageTextCollator:
        return ImageTextCollator(self.preprocess)

    def val_dataloader(self) -> DataLoader:
        def collate(rows):
            return torch.tensor([i for i, _ in rows]), self.preprocess([im for _, im in rows])

        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        # each rank its contiguous share of the images (the evaluator gathers them): no image twice under DDP
        sampler = ShardedLengthSampler([0] * len(self.eval_items), self.eval_batch_size, rank, world)
        return DataLoader(_EvalImages(self.eval_items), batch_sampler=sampler, collate_fn=collate)

    def eval_captions(self) -> tuple[list[str], list[int], list[str]]:
        """Every evaluation caption: (texts, image index, language), languages in sorted order."""
        texts, owner, langs = [], [], []
        for i, it in enumerate(self.eval_items):
            for lang in it.languages:
                for cap in it.captions[lang]:
                    texts.append(cap)
                    owner.append(i)
                    langs.append(lang)
        return texts, owner, langs

    # -- records
    def split_record(self, steps: int) -> dict:
        pairs = steps * self.batch_size
        return {
            "train_images": len(self.train_items),
            "eval_images": len(self.eval_items),
            "passes_over_images": round(pairs / max(1, len(self.train_items)), 3),
            "text_pairs": self.text_pairs,
        }
