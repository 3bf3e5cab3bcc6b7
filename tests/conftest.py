"""Shared fixtures: tiny LAReQA-format datasets and a tiny random encoder with the real XLM-R tokenizer."""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite keeps out of the user's cache (~/.cache/hybrid_retrieval: item stores, prefix caches, the converted
# offline model): every cache it builds goes under one temporary folder, subprocesses included (they inherit it).
_USER_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "hybrid_retrieval"
_SUITE_CACHE = Path(tempfile.mkdtemp(prefix="hybrid-retrieval-test-cache-"))
os.environ["HYBRID_RETRIEVAL_CACHE"] = str(_SUITE_CACHE)
os.environ["HF_DATASETS_CACHE"] = str(_SUITE_CACHE / "hf-datasets")  # Dataset.from_generator's cache, likewise


def _cache_listing(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in root.rglob("*")} if root.is_dir() else {}


_USER_CACHE_BEFORE = _cache_listing(_USER_CACHE)


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if anything in it wrote into the user's cache folder; remove the suite's own cache."""
    after = _cache_listing(_USER_CACHE)
    touched = sorted(p for p, t in after.items() if _USER_CACHE_BEFORE.get(p) != t)
    shutil.rmtree(_SUITE_CACHE, ignore_errors=True)
    if touched:
        print(f"\nerror: the test suite wrote into the user's cache {_USER_CACHE}: {touched[:5]}")
        session.exitstatus = 1


REPO = Path(__file__).resolve().parents[1]
WORDS = {
    "en": ["river", "city", "bridge", "king", "music", "school", "war", "paper", "science", "ocean", "mountain", "forest"],
    "de": ["fluss", "stadt", "brücke", "könig", "musik", "schule", "krieg", "papier", "wissenschaft", "ozean", "berg", "wald"],
    "es": ["río", "ciudad", "puente", "rey", "música", "escuela", "guerra", "papel", "ciencia", "océano", "montaña", "bosque"],
    "fr": ["fleuve", "ville", "pont", "roi", "musique", "école", "guerre", "papier", "science", "océan", "montagne", "forêt"],
}


def make_lareqa(
    root: Path, languages=("en", "de", "es"), n_articles=3, paras=2, sents=3, qpp=2, seed=0, coverage=None, prefix="art"
) -> Path:
    """Write ``{root}/{lang}.json`` in the LAReQA layout; question ids shared across languages.

    ``coverage(qid_index) -> set of languages`` decides which languages hold a question (MLQA-R-like);
    by default every language has every question (XQuAD-R-like).
    """
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    # Sentence k of paragraph p: the same "meaning" in every language (same word indices).
    plan = []
    for a in range(n_articles):
        for p in range(paras):
            sent_words = [[rng.randrange(len(WORDS["en"])) for _ in range(5)] for _ in range(sents)]
            questions = [(f"{prefix}{a}p{p}q{k}", rng.randrange(sents)) for k in range(qpp)]
            plan.append((a, p, sent_words, questions))
    q_counter = 0
    docs = {lang: {"version": "1.1", "data": []} for lang in languages}
    for a in range(n_articles):
        for lang in languages:
            docs[lang]["data"].append({"title": f"{prefix}_{a}", "paragraphs": []})
    for a, _p, sent_words, questions in plan:
        for lang in languages:
            words = WORDS[lang]
            sentences = [" ".join(words[i] for i in ws) + f" {lang}{a}." for ws in sent_words]
            context, breaks = "", []
            for s in sentences:
                if context:
                    context += " "
                breaks.append([len(context), len(context) + len(s)])
                context += s
            qas = []
            for qi, (qid, answer_sent) in enumerate(questions):
                idx = q_counter + qi
                if coverage is not None and lang not in coverage(idx):
                    continue
                ws = sent_words[answer_sent]
                qas.append(
                    {
                        "id": qid,
                        "question": f"{words[ws[0]]} {words[ws[1]]} {words[ws[2]]}?",
                        "answers": [{"answer_start": breaks[answer_sent][0] + 1, "text": "x"}],
                    }
                )
            docs[lang]["data"][a]["paragraphs"].append(
                {"context": context, "qas": qas, "sentences": sentences, "sentence_breaks": breaks}
            )
        q_counter += len(questions)
    for lang, doc in docs.items():
        (root / f"{lang}.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return root


def load_script(name: str):
    """Import ``scripts/{name}`` (a study's own code, not part of the package) as a module."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / name
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_data(tmp_path) -> tuple[Path, Path]:
    """(train_root, eval_root): disjoint tiny datasets (different ids, titles, texts)."""
    train = make_lareqa(
        tmp_path / "train-r",
        languages=("en", "de", "es"),
        n_articles=4,
        seed=1,
        prefix="tr",
        coverage=lambda i: {"en", "de", "es"} if i % 3 else {"en", "de"},
    )
    evald = make_lareqa(tmp_path / "eval-r", languages=("en", "de", "es", "fr"), n_articles=2, seed=2, prefix="ev")
    return train, evald


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT (hidden 32) with the real XLM-R tokenizer, saved as a local model."""
    import torch
    from transformers import BertConfig, BertModel

    from hybrid_retrieval.common.offline_model import write_tokenizer

    out = tmp_path_factory.mktemp("tiny-model")
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=250002,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=1,
    )
    BertModel(cfg, add_pooling_layer=False).save_pretrained(out)
    write_tokenizer(out, max_length=128)
    return out


@pytest.fixture(scope="session")
def xlmr_tokenizer(tiny_model_dir):
    from hybrid_retrieval.models.encoder import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="session")
def tiny_encoder_factory(tiny_model_dir, xlmr_tokenizer):
    from hybrid_retrieval.models.encoder import DualEncoder

    def make(**kw):
        kw.setdefault("max_length", 32)
        return DualEncoder(name=str(tiny_model_dir), tokenizer=xlmr_tokenizer, **kw)

    return make


def copy_dir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def make_beir(
    root: Path, n_docs: int = 40, n_queries: int = 8, seed: int = 0, qrels_format: str = "beir", split: str = "dev"
) -> Path:
    """A tiny ad-hoc benchmark in the BEIR/MIRACL layout: documents in four languages, graded judgments
    (incl. a query whose judgments are all 0 and a judgment naming a document that is not in the corpus)."""
    rng = random.Random(seed)
    langs = sorted(WORDS)
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    docs = []
    for i in range(n_docs):
        lang = langs[i % len(langs)]
        words = [rng.choice(WORDS[lang]) for _ in range(6)]
        docs.append({"_id": f"d{i}", "title": f"{lang} {words[0]}", "text": " ".join(words) + "."})
    (root / "corpus.jsonl").write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    queries, lines = [], []
    for q in range(n_queries):
        target = docs[rng.randrange(n_docs)]
        queries.append({"_id": f"q{q}", "text": " ".join(target["text"].split()[:3]) + "?"})
        lines.append((f"q{q}", target["_id"], 2))
        lines.append((f"q{q}", docs[rng.randrange(n_docs)]["_id"], 1))
    lines.append(("q0", "d_missing", 1))  # judged, but not in the corpus
    queries.append({"_id": "q_zero", "text": "nothing relevant"})
    lines.append(("q_zero", "d0", 0))  # no relevant document: not evaluated
    (root / "queries.jsonl").write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in queries), encoding="utf-8")
    if qrels_format == "beir":
        body = "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in lines)
    else:  # TREC qrels, as MIRACL ships them
        body = "".join(f"{q} Q0 {d} {g}\n" for q, d, g in lines)
    (root / "qrels" / f"{split}.tsv").write_text(body, encoding="utf-8")
    return root


@pytest.fixture
def tiny_beir(tmp_path) -> Path:
    return make_beir(tmp_path / "tiny-beir")
