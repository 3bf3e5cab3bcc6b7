"""Hybrid batch sampling (arXiv 2408.10536): each batch is monolingual with probability alpha.

Pure Python/numpy, no Lightning: the sampler yields, per batch, a list of :class:`Example`
``(item index, query language, passage language)``.

* Monolingual batch (probability ``alpha``): one language X for the whole batch, every example X→X.
  ``alpha_schedule="bernoulli"`` flips a coin per batch; ``"stratified"`` makes exactly round(α·n) of the
  n batches of an epoch monolingual, at seeded random positions, so even a short run realises α exactly.
* Cross-lingual batch: ``cross_mode="batch"`` (the paper) draws one pair X≠Y for the whole batch;
  ``cross_mode="example"`` draws X≠Y independently for each example among its item's languages.
* Languages (or pairs) are drawn with weight ``n ** language_temperature`` where ``n`` is the number of
  items that have that language (pair): 0 = uniform over languages, 1 = proportional to data.
* No two examples of a batch share an item (a shared question id would be a false negative).
* Epoch: ``ceil(n_items / batch_size)`` batches (or ``batches_per_epoch``). Each batch takes items not
  yet seen this epoch; when the eligible unseen items run out it *refills* from items already seen this
  epoch (counted in ``stats["refilled"]``), so every item is seen once per epoch where the language mix
  allows it. A language (pair) with fewer eligible items than ``batch_size`` cannot form a batch: it is
  excluded with a warning; if nothing can form a batch the constructor raises ``ValueError``.
* Deterministic in ``(seed, epoch)``. ``batch_size`` is the *global* batch: with ``world_size`` ranks,
  every rank draws the same global batch and keeps the contiguous slice ``rank`` of size
  ``batch_size / world_size``, so gathered negatives are exactly the global batch.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hybrid_retrieval.common.errors import ConfigError, SamplerError, require_choice
from hybrid_retrieval.data.item_languages import ItemLanguages

log = logging.getLogger(__name__)


ALPHA_SCHEDULES = ("bernoulli", "stratified")
CROSS_MODES = ("batch", "example")


@dataclass(frozen=True)
class Example:
    item: int  # index into the item list
    query_lang: str
    passage_lang: str


class _Pool:
    """A shuffled list of the items eligible for one setting, with a cursor for unseen items."""

    def __init__(self, members: np.ndarray):
        self.members = members
        self.cursor = 0

    def take(self, k: int, used: np.ndarray, in_batch: set[int], rng: np.random.Generator) -> tuple[list[int], int]:
        """``k`` items, unseen ones first; returns (items, number refilled from seen items)."""
        out: list[int] = []
        n = len(self.members)
        while len(out) < k and self.cursor < n:
            idx = int(self.members[self.cursor])
            self.cursor += 1
            if not used[idx] and idx not in in_batch:
                out.append(idx)
                in_batch.add(idx)
        refilled = 0
        if len(out) < k:
            # Refill from seen items: walk a fresh random order, skipping items already in this batch.
            order = rng.permutation(self.members)
            for idx in order:
                idx = int(idx)
                if idx not in in_batch:
                    out.append(idx)
                    in_batch.add(idx)
                    refilled += 1
                    if len(out) == k:
                        break
        return out, refilled


def _members(mask: np.ndarray) -> np.ndarray:
    """The indices where ``mask`` holds, as int32 when they fit (half the memory of int64, the same draws)."""
    idx = np.flatnonzero(mask)
    return idx.astype(np.int32) if len(mask) < 2**31 else idx


class _PairPools(Mapping):
    """``{(x, y): items with both languages}``, each computed from the availability matrix when read (never stored)."""

    def __init__(self, avail: np.ndarray, col: dict[str, int], keys: list[tuple[str, str]]):
        self._avail, self._col, self._keys = avail, col, keys

    def __getitem__(self, key: tuple[str, str]) -> np.ndarray:
        if key not in self._keys:
            raise KeyError(key)
        x, y = key
        return _members(self._avail[:, self._col[x]] & self._avail[:, self._col[y]])

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def check_alpha(value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError("data.sampler.alpha", value, "expected a probability in [0, 1]")


def check_cross_mode(value) -> None:
    require_choice("data.sampler.cross_mode", value, CROSS_MODES, "expected 'batch' or 'example'")


def check_alpha_schedule(value) -> None:
    require_choice("data.sampler.alpha_schedule", value, ALPHA_SCHEDULES, f"expected one of {', '.join(ALPHA_SCHEDULES)}")


class HybridBatchSampler:
    """Yields per-rank lists of :class:`Example`; see the module docstring for the semantics."""

    def __init__(
        self,
        item_languages: Sequence[Sequence[str]] | ItemLanguages,
        batch_size: int,
        alpha: float = 0.5,
        languages: Sequence[str] | None = None,
        cross_mode: str = "batch",
        language_temperature: float = 0.0,
        batches_per_epoch: int | None = None,
        alpha_schedule: str = "bernoulli",
        min_pool: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        check_alpha(alpha)
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: expected a positive integer")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank}, world_size={world_size}: expected 0 <= rank < world_size")
        if batch_size % world_size:
            raise ValueError(f"batch_size={batch_size} (global) must be divisible by world_size={world_size}")
        check_cross_mode(cross_mode)
        check_alpha_schedule(alpha_schedule)
        self.alpha_schedule = alpha_schedule
        # Settings need max(batch, min_pool) items: a batch-size sweep sets min_pool to its largest batch
        # so every batch size samples the same languages / pairs.
        self.min_pool = max(batch_size, int(min_pool or 0))
        self.batch_size, self.alpha, self.cross_mode = batch_size, float(alpha), cross_mode
        self.seed, self.rank, self.world_size = int(seed), rank, world_size
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, batches already consumed)
        self.stats: Counter = Counter()
        table = item_languages if isinstance(item_languages, ItemLanguages) else ItemLanguages.from_lists(item_languages)
        all_langs = [name for j, name in enumerate(table.names) if table.matrix[:, j].any()]
        self.languages = list(languages) if languages else all_langs
        missing = [lang for lang in self.languages if lang not in all_langs]
        if missing:
            raise ValueError(f"sampler languages {missing} have no training items (the data has {all_langs})")
        col = {name: j for j, name in enumerate(table.names)}
        avail = np.zeros_like(table.matrix)  # (items, languages): available AND sampled
        kept = [col[x] for x in self.languages]
        avail[:, kept] = table.matrix[:, kept]
        self._names, self._avail = table.names, avail
        self.n_items = int(avail.any(axis=1).sum())
        self.mono = {x: _members(avail[:, col[x]]) for x in self.languages}
        # Cross-lingual pools are computed when used, not kept: 72 pairs x 1M items would hold 576 MB of indices.
        self.cross = _PairPools(avail, col, [(x, y) for x in self.languages for y in self.languages if x != y])
        self.excluded: list[str] = []  # settings too small for the batch (recorded per job)
        self.multi = _members(avail.sum(axis=1) >= 2)  # items usable for per-example cross pairs
        self.mono_keys, self.mono_w = self._feasible(self.mono, language_temperature, "monolingual language")
        if self.cross_mode == "batch":
            self.cross_keys, self.cross_w = self._feasible(self.cross, language_temperature, "cross-lingual pair")
        else:
            ok = len(self.multi) >= self.min_pool
            self.cross_keys, self.cross_w = ([("*", "*")], np.ones(1)) if ok else ([], np.zeros(0))
            if not ok:
                log.warning(
                    "only %d items have 2+ languages: per-example cross batches of %d impossible", len(self.multi), batch_size
                )
        if not self.n_items:
            raise SamplerError(f"no training item has a language in {self.languages}: nothing to sample")
        if alpha > 0 and not self.mono_keys:
            raise SamplerError(self._too_big("monolingual", self.mono))
        if alpha < 1 and not self.cross_keys:
            raise SamplerError(self._too_big("cross-lingual", self.cross))
        self.num_batches = batches_per_epoch or max(1, math.ceil(self.n_items / batch_size))

    def _too_big(self, kind: str, pools: dict) -> str:
        alpha = f"data.sampler.alpha={self.alpha:g}"
        if kind == "cross-lingual" and not any(len(m) for m in pools.values()):
            return (
                f"{alpha} asks for cross-lingual batches, which need items in 2+ languages sharing an id; the training "
                f"data has {len(self.languages)} language(s) ({', '.join(self.languages)}) and no such item: use "
                "data.sampler.alpha=1 (monolingual only) or parallel data"
            )
        best = max(pools.items(), key=lambda kv: len(kv[1]))
        name = "-".join(best[0]) if isinstance(best[0], tuple) else best[0]
        hint = ""
        if kind == "cross-lingual" and self.cross_mode == "batch" and len(self.multi) >= self.batch_size:
            hint = (
                f" data.sampler.cross_mode=example draws a pair per example from the {len(self.multi)} items "
                "with 2+ languages and fits."
            )
        need = (
            f"data.batch_size={self.batch_size}"
            if self.min_pool == self.batch_size
            else f"max(data.batch_size, data.sampler.min_pool)={self.min_pool}"
        )
        return (
            f"{need} exceeds every {kind} pool: the largest is {name} with {len(best[1])} items "
            f"(data.batch_size <= {len(best[1])} fits, or change data.sampler.alpha).{hint}"
        )

    def _feasible(self, pools: dict, temperature: float, what: str) -> tuple[list, np.ndarray]:
        keys, weights, dropped = [], [], []
        for key, members in pools.items():
            if len(members) >= self.min_pool:
                keys.append(key)
                weights.append(float(len(members)) ** temperature)
            elif len(members) > 0:
                dropped.append(f"{'-'.join(key) if isinstance(key, tuple) else key} ({len(members)} items)")
        if dropped:  # one line for all of them (recorded per job in sampling_record's "excluded")
            log.warning(
                "%d %s settings have fewer items than %d (max of batch_size, min_pool) and are excluded: %s",
                len(dropped),
                what,
                self.min_pool,
                ", ".join(dropped),
            )
            self.excluded += dropped
        w = np.array(weights, dtype=np.float64)
        return keys, (w / w.sum() if len(w) else w)

    def languages_of(self, item: int) -> list[str]:
        """The sampled languages item ``item`` has, sorted."""
        return [self._names[j] for j in np.flatnonzero(self._avail[item])]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume(self, epoch: int, batches_done: int) -> None:
        """Mid-epoch resume: the next pass over ``epoch`` skips its first ``batches_done`` batches.

        Exact, because an epoch's batches are a pure function of (seed, epoch)."""
        self._resume = (int(epoch), int(batches_done)) if batches_done > 0 else None

    def __len__(self) -> int:
        return self.num_batches

    def global_batches(self) -> Iterator[list[Example]]:
        """All global batches of the current epoch (identical on every rank)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        used = np.zeros(self._avail.shape[0], dtype=bool)
        pools: dict = {}

        def pool(key, members) -> _Pool:
            if key not in pools:
                pools[key] = _Pool(rng.permutation(members))
            return pools[key]

        plan = self.mono_plan()
        for b in range(self.num_batches):
            mono = rng.random() < self.alpha if plan is None else bool(plan[b])
            in_batch: set[int] = set()
            if mono:
                x = self.mono_keys[rng.choice(len(self.mono_keys), p=self.mono_w)]
                items, refilled = pool(("mono", x), self.mono[x]).take(self.batch_size, used, in_batch, rng)
                batch = [Example(i, x, x) for i in items]
            elif self.cross_mode == "batch":
                x, y = self.cross_keys[rng.choice(len(self.cross_keys), p=self.cross_w)]
                items, refilled = pool(("cross", x, y), self.cross[(x, y)]).take(self.batch_size, used, in_batch, rng)
                batch = [Example(i, x, y) for i in items]
            else:
                items, refilled = pool(("multi",), self.multi).take(self.batch_size, used, in_batch, rng)
                batch = []
                for i in items:
                    x, y = rng.choice(self.languages_of(i), size=2, replace=False)
                    batch.append(Example(i, str(x), str(y)))
            used[items] = True
            self.stats["refilled"] += refilled  # read by sampling_record (its replay)
            yield batch

    def mono_plan(self) -> np.ndarray | None:
        """Stratified schedule: which batches of this epoch are monolingual (None for Bernoulli draws).

        Its own generator, so the batches' contents draw from the same stream as before."""
        if self.alpha_schedule != "stratified":
            return None
        n = self.num_batches
        plan = np.zeros(n, dtype=bool)
        k = int(np.floor(self.alpha * n + 0.5))
        plan[np.random.default_rng([self.seed, self.epoch, 1]).permutation(n)[:k]] = True
        return plan

    def __iter__(self) -> Iterator[list[Example]]:
        per_rank = self.batch_size // self.world_size
        lo = self.rank * per_rank
        skip = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            skip, self._resume = self._resume[1], None
        for i, batch in enumerate(self.global_batches()):
            if i >= skip:
                yield batch[lo : lo + per_rank]


def sampling_record(
    sampler: HybridBatchSampler,
    steps: int,
    positive_key: Callable[[int, str], Hashable] | None = None,
) -> dict:
    """What ``steps`` global batches of this sampler contain, replayed from epoch 0 (exact: batches are a
    pure function of (seed, epoch), so a resumed run is described as well as an uninterrupted one).

    Returns batch kinds and realised α, every (query, passage) language setting with its batch and
    example counts, the settings the batch size excluded, distinct items, distinct training pairs (item,
    query language, passage language: what an equal-data comparison must hold equal), refills, and, with
    ``positive_key(item, passage_lang)`` (the positive's text), in-batch duplicate positives: pairs of
    examples whose positives are the same sentence, and the distinct negatives a query really sees
    (distinct positives in its batch − 1; gathered across ranks, so per global batch).
    """
    replay = HybridBatchSampler.__new__(HybridBatchSampler)
    replay.__dict__.update({k: v for k, v in sampler.__dict__.items() if k not in ("stats", "_resume")})
    replay.stats, replay._resume = Counter(), None
    batch_settings: Counter = Counter()
    example_settings: Counter = Counter()
    items: set[int] = set()
    pairs_seen: set[tuple[int, str, str]] = set()  # distinct (item, query language, passage language)
    dup_pairs, distinct_negs = [], []
    done, epoch, mono = 0, 0, 0
    while done < steps:
        replay.set_epoch(epoch)
        for batch in itertools.islice(replay.global_batches(), steps - done):
            done += 1
            mono += batch[0].query_lang == batch[0].passage_lang
            kinds = {(e.query_lang, e.passage_lang) for e in batch}
            batch_settings[f"{batch[0].query_lang}-{batch[0].passage_lang}" if len(kinds) == 1 else "mixed"] += 1
            for e in batch:
                example_settings[f"{e.query_lang}-{e.passage_lang}"] += 1
                items.add(e.item)
                pairs_seen.add((e.item, e.query_lang, e.passage_lang))
            if positive_key is not None:
                groups = Counter(positive_key(e.item, e.passage_lang) for e in batch)
                dup_pairs.append(sum(g * (g - 1) // 2 for g in groups.values()))
                distinct_negs.append(len(groups) - 1)
        epoch += 1
    out = {
        "batches": done,
        "pairs": done * sampler.batch_size,
        "mono_batches": int(mono),
        "cross_batches": done - int(mono),
        "realised_alpha": round(mono / done, 6) if done else float("nan"),
        "alpha_schedule": sampler.alpha_schedule,
        "refilled_examples": int(replay.stats["refilled"]),
        "distinct_items": len(items),
        "distinct_pairs": len(pairs_seen),
        "batch_settings": dict(sorted(batch_settings.items())),
        "example_settings": dict(sorted(example_settings.items())),
        "query_languages": sorted({k.split("-")[0] for k in example_settings}),
        "passage_languages": sorted({k.split("-")[1] for k in example_settings}),
        "feasible_mono": list(sampler.mono_keys),
        "feasible_cross": ["-".join(k) for k in sampler.cross_keys],
        "excluded": sampler.excluded,
    }
    if positive_key is not None and done:
        out["dup_pairs_per_batch"] = round(float(np.mean(dup_pairs)), 3)
        out["distinct_negatives_per_query"] = round(float(np.mean(distinct_negs)), 3)
        out["distinct_negatives_min"] = int(min(distinct_negs))
    return out
