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
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, Dataset

from hybrid_retrieval.atomic import atomic_directory
from hybrid_retrieval.data.base import HybridBatchDataModule
from hybrid_retrieval.data.sampler import Example, ItemLanguages
from hybrid_retrieval.errors import DataFormatError, ZeroShotError
from hybrid_retrieval.paths import cache_root


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


# ----------------------------------------------------------------------------------------------- synthetic set
SYN_COLOURS = {
    "en": ["red", "green", "blue", "yellow", "purple", "orange"],
    "de": ["rot", "grün", "blau", "gelb", "lila", "orange"],
    "fr": ["rouge", "vert", "bleu", "jaune", "violet", "orange"],
    "es": ["rojo", "verde", "azul", "amarillo", "morado", "naranja"],
}
SYN_SHAPES = {
    "en": ["circle", "square", "triangle", "cross"],
    "de": ["Kreis", "Quadrat", "Dreieck", "Kreuz"],
    "fr": ["cercle", "carré", "triangle", "croix"],
    "es": ["círculo", "cuadrado", "triángulo", "cruz"],
}
SYN_PLACES = {
    "en": ["top left", "top right", "bottom left", "bottom right"],
    "de": ["oben links", "oben rechts", "unten links", "unten rechts"],
    "fr": ["en haut à gauche", "en haut à droite", "en bas à gauche", "en bas à droite"],
    "es": ["arriba a la izquierda", "arriba a la derecha", "abajo a la izquierda", "abajo a la derecha"],
}
SYN_SIZES = {"en": ["small", "large"], "de": ["klein", "groß"], "fr": ["petit", "grand"], "es": ["pequeño", "grande"]}
SYN_TEMPLATES = {
    "en": ["a {size} {colour} {shape} at the {place}", "{place}: a {colour} {shape}, {size}"],
    "de": ["ein {shape}, {colour} und {size}, {place}", "{place} ein {size}es {colour}es {shape}"],
    "fr": ["un {shape} {colour} {size} {place}", "{place}, un {size} {shape} {colour}"],
    "es": ["un {shape} {colour} {size} {place}", "{place}, un {shape} {size} de color {colour}"],
}
SYN_LANGUAGES = tuple(SYN_TEMPLATES)
_RGB = [(220, 30, 30), (30, 170, 30), (30, 60, 220), (235, 215, 20), (140, 40, 170), (250, 140, 0)]


def _draw(shape: int, colour: int, place: int, size: int, px: int, rng: random.Random) -> Image.Image:
    im = Image.new("RGB", (px, px), tuple(rng.randint(200, 255) for _ in range(3)))
    d = ImageDraw.Draw(im)
    half = px // 2
    r = (px * (0.12 if size == 0 else 0.2)) * rng.uniform(0.85, 1.15)
    cx = (place % 2) * half + half / 2 + rng.uniform(-0.12, 0.12) * half
    cy = (place // 2) * half + half / 2 + rng.uniform(-0.12, 0.12) * half
    fill = tuple(min(255, max(0, c + rng.randint(-25, 25))) for c in _RGB[colour])
    box = [cx - r, cy - r, cx + r, cy + r]
    if shape == 0:
        d.ellipse(box, fill=fill)
    elif shape == 1:
        d.rectangle(box, fill=fill)
    elif shape == 2:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:
        w = r / 3
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    return im


def synthetic_scenes() -> list[tuple[int, int, int, int]]:
    """Every (shape, colour, place, size): 4 × 6 × 4 × 2 = 192 distinct scenes, each with its own captions."""
    return [(s, c, p, z) for s in range(4) for c in range(6) for p in range(4) for z in range(2)]


def synthetic_captions(scene: tuple[int, int, int, int], lang: str) -> list[str]:
    s, c, p, z = scene
    words = {
        "shape": SYN_SHAPES[lang][s],
        "colour": SYN_COLOURS[lang][c],
        "place": SYN_PLACES[lang][p],
        "size": SYN_SIZES[lang][z],
    }
    return [t.format(**words) for t in SYN_TEMPLATES[lang]]


def make_synthetic_shapes(out_dir: str | Path, renderings: int, seed: int, image_size: int = 32) -> Path:
    """A learnable image–caption set (SYNTHETIC: it checks the pipeline, it answers no research question):
    ``renderings`` images of each of the 192 scenes (coloured shapes at positions, jittered), two template
    captions per language in en/de/fr/es. Written as this module's JSONL (returned) with PNGs; idempotent."""
    out = Path(out_dir)
    path = out / "captions.jsonl"
    if path.exists():
        return path
    rng = random.Random(seed)
    with atomic_directory(out, complete="captions.jsonl") as tmp:  # whole or not at all; a racing builder's copy wins
        (tmp / "images").mkdir()
        with (tmp / "captions.jsonl").open("w", encoding="utf-8") as fh:
            for k, scene in enumerate(synthetic_scenes()):
                caps = {lang: synthetic_captions(scene, lang) for lang in SYN_LANGUAGES}
                for r in range(renderings):
                    name = f"s{k:03d}_{r:02d}"
                    _draw(*scene, px=image_size, rng=rng).save(tmp / "images" / f"{name}.png")
                    row = {"id": name, "image": f"images/{name}.png", "captions": caps, "group": f"scene{k:03d}"}
                    fh.write(json.dumps(row) + "\n")
    return path


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
        self.train_items = self._read(self.train_cfg)
        self.eval_items = self._read(self.eval_cfg)
        check_images(self.train_items)
        check_images(self.eval_items)
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

        return DataLoader(_EvalImages(self.eval_items), batch_size=self.eval_batch_size, collate_fn=collate)

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
