"""Image–text: the data format and its bad inputs, hybrid batching's α on image–caption data, the towers (tiny
random models saved with ``save_pretrained``: the real loading code, no hub), metrics against a brute-force
reference, CLIPScore against torchmetrics, and the synthetic experiment end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hybrid_retrieval.common.errors import DataFormatError, ZeroShotError
from hybrid_retrieval.evaluation.image_text_eval import clip_score, evaluate_image_text
from hybrid_retrieval.tasks.image_text.data import ImageTextDataModule, check_images, read_image_captions, read_xm3600
from hybrid_retrieval.tasks.image_text.synthetic import SYN_LANGUAGES, make_synthetic_shapes, synthetic_scenes


def _png(path: Path, colour=(200, 10, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path)
    return path


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _row(i: int, langs=("en", "de")) -> dict:
    return {"id": f"im{i}", "image": f"images/im{i}.png", "captions": {x: [f"{x} caption {i}"] for x in langs}}


# ----------------------------------------------------------------------------------------------------- format
def test_reads_the_format_relative_paths_single_and_list_captions(tmp_path):
    for i in range(3):
        _png(tmp_path / "images" / f"im{i}.png")
    rows = [_row(0), _row(1), {**_row(2), "captions": {"en": "just one", "fr": ["un", "deux"]}, "group": "g"}]
    items = read_image_captions(_jsonl(tmp_path / "c.jsonl", rows))
    assert [it.item_id for it in items] == ["im0", "im1", "im2"]
    assert items[0].image == tmp_path / "images" / "im0.png"
    assert items[2].captions == {"en": ("just one",), "fr": ("un", "deux")}
    assert items[2].key == "g" and items[0].key == "im0"
    assert read_image_captions(tmp_path / "c.jsonl", languages=["en"])[2].captions == {"en": ("just one",)}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["{not json"], "line 1: a JSON object"),
        ([{"id": "im0", "captions": {"en": ["x"]}}], 'line 1: a JSON object with string "id" and "image"'),
        ([{"id": "im9", "image": "images/im9.png", "captions": {"en": ["x"]}}], "line 1 (item 'im9'): an existing image file"),
        ([{**_row(0), "captions": {}}], "line 1 (item 'im0'): expected \"captions\""),
        ([{**_row(0), "captions": {"en": [""]}}], 'captions["en"]: expected a non-empty caption'),
        ([_row(0), _row(0)], "line 2 (item 'im0'): a unique id"),
        ([], "file: at least one image with captions"),
    ],
)
def test_bad_input_names_file_line_and_item(tmp_path, rows, message):
    _png(tmp_path / "images" / "im0.png")
    path = _jsonl(tmp_path / "c.jsonl", rows)
    with pytest.raises(DataFormatError) as err:
        read_image_captions(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_missing_caption_language_names_the_item(tmp_path):
    for i in range(2):
        _png(tmp_path / "images" / f"im{i}.png")
    path = _jsonl(tmp_path / "c.jsonl", [_row(0), _row(1, langs=("en",))])
    with pytest.raises(DataFormatError, match=r"item 'im1': captions in \['de'\] \(languages asked for: \['en', 'de'\]"):
        read_image_captions(path, languages=["en", "de"])


def test_unreadable_image_names_the_item(tmp_path):
    _png(tmp_path / "images" / "im0.png")
    (tmp_path / "images" / "im1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    items = read_image_captions(_jsonl(tmp_path / "c.jsonl", [_row(0), _row(1)]))
    with pytest.raises(DataFormatError, match=r"im1\.png: item 'im1': a readable image"):
        check_images(items)


def test_xm3600_layout(tmp_path):
    _png(tmp_path / "images" / "abc.jpg")
    row = {"image/key": "abc", "image/locale": "de", "en": {"caption": ["a dog", "dog"]}, "de": {"caption": ["ein Hund"]}}
    _jsonl(tmp_path / "captions.jsonl", [row])
    (item,) = read_xm3600(tmp_path)
    assert item.item_id == "abc" and item.captions == {"en": ("a dog", "dog"), "de": ("ein Hund",)}
    _jsonl(tmp_path / "captions.jsonl", [{**row, "image/key": "zzz"}])
    with pytest.raises(DataFormatError, match=r"item 'zzz'\): an existing image file"):
        read_xm3600(tmp_path)


def test_synthetic_set_is_deterministic_and_complete(tmp_path):
    a = read_image_captions(make_synthetic_shapes(tmp_path / "a", renderings=1, seed=3, image_size=16))
    b = read_image_captions(make_synthetic_shapes(tmp_path / "b", renderings=1, seed=3, image_size=16))
    assert len(a) == len(synthetic_scenes()) == 192
    assert all(it.languages == sorted(SYN_LANGUAGES) and all(len(c) == 2 for c in it.captions.values()) for it in a)
    assert len({it.captions["en"] for it in a}) == 192  # every scene has its own captions
    assert np.array_equal(np.asarray(Image.open(a[5].image)), np.asarray(Image.open(b[5].image)))
    assert make_synthetic_shapes(tmp_path / "a", renderings=1, seed=3, image_size=16) == tmp_path / "a" / "captions.jsonl"


# ---------------------------------------------------------------------------------------------------- sampler
def _datamodule(tmp_path, **kw) -> ImageTextDataModule:
    kw.setdefault("batch_size", 16)
    return ImageTextDataModule(
        train={"format": "synthetic", "path": str(tmp_path / "syn"), "renderings": 1, "seed": 0, "image_size": 16},
        eval={"format": "synthetic", "path": str(tmp_path / "syn"), "renderings": 1, "seed": 1, "image_size": 16},
        image_size=16,
        **kw,
    )


@pytest.mark.parametrize("alpha", [0.0, 0.25, 1.0])
def test_alpha_is_realised_exactly_and_mixed_batches_mix_caption_languages(tmp_path, alpha):
    dm = _datamodule(tmp_path, sampler={"alpha": alpha, "batches_per_epoch": 8}, text_pairs=True)
    dm.preflight()
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 8
    mono = [len(set(b["caption_langs"])) == 1 for b in batches]
    assert sum(mono) == round(alpha * 8)
    assert dm.sampling_record(8)["realised_alpha"] == round(alpha * 8) / 8
    for b, is_mono in zip(batches, mono, strict=True):
        assert b["pixel_values"].shape == (16, 3, 16, 16)
        assert len(set(b["index"].tolist())) == 16  # no image twice in a batch
        if is_mono:
            assert all(c is None for c in b["pair_captions"])
        else:  # a second caption language per example: the caption -> caption pair of the same image
            assert all(c is not None for c in b["pair_captions"])
        for i, cap, lang in zip(b["index"].tolist(), b["captions"], b["caption_langs"], strict=True):
            assert cap in dm.train_items[i].captions[lang]


def test_same_images_in_train_and_eval_is_refused(tmp_path):
    dm = _datamodule(tmp_path)
    dm.eval_cfg = dict(dm.train_cfg)
    with pytest.raises(ZeroShotError, match="192 image file"):
        dm.preflight()


# ----------------------------------------------------------------------------------------------------- metrics
def _brute(img, cap, owner, langs, keys):
    img = torch.nn.functional.normalize(img.double(), dim=-1).numpy()
    cap = torch.nn.functional.normalize(cap.double(), dim=-1).numpy()
    ck = [keys[o] for o in owner]

    def order(q, cands):  # candidates by score descending, ties by index
        s = cands @ q
        return sorted(range(len(cands)), key=lambda j: (-s[j], j))

    def ap(ranking, rel):
        hits, total = 0, 0.0
        for r, j in enumerate(ranking, 1):
            if j in rel:
                hits += 1
                total += hits / r
        return total / len(rel)

    out = {}
    for x in sorted(set(langs)):
        cx = [i for i, lang in enumerate(langs) if lang == x]
        for k in (1, 5, 10):
            out[f"t2i/{x}/r@{k}"] = np.mean([any(keys[j] == ck[c] for j in order(cap[c], img)[:k]) for c in cx])
            hits = []
            for i in range(len(img)):
                if any(ck[c] == keys[i] for c in cx):
                    ranked = [cx[j] for j in order(img[i], cap[cx])]
                    hits.append(any(ck[c] == keys[i] for c in ranked[:k]))
            out[f"i2t/{x}/r@{k}"] = np.mean(hits)
        out[f"clipscore/{x}"] = max(100 * np.mean([img[owner[c]] @ cap[c] for c in cx]), 0)
        for y in sorted(set(langs)):
            cy = [i for i, lang in enumerate(langs) if lang == y]
            aps = []
            for c in cx:
                cands = [j for j in cy if j != c]
                rel = {j for j in cands if ck[j] == ck[c]}
                if rel:
                    ranked = [cands[j] for j in order(cap[c], cap[cands])]
                    aps.append(ap(ranked, rel))
            out[f"caption/{x}-{y}/map"] = np.mean(aps)
    aps, dists = [], []
    for i in range(len(img)):
        ranked = order(img[i], cap)
        rel = {j for j in range(len(cap)) if ck[j] == keys[i]}
        aps.append(ap(ranked, rel))
        rr = [r for r, j in enumerate(ranked, 1) if j in rel]
        dists.append(max(rr) - min(rr))
    out["multi/map"], out["multi/rank_distance"] = np.mean(aps), np.mean(dists)
    return out


def test_metrics_equal_a_brute_force_reference():
    g = torch.Generator().manual_seed(0)
    n_img, dim = 14, 6
    img = torch.randn(n_img, dim, generator=g)
    keys = [f"s{i % 11}" for i in range(n_img)]  # images 11..13 repeat scenes 0..2
    owner, langs = [], []
    for i in range(n_img):
        for x, k in (("en", 2), ("de", 1), ("fr", 1 + i % 2)):
            owner += [i] * k
            langs += [x] * k
    cap = img[owner] + 0.9 * torch.randn(len(owner), dim, generator=g)  # noisy captions of their images
    cap[3] = cap[4]  # a tie
    got = evaluate_image_text(img, cap, owner, langs, keys).flat("val")
    want = _brute(img, cap, owner, langs, keys)
    for name, value in want.items():
        assert got[f"val/{name}"] == pytest.approx(value, abs=1e-9), name
    assert got["val/t2i/r@1"] == pytest.approx(np.mean([want[f"t2i/{x}/r@1"] for x in ("de", "en", "fr")]))


def test_clip_score_formula_is_torchmetrics():
    from torchmetrics.functional.multimodal.clip_score import clip_score as tm_clip_score  # noqa: F401 - importable

    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    # torchmetrics: max(100 · mean(cos), 0) (clamped after the mean): (1 + 0 + 0.7071) / 3 · 100
    assert clip_score(a, b) == pytest.approx(100 * (1 + 0 + 2**-0.5) / 3)
    assert clip_score(a[1:2], -a[1:2]) == 0.0


# ------------------------------------------------------------------------------------------------------ towers
def _bytes_to_unicode() -> list[str]:
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A random CLIP (2 layers, width 32, 32-px images) with a byte-level tokenizer, saved as a local model."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in _bytes_to_unicode():
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    text = {"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    text |= {"num_attention_heads": 2, "max_position_embeddings": 64, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    vision |= {"image_size": 32, "patch_size": 8}
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-clip")
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(out)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=processor, tokenizer=CLIPTokenizer(vocab=vocab, merges=[])).save_pretrained(out)
    return out


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)) for _ in range(n)]


def test_whole_clip_from_a_local_checkpoint_and_clipscore_equals_torchmetrics(tiny_clip_dir):
    from torchmetrics.multimodal.clip_score import CLIPScore

    from hybrid_retrieval.tasks.image_text.model import ImageTextEncoder, TorchmetricsCLIP

    enc = ImageTextEncoder.from_hub(str(tiny_clip_dir)).eval()
    assert enc.clip_model is not None and enc.dim == 16
    images, texts = _images(4), ["a red circle", "ein Kreis", "un carré", "blue"]
    with torch.no_grad():
        ours = clip_score(enc.encode_images(enc.preprocess(images)), enc.encode_texts(texts))
    metric = CLIPScore(model_name_or_path=lambda: (TorchmetricsCLIP(enc.clip_model), enc.clip_processor))
    metric.update([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in images], texts)
    assert ours == pytest.approx(float(metric.compute()), abs=1e-3)
    assert ours > 0  # a random model has some positive similarity here: the comparison is not 0 == 0


def test_hub_config_locks_one_half_of_a_whole_clip(tiny_clip_dir):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from hybrid_retrieval.common.paths import CONFIG_DIR
    from hybrid_retrieval.runs.sweeps import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train", overrides=["+experiment=image_text_synthetic", "model=image_text_hub", f"model.encoder.name={tiny_clip_dir}"]
        )
    module = instantiate(cfg.model)
    clip = module.encoder.clip_model
    assert not any(p.requires_grad for p in clip.vision_model.parameters()) and not clip.visual_projection.weight.requires_grad
    assert all(p.requires_grad for p in clip.text_model.parameters()) and clip.text_projection.weight.requires_grad
    module.encoder.train()
    assert not clip.vision_model.training and clip.text_model.training


def test_vision_towers_from_local_checkpoints(tmp_path, tiny_clip_dir):
    from transformers import CLIPVisionModel, ViTConfig, ViTImageProcessor, ViTModel

    from hybrid_retrieval.tasks.image_text.model import ImageTower

    vit = tmp_path / "vit"
    ViTModel(
        ViTConfig(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48, image_size=32, patch_size=8)
    ).save_pretrained(vit)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(vit)
    clip_vision = tmp_path / "clip-vision"
    CLIPVisionModel.from_pretrained(tiny_clip_dir).save_pretrained(clip_vision)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(clip_vision)
    for path, width in ((vit, 24), (clip_vision, 32), (tiny_clip_dir, 16)):
        tower = ImageTower(str(path))
        out = tower(tower.preprocess(_images(3)))
        assert out.shape == (3, width) == (3, tower.out_dim), path.name


def test_locked_towers_cache_and_do_not_train(tiny_encoder_factory):
    from hybrid_retrieval.tasks.image_text.model import ImageTextEncoder, ImageTower, TextTower

    enc = ImageTextEncoder(
        ImageTower("small_cnn", image_size=16, width=4, out_dim=8),
        TextTower(tiny_encoder_factory()),
        dim=8,
        lock_image=True,
        lock_text=False,
    )
    enc.train()
    assert not enc.image_tower.training and enc.text_tower.training  # a locked tower never uses dropout / BN statistics
    px = enc.preprocess(_images(4))
    a = enc.encode_images(px, cache_keys=["a", "b", "c", "d"])
    assert set(enc._cache["image"]) == {"a", "b", "c", "d"}
    enc._cache["image"]["a"] = enc._cache["image"]["a"] + 1.0  # proof the cached value is used, not recomputed
    b = enc.encode_images(px, cache_keys=["a", "b", "c", "d"])
    assert torch.allclose(a[1:], b[1:]) and not torch.allclose(a[0], b[0])
    loss = enc.encode_texts(["x", "y", "z", "w"]).sum() + b.sum()
    loss.backward()
    assert all(p.grad is None for p in enc.image_tower.parameters())
    assert enc.image_proj.weight.grad is not None
    assert any(p.grad is not None for p in enc.text_tower.parameters())
    assert not enc._cache["text"]  # an unlocked tower is never cached


def test_offline_hub_name_is_one_line_naming_the_key(monkeypatch):
    from hybrid_retrieval.tasks.image_text.model import ImageTower

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError) as err:
        ImageTower("openai/clip-vit-base-patch32-not-cached")
    msg = str(err.value)
    assert (
        msg.startswith("model.image_tower.name='openai/clip-vit-base-patch32-not-cached': not a local directory")
        and "(HF_HUB_OFFLINE=1)" in msg
    )


# --------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.sampler.cross_mode=batch", "config data.sampler.cross_mode='batch': image–text mixed batches draw"),
        ("data.sampler.alpha=1.5", "config data.sampler.alpha=1.5: expected a probability"),
        ("data.train.format=coco", "config data.train.format='coco': expected one of jsonl, xm3600, synthetic"),
        ("data.train.format=jsonl", "config data.train.path=None: expected an existing image–caption JSONL"),
        ("model.text_pair_weight=-1", "config model.text_pair_weight=-1: expected a weight >= 0"),
    ],
)
def test_image_text_config_errors(override, message):
    from hydra import compose, initialize_config_dir

    from hybrid_retrieval.common.errors import ConfigError
    from hybrid_retrieval.common.paths import CONFIG_DIR
    from hybrid_retrieval.runs.config_check import validate_config
    from hybrid_retrieval.runs.sweeps import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["+experiment=image_text_synthetic", override])
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert str(err.value).startswith(message), str(err.value)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        validate_config(compose("train", overrides=["+experiment=image_text_synthetic"]))  # the default is valid


# ------------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_synthetic_experiment_trains_and_evaluates_through_the_cli(tmp_path, tiny_model_dir):
    import subprocess
    import sys

    run = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "HYBRID_RETRIEVAL_CACHE": str(tmp_path / "cache")}
    args = [
        "+experiment=image_text_synthetic",
        f"model.encoder.text_tower.name={tiny_model_dir}",
        "data.train.renderings=1",
        "data.languages=[en,de]",
        "data.image_size=16",
        "model.encoder.image_tower.width=4",
        "data.batch_size=32",
        "trainer.max_epochs=1",
        "logger=wandb",  # offline (WANDB_MODE): the per-language table and the heatmap are written into the run
        f"hydra.run.dir={run}",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "hybrid_retrieval.train", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "val/t2i/r@1" in proc.stdout and "val/clipscore" in proc.stdout and "val/multi/rank_distance" in proc.stdout
    table = proc.stdout[proc.stdout.index("lang ") :]
    assert table.splitlines()[1].split()[0] == "de" and table.splitlines()[2].split()[0] == "en"  # a line per language
    assert "192 images; chance t2i R@1 = 0.0052" in table
    (ev,) = (run / "eval").glob("epoch*.json")
    metrics = json.loads(ev.read_text())["metrics"]
    assert set(json.loads(ev.read_text())["languages"]) == {"de", "en"}
    for x in ("en", "de"):
        assert 0.0 <= metrics[f"t2i/{x}/r@1"] <= 1.0 and f"clipscore/{x}" in metrics
    media = [p.relative_to(run).as_posix() for p in run.glob("wandb/offline-run-*/files/media/**/*") if p.is_file()]
    assert any("val/languages_" in m and m.endswith(".table.json") for m in media), media
    assert any("val/caption_map_heatmap_" in m and m.endswith(".png") for m in media), media
    (table_file,) = [run / m for m in media if "val/languages_" in m]
    table_json = json.loads(table_file.read_text())
    assert table_json["columns"][:2] == ["language", "t2i/r@1"] and [r[0] for r in table_json["data"]] == ["de", "en"]
    record = json.loads((run / "result.json").read_text()) if (run / "result.json").exists() else None
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["global_step"] == 6  # ceil(192 / 32)
    if record is not None:
        assert record["sampling"]["realised_alpha"] == 0.5


def test_sweep_report_tables_from_records(tmp_path):
    from tests.conftest import load_script

    report = load_script("image_text_sweep_report.py")
    (tmp_path / "jobs").mkdir()
    for b, alpha, seed, r1 in ((16, 0.5, 0, 0.90), (16, 0.5, 1, 0.94), (64, 0.5, 0, 0.97)):
        metrics = {k: 0.5 for k in report.METRICS} | {"val/t2i/r@1": r1, "val/t2i/en/r@1": r1 - 0.01, "val/t2i/de/r@1": r1 + 0.01}
        rec = {
            "status": "ok",
            "batch_size": b,
            "alpha": alpha,
            "seed": seed,
            "steps": 6144 // b,
            "sampling": {"pairs": 6144, "realised_alpha": 0.5},
            "passes_over_images": 4.0,
            "wall_time_s": 60.0,
            "commit": "abc",
            "metrics": metrics,
        }
        (tmp_path / "jobs" / f"b{b}s{seed}.json").write_text(json.dumps(rec))
    (tmp_path / "jobs" / "failed.json").write_text(json.dumps({"status": "failed"}))
    assert report.main([str(tmp_path)]) == 0
    summary = (tmp_path / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("batch_size,alpha,seeds,steps,pairs,realised_alpha")
    assert summary[1].startswith("16,0.5,2,384,6144,0.5,0.92,")  # mean of the two seeds
    per_lang = (tmp_path / "per_language.csv").read_text().splitlines()
    assert per_lang[0] == "batch_size,alpha,t2i/de,t2i/en" and per_lang[2] == "64,0.5,0.98,0.96"
    assert (tmp_path / "batch_alpha.png").stat().st_size > 1000


def test_a_locked_image_tower_encodes_each_training_image_once(tmp_path, tiny_encoder_factory):
    import lightning as L

    from hybrid_retrieval.models.loss import InfoNCELoss
    from hybrid_retrieval.tasks.image_text.model import ImageTextEncoder, ImageTextModule, ImageTower, TextTower

    dm = _datamodule(tmp_path, sampler={"alpha": 0.5, "batches_per_epoch": 3}, eval_batch_size=50)
    tower = ImageTower("small_cnn", image_size=16, width=4, out_dim=8)
    seen = []
    tower.register_forward_hook(lambda m, args, out: seen.append(out.shape[0]))
    enc = ImageTextEncoder(tower, TextTower(tiny_encoder_factory()), dim=8, lock_image=True, lock_text=False)
    module = ImageTextModule(
        enc, InfoNCELoss(symmetric=True, mask_duplicates=True), lambda params: torch.optim.AdamW(params, lr=1e-3)
    )
    dm.attach_encoder(enc)
    trainer = L.Trainer(max_epochs=2, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 6
    assert seen == [50, 50, 50, 42]  # the 192 training images once, before the first step; none while training
    assert dm.train_set.decode_images is False and len(enc._cache["image"]) == 192
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"] is None  # batches no longer decode images
