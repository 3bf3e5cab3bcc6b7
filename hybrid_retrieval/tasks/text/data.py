"""The text task's data module: hybrid-sampled training batches (the shared base,
:class:`~hybrid_retrieval.data.base.HybridBatchDataModule`) and sharded evaluation encoding.

Training: parallel items (LAReQA, JSONL, Parquet, Arrow, aligned files, a hub dataset), tokenized lazily per drawn
example or once up front (the frozen-prefix cache).

Validation: every question and candidate text of the evaluation benchmark is tokenized once; each
rank encodes a contiguous, length-sorted shard; :class:`~hybrid_retrieval.tasks.text.evaluators.LareqaEvaluator`
gathers the embeddings and computes the LAReQA metrics.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch.utils.data import DataLoader

from hybrid_retrieval.common.errors import ConfigError, ZeroShotError, require_choice
from hybrid_retrieval.common.timing import phase
from hybrid_retrieval.data.base import HybridBatchDataModule, ShardedLengthSampler
from hybrid_retrieval.data.corpus import EvalCorpus
from hybrid_retrieval.data.guard import check_zero_shot
from hybrid_retrieval.data.item_languages import ItemLanguages
from hybrid_retrieval.data.item_store import HubDataset, ItemStore, build_store
from hybrid_retrieval.data.lareqa import DevSplit, LareqaDataset, load_lareqa, split_dev, subsample_questions
from hybrid_retrieval.data.pairs import ParallelItem, items_from_lareqa, load_jsonl_items
from hybrid_retrieval.tasks.text.batches import (
    EvalCollator,
    EvalTextDataset,
    LazyPairDataset,
    PairCollator,
    PairDataset,
    TokenizedView,
)

log = logging.getLogger(__name__)

#: What validation (and so checkpoint selection and the sweep metric) measures: the zero-shot evaluation
#: benchmark, or the dev split held out of the training benchmark (``data.dev``), for model selection.
VALIDATE_ON = ("eval", "dev")
#: Training data formats: lareqa (a benchmark folder), jsonl (parallel items), parquet / arrow (the item store's
#: columns: a file, or a datasets.save_to_disk folder), aligned (per-language JSONL files by id: data.train.files).
#: hub: ``datasets.load_dataset(data.train.path, data.train.config, split=data.train.split)`` with the same columns.
TRAIN_FORMATS = ("lareqa", "jsonl", "parquet", "arrow", "aligned", "hub")
#: When training texts are tokenized: per drawn example in the loader ("lazy", memory = the texts only) or all
#: once in setup ("upfront"; always with the frozen-prefix cache, which needs every text's states).
TOKENIZE = ("lazy", "upfront")


def _to_prefix_rows(encoder, tokenized: list[dict[str, TokenizedView]]) -> list[dict[str, TokenizedView]]:
    """Replace every token-id list by its cached frozen-prefix states (one cache per text kind)."""
    q_ids = [v.query for row in tokenized for v in row.values()]
    p_ids = [x for row in tokenized for v in row.values() for x in (v.positive, *v.negatives)]
    q_rows = iter(encoder.model_rows(q_ids, "query", progress=True))
    p_rows = iter(encoder.model_rows(p_ids, "passage", progress=True))
    out = []
    for row in tokenized:
        new = {}
        for lg, v in row.items():
            q, pos = next(q_rows), next(p_rows)
            new[lg] = TokenizedView(q, pos, [next(p_rows) for _ in v.negatives], v.positive_key, v.negative_keys)
        out.append(new)
    return out


def check_validate_on(value, dev_fraction) -> None:
    require_choice("data.validate_on", value, VALIDATE_ON)
    if value == "dev" and dev_fraction is None:
        raise ConfigError("data.validate_on", value, "needs data.dev.fraction (the held-out share of the training data)")


def check_tokenize(value) -> None:
    require_choice("data.tokenize", value, TOKENIZE)


def check_train_format(value) -> None:
    require_choice("data.train.format", value, TRAIN_FORMATS)


class TextDataModule(HybridBatchDataModule):
    def __init__(
        self,
        train: dict,
        eval: dict,
        batch_size: int = 32,
        sampler: dict | None = None,
        hard_negatives: int = 0,
        with_context: bool = False,
        eval_batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        allow_overlap: bool = False,
        strict: bool = False,
        dev: dict | None = None,
        validate_on: str = "eval",
        tokenize: str = "lazy",
    ):
        super().__init__(batch_size, sampler, seed, num_workers)
        self.train_cfg, self.eval_cfg = dict(train), dict(eval)
        self.hard_negatives, self.with_context = int(hard_negatives), bool(with_context)
        self.eval_batch_size = int(eval_batch_size)
        self.allow_overlap, self.strict = allow_overlap, strict
        self.dev_cfg = dict(dev or {})
        check_validate_on(validate_on, self.dev_cfg.get("fraction"))
        self.validate_on = validate_on
        check_tokenize(tokenize)
        self.tokenize = tokenize
        self.dev_split: DevSplit | None = None  # the held-out articles of the training benchmark (data.dev)
        self.guard_reports: dict = {}  # "train_vs_eval" / "train_vs_dev": OverlapReport counts, for the job record
        self.encoder = None
        self.items: list[ParallelItem] | None = None
        self._languages: ItemLanguages | None = None  # of in-memory items (a store keeps its own)
        self.eval_dataset: LareqaDataset | None = None
        self.corpus: EvalCorpus | None = None
        # Filled by setup(): declared here so every field has one owner and exists from the start.
        self.tokenized: list[dict[str, TokenizedView]] = []  # per item: language -> model rows
        self.eval_ids: list = []  # evaluation rows: questions first, then candidates
        self.n_eval_queries = 0

    # The module's encoder supplies tokenizer, prefixes and max length.
    def attach_encoder(self, encoder) -> None:
        self.encoder = encoder

    def _tokenize(self, texts: list[str], kind: str) -> list[list[int]]:
        return self.encoder.token_ids(texts, kind)

    def load_train_items(self) -> list[ParallelItem] | ItemStore:
        """The training items: a list (LAReQA; small JSONL with ``data.train.store=false``) or a memory-mapped
        :class:`ItemStore` (JSONL by default, Parquet, a ``save_to_disk`` folder, per-language aligned files)."""
        cfg = self.train_cfg
        fmt = cfg.get("format", "lareqa")
        if fmt == "lareqa":
            return items_from_lareqa(self._train_lareqa(), with_context=self.with_context, hard_negatives=self.hard_negatives)
        languages = cfg.get("languages")
        if fmt == "jsonl" and not cfg.get("store", True):
            return load_jsonl_items(cfg["path"], languages)
        if fmt in ("jsonl", "parquet", "arrow"):
            return build_store(cfg["path"], languages)
        if fmt == "aligned":
            return build_store(dict(cfg["files"]), languages)
        if fmt == "hub":
            source = HubDataset(str(cfg["path"]), cfg.get("config"), cfg.get("split") or "train", cfg.get("revision"))
            return build_store(source, languages)
        check_train_format(fmt)

    def item_languages(self) -> ItemLanguages:
        """What the sampler needs: the store's language matrix, or that of the items in memory."""
        if isinstance(self.items, ItemStore):
            return self.items.languages_table
        if self._languages is None:  # once: the sampler is built three times (preflight, schedule, loader)
            self._languages = ItemLanguages.from_lists(item.languages for item in self.items)
        return self._languages

    def _train_lareqa(self) -> LareqaDataset:
        """The LAReQA training benchmark, minus its dev split when ``data.dev.fraction`` is set (loaded once)."""
        if self.dev_split is not None:
            return self.dev_split.train
        cfg = self.train_cfg
        ds = load_lareqa(cfg["root"], cfg.get("languages"), name=cfg.get("name"), strict=self.strict)
        fraction = self.dev_cfg.get("fraction")
        if fraction is None:
            return ds
        self.dev_split = split_dev(ds, float(fraction), seed=int(self.dev_cfg.get("seed", 0)))
        log.info("dev split: %s", self.dev_split.record())
        return self.dev_split.train

    def _train_name(self) -> str:
        """What the training data is called in records and messages: the benchmark, or the JSONL file's name."""
        fmt = self.train_cfg.get("format", "lareqa")
        if fmt in ("jsonl", "parquet", "arrow"):
            return Path(str(self.train_cfg["path"])).name
        if fmt == "hub":
            return str(self.train_cfg["path"])
        if fmt == "aligned":
            return Path(str(next(iter(dict(self.train_cfg["files"]).values())))).parent.name
        return Path(str(self.train_cfg["root"])).name  # the folder trained on (data.train.name may be stale)

    def _guard(self, name: str, target: LareqaDataset) -> None:
        report = check_zero_shot(self.items, target, train_name=self._train_name())
        self.guard_reports[name] = dict(report.counts)
        log.info("%s", report.describe())
        if report.overlaps and not self.allow_overlap:
            raise ZeroShotError(
                f"{report.summary_line()} — refusing to train on the evaluation data (zero-shot); "
                "data.allow_overlap=true overrides"
            )

    def preflight(self) -> None:
        """Everything bad data can break, before a model loads, W&B starts or anything is tokenized: parse the
        evaluation and training data, the dev split, the zero-shot guard, and whether the sampler can fill its
        batches. Idempotent; :meth:`setup` calls it too."""
        if self.eval_dataset is None:
            cfg = self.eval_cfg
            with phase("evaluation data"):
                self.eval_dataset = load_lareqa(cfg["root"], cfg.get("languages"), name=cfg.get("name"), strict=self.strict)
            if cfg.get("max_questions") is not None:  # 0 is rejected by the config check, never "all"
                self.eval_dataset = subsample_questions(self.eval_dataset, int(cfg["max_questions"]), seed=0)
                log.warning(
                    "evaluating on a subset: %s (not comparable with full-benchmark numbers)", self.eval_dataset.summary()
                )
            if self.dev_cfg.get("fraction") is not None:
                if self.train_cfg.get("format", "lareqa") != "lareqa":
                    raise ConfigError("data.dev.fraction", self.dev_cfg["fraction"], "a dev split needs data.train.format=lareqa")
                with phase("dev split"):
                    self._train_lareqa()
        if self.items is None:
            with phase("training items"):
                items = self.load_train_items()
            self.items = items
            with phase("zero-shot guard"):
                self._guard("train_vs_eval", self.eval_dataset)
                if self.dev_split is not None:
                    self._guard("train_vs_dev", self.dev_split.dev)
            with phase("language check"):
                self._check_languages()
            self.make_sampler(0, 1)  # raises SamplerError if the batches cannot be filled

    def _check_languages(self) -> None:
        """Training languages the evaluation set lacks are trained on but never scored: say so once."""
        table = self.item_languages()
        train_langs = [name for j, name in enumerate(table.names) if table.matrix[:, j].any()]
        target = self.dev_split.dev if self.validate_on == "dev" else self.eval_dataset
        unscored = [lang for lang in train_langs if lang not in target.languages]
        if unscored:
            log.warning(
                "training languages %s are not in the evaluation set %s (%s): they are trained on, never scored",
                unscored,
                target.name,
                ", ".join(target.languages),
            )

    def setup(self, stage: str | None = None) -> None:
        if self.encoder is None:
            raise RuntimeError("TextDataModule.attach_encoder(model.encoder) must be called before setup")
        self.preflight()
        if self.corpus is None:
            target = self.dev_split.dev if self.validate_on == "dev" else self.eval_dataset
            self.corpus = EvalCorpus.from_dataset(target, with_context=self.with_context)
            with phase("evaluation tokenization"):
                q_ids = self.encoder.model_rows(self._tokenize(self.corpus.q_texts, "query"), "query", progress=True)
                c_ids = self.encoder.model_rows(self._tokenize(self.corpus.c_texts, "passage"), "passage", progress=True)
            self.eval_ids = q_ids + c_ids
            self.n_eval_queries = len(q_ids)
        if stage in (None, "fit") and not self.tokenized and self._upfront():
            with phase("training tokenization (upfront)"):
                self._tokenize_upfront()

    def _tokenize_upfront(self) -> None:
        """Every training text's model rows, once (``data.tokenize=upfront`` or the frozen-prefix cache)."""
        self.tokenized = []
        text_keys: dict[str, int] = {}  # passage text -> key, in item order: the same on every rank

        def key(text: str) -> int:
            return text_keys.setdefault(text, len(text_keys))

        for item in self.items:
            langs = list(item.views)
            qs = self._tokenize([item.views[lg].query for lg in langs], "query")
            ps = self._tokenize([item.views[lg].positive for lg in langs], "passage")
            row = {}
            for lg, q, p in zip(langs, qs, ps, strict=True):
                view = item.views[lg]
                negs = list(view.negatives)
                keys = tuple(key(t) for t in negs)
                row[lg] = TokenizedView(q, p, self._tokenize(negs, "passage"), key(view.positive), keys)
            self.tokenized.append(row)
        if getattr(self.encoder, "prefix_cache", False):
            self.tokenized = _to_prefix_rows(self.encoder, self.tokenized)

    def _upfront(self) -> bool:
        """Tokenize every training text once in setup (the prefix cache needs every text's states up front)?"""
        return self.tokenize == "upfront" or bool(getattr(self.encoder, "prefix_cache", False))

    def eval_size_record(self) -> dict:
        corpus = self.corpus
        return {
            "eval_questions": len(corpus.q_texts) if corpus is not None else None,
            "eval_candidates": len(corpus.c_texts) if corpus is not None else None,
        }

    def positive_key(self):
        items = self.items
        if isinstance(items, ItemStore):
            return items.positive

        def positive_text(item: int, lang: str) -> str:
            return items[item].views[lang].positive

        return positive_text

    def split_record(self, steps: int) -> dict:
        """What was trained on and validated on: the dev split (if any), the guard's overlap counts, and the
        passes over the training items (pairs seen / items: data repetition at large batch x steps)."""
        n = len(self.items or [])
        return {
            "validated_on": self.corpus.name if self.validate_on == "dev" else "eval",
            "dev_split": self.dev_split.record() if self.dev_split is not None else None,
            "guard": self.guard_reports,
            "train_items": n,
            "passes": round(steps * self.batch_size / n, 4) if n else None,
        }

    def train_dataset(self):
        return PairDataset(self.tokenized) if self._upfront() else LazyPairDataset(self.items, self.encoder.token_ids)

    def train_collator(self) -> PairCollator:
        return PairCollator(self.encoder.tokenizer.pad_token_id or 0, self.hard_negatives)

    def val_dataloader(self) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer else 0
        world = self.trainer.world_size if self.trainer else 1
        sampler = ShardedLengthSampler([len(x) for x in self.eval_ids], self.eval_batch_size, rank, world)
        pad = self.encoder.tokenizer.pad_token_id or 0
        return DataLoader(
            EvalTextDataset(self.eval_ids),
            batch_sampler=sampler,
            collate_fn=EvalCollator(pad, self.n_eval_queries),
            num_workers=0,
        )
