"""A learnable image–caption set generated offline (SYNTHETIC: it checks the pipeline, it answers no research
question): coloured shapes at positions, two template captions per language in en/de/fr/es, written in the
image–caption JSONL format of :mod:`hybrid_retrieval.tasks.image_text.data`."""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

from hybrid_retrieval.common.atomic import atomic_directory

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
