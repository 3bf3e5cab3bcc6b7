"""Loader for the LAReQA benchmarks (XQuAD-R, MLQA-R): one SQuAD-v1.1 JSON file per language.

Each paragraph carries ``sentences`` and ``sentence_breaks`` (character offsets into ``context``);
every sentence of every paragraph is a retrieval *candidate*, and a question's gold candidate in a
language is the sentence holding its answer's ``answer_start`` in that language's file. The question
``id`` is shared across languages, which gives the cross-lingual gold: a question in X is answered
by the answer sentence of the same id in Y.

Validation policy (documented in docs/data.md, tested in ``tests/test_lareqa.py``):

* unreadable/truncated JSON, missing fields, wrong types, breaks out of range, an empty language:
  :class:`DataFormatError` naming the file, the item and what was expected;
* a break whose text differs from its ``sentences`` entry: counted warning (the published tr.json of
  XQuAD-R has two, from mojibake in the context); ``sentences`` is authoritative;
* an answer whose ``answer_start`` falls in no sentence: counted warning and the question is skipped
  (``strict=True`` turns it into an error).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hybrid_retrieval.common.errors import DataFormatError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Question:
    qid: str  # shared across languages
    lang: str
    text: str
    title: str  # article title (for the zero-shot guard)
    answer: int  # index into the language's candidate list


@dataclass(frozen=True)
class Candidate:
    cid: str  # unique within the dataset: "{lang}/{paragraph}/{sentence}"
    lang: str
    text: str  # the answer sentence
    paragraph: int  # index into the language's paragraph list (context)
    title: str


@dataclass
class LanguageSplit:
    lang: str
    questions: list[Question]
    candidates: list[Candidate]
    paragraphs: list[str]

    def candidate_text(self, index: int, with_context: bool) -> str:
        """The text encoded for a candidate: the sentence, or sentence + its paragraph (LAReQA's USE-QA)."""
        cand = self.candidates[index]
        if not with_context:
            return cand.text
        return f"{cand.text} {self.paragraphs[cand.paragraph]}"


@dataclass
class LareqaDataset:
    """All languages of one benchmark; ``by_qid[qid][lang]`` is the question's answer candidate index."""

    name: str
    splits: dict[str, LanguageSplit]
    warnings: Counter = field(default_factory=Counter)

    @property
    def languages(self) -> list[str]:
        return list(self.splits)

    @property
    def by_qid(self) -> dict[str, dict[str, int]]:
        if not hasattr(self, "_by_qid"):
            table: dict[str, dict[str, int]] = {}
            for lang, split in self.splits.items():
                for q in split.questions:
                    table.setdefault(q.qid, {})[lang] = q.answer
            self._by_qid = table
        return self._by_qid

    def summary(self) -> str:
        parts = [f"{lang}: {len(s.questions)} q / {len(s.candidates)} cand" for lang, s in self.splits.items()]
        return f"{self.name} ({len(self.splits)} languages; " + ", ".join(parts) + ")"


def _expect(cond: bool, file: Path, item: str, expected: str) -> None:
    if not cond:
        raise DataFormatError(file, item, expected)


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise DataFormatError(path, "file", "an existing LAReQA JSON file (check data.root / paths.data_dir)")
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as err:
        raise DataFormatError(path, f"line {err.lineno}, column {err.colno}", f"valid JSON ({err.msg}; truncated file?)") from err
    except UnicodeDecodeError as err:
        raise DataFormatError(path, f"byte {err.start}", "UTF-8 text") from err


def load_language(path: str | Path, lang: str, strict: bool = False, warnings: Counter | None = None) -> LanguageSplit:
    """Parse one LAReQA language file into questions, candidates and paragraphs."""
    path = Path(path)
    warnings = warnings if warnings is not None else Counter()
    doc = _read_json(path)
    _expect(isinstance(doc, dict) and isinstance(doc.get("data"), list), path, "top level", 'an object with a "data" list')
    questions: list[Question] = []
    candidates: list[Candidate] = []
    paragraphs: list[str] = []
    seen_qids: set[str] = set()
    for a_i, article in enumerate(doc["data"]):
        where_a = f"data[{a_i}]"
        _expect(isinstance(article, dict), path, where_a, "an article object")
        title = article.get("title", "")
        _expect(isinstance(article.get("paragraphs"), list), path, f"{where_a} ({title!r})", 'a "paragraphs" list')
        for p_i, para in enumerate(article["paragraphs"]):
            where = f"{where_a}.paragraphs[{p_i}] ({title!r})"
            _expect(isinstance(para, dict), path, where, "a paragraph object")
            for key, typ in (("context", str), ("sentences", list), ("sentence_breaks", list), ("qas", list)):
                _expect(key in para, path, where, f'a "{key}" field (LAReQA format: SQuAD v1.1 + sentences/sentence_breaks)')
                _expect(isinstance(para[key], typ), path, f"{where}.{key}", f"a {typ.__name__}")
            context, sents, breaks = para["context"], para["sentences"], para["sentence_breaks"]
            _expect(
                len(sents) == len(breaks),
                path,
                where,
                f"as many sentence_breaks as sentences (got {len(breaks)} breaks for {len(sents)} sentences)",
            )
            prev_end = 0
            for s_i, brk in enumerate(breaks):
                ok = isinstance(brk, list) and len(brk) == 2 and all(isinstance(x, int) for x in brk)
                _expect(ok, path, f"{where}.sentence_breaks[{s_i}]", "a [start, end] pair of integers")
                b, e = brk
                _expect(
                    prev_end <= b < e <= len(context),
                    path,
                    f"{where}.sentence_breaks[{s_i}]",
                    f"increasing offsets within the context of length {len(context)} (got [{b}, {e}] after {prev_end})",
                )
                prev_end = e
                _expect(
                    isinstance(sents[s_i], str) and sents[s_i].strip(), path, f"{where}.sentences[{s_i}]", "a non-empty string"
                )
                if context[b:e] != sents[s_i]:
                    warnings["sentence_break_text_mismatch"] += 1
            p_index = len(paragraphs)
            paragraphs.append(context)
            first_cand = len(candidates)
            for s_i, sent in enumerate(sents):
                candidates.append(Candidate(f"{lang}/{p_index}/{s_i}", lang, sent, p_index, title))
            for q_i, qa in enumerate(para["qas"]):
                wq = f"{where}.qas[{q_i}]"
                _expect(isinstance(qa, dict), path, wq, "a question object")
                for key in ("id", "question", "answers"):
                    _expect(key in qa, path, wq, f'a "{key}" field')
                qid = qa["id"]
                _expect(isinstance(qid, str) and qid, path, f"{wq}.id", "a non-empty string")
                _expect(qid not in seen_qids, path, f"{wq} (id {qid})", "question ids unique within a language file")
                seen_qids.add(qid)
                _expect(isinstance(qa["question"], str) and qa["question"].strip(), path, f"{wq}.question", "a non-empty string")
                answers = qa["answers"]
                ok = isinstance(answers, list) and answers and isinstance(answers[0], dict)
                _expect(bool(ok), path, f"{wq}.answers", "a non-empty list of {answer_start, text}")
                start = answers[0].get("answer_start")
                _expect(isinstance(start, int), path, f"{wq}.answers[0].answer_start", "an integer offset")
                hit = next((i for i, (b, e) in enumerate(breaks) if b <= start < e), None)
                if hit is None:
                    if strict:
                        raise DataFormatError(path, f"{wq} (id {qid})", f"answer_start {start} inside one of the sentence_breaks")
                    warnings["answer_outside_sentences"] += 1
                    continue
                questions.append(Question(qid, lang, qa["question"], title, first_cand + hit))
    if not questions or not candidates:
        raise DataFormatError(path, "language " + lang, "at least one question and one candidate sentence (file is empty)")
    return LanguageSplit(lang, questions, candidates, paragraphs)


def load_lareqa(
    root: str | Path, languages: list[str] | tuple[str, ...] | None = None, name: str | None = None, strict: bool = False
) -> LareqaDataset:
    """Load ``{root}/{lang}.json`` for each language (default: every ``*.json`` in ``root``)."""
    root = Path(root)
    name = name or root.name
    if not root.is_dir():
        raise DataFormatError(root, "directory", "an existing dataset directory (set paths.data_dir or data.*.root)")
    available = sorted(p.stem for p in root.glob("*.json"))
    if languages is None or len(languages) == 0:
        languages = available
    unknown = [lang for lang in languages if lang not in available]
    if unknown:
        raise DataFormatError(root, f"languages {unknown}", f"languages that exist in this dataset: {available}")
    warnings: Counter = Counter()
    splits = {lang: load_language(root / f"{lang}.json", lang, strict=strict, warnings=warnings) for lang in languages}
    for what, count in warnings.items():
        log.warning("%s: %d × %s (see hybrid_retrieval.data.lareqa for the policy)", name, count, what)
    return LareqaDataset(name, splits, warnings)


def _articles_covering(dataset: LareqaDataset, n_questions: int, seed: int) -> tuple[set[str], int]:
    """Question ids of whole articles (by the English title, else the first language's), taken in a fixed
    pseudo-random order until at least ``n_questions`` ids are covered; also how many articles that took."""
    title_of: dict[str, str] = {}
    for lang in sorted(dataset.splits, key=lambda x: (x != "en", x)):
        for q in dataset.splits[lang].questions:
            title_of.setdefault(q.qid, q.title)
    by_title: dict[str, list[str]] = {}
    for qid, title in title_of.items():
        by_title.setdefault(title, []).append(qid)
    keep: set[str] = set()
    articles = 0
    for title in sorted(by_title, key=lambda t: hashlib.sha1(f"{seed}:{t}".encode()).hexdigest()):
        if len(keep) >= n_questions:
            break
        keep.update(by_title[title])
        articles += 1
    return keep, articles


def restrict_questions(dataset: LareqaDataset, keep: set[str], name: str) -> LareqaDataset:
    """The benchmark restricted to the question ids ``keep``: in every language only the sentences of the
    paragraphs that hold those questions (candidate ids keep their paragraph/sentence position)."""
    splits = {}
    for lang, split in dataset.splits.items():
        paras = sorted({split.candidates[q.answer].paragraph for q in split.questions if q.qid in keep})
        if not paras:
            continue
        para_map = {p: i for i, p in enumerate(paras)}
        cand_map: dict[int, int] = {}
        cands: list[Candidate] = []
        for i, c in enumerate(split.candidates):
            if c.paragraph in para_map:
                cand_map[i] = len(cands)
                new_p = para_map[c.paragraph]
                cands.append(Candidate(f"{lang}/{c.cid.split('/', 1)[1]}", lang, c.text, new_p, c.title))
        questions = [Question(q.qid, lang, q.text, q.title, cand_map[q.answer]) for q in split.questions if q.qid in keep]
        splits[lang] = LanguageSplit(lang, questions, cands, [split.paragraphs[p] for p in paras])
    return LareqaDataset(name, splits, dataset.warnings)


def subsample_questions(dataset: LareqaDataset, max_questions: int, seed: int = 0) -> LareqaDataset:
    """A smaller benchmark: whole articles until at least ``max_questions`` question ids (a fixed
    pseudo-random choice), and in every language only the sentences of the paragraphs that hold them.

    For cheap in-training evaluation on small machines. The pool shrinks, so absolute numbers are higher
    than on the full benchmark and must not be compared with it; every run of one study uses the same subset.
    """
    keep, _ = _articles_covering(dataset, max_questions, seed)
    return restrict_questions(dataset, keep, f"{dataset.name}[{len(keep)}q]")


@dataclass(frozen=True)
class DevSplit:
    """A dev split of a TRAINING benchmark: whole articles held out (so titles, question texts and answer
    sentences stay disjoint from the training part), for model selection that never sees the evaluation set."""

    train: LareqaDataset
    dev: LareqaDataset
    fraction: float
    seed: int
    articles: int

    def record(self) -> dict:
        """What was held out, for the job record: sizes and a digest of the held-out question ids."""
        qids = sorted(self.dev.by_qid)
        digest = hashlib.sha1("\n".join(qids).encode()).hexdigest()[:12]
        return {
            "fraction": self.fraction,
            "seed": self.seed,
            "articles": self.articles,
            "dev_questions": len(qids),
            "train_questions": len(self.train.by_qid),
            "dev_qids_sha1": digest,
        }


def split_dev(dataset: LareqaDataset, fraction: float, seed: int = 0) -> DevSplit:
    """Hold out whole articles until at least ``fraction`` of the question ids (every language of them)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"dev fraction must be in (0, 1), got {fraction!r}")
    n_ids = len(dataset.by_qid)
    held, articles = _articles_covering(dataset, math.ceil(fraction * n_ids), seed)
    if len(held) >= n_ids:
        raise ValueError(f"{dataset.name}: a dev fraction of {fraction} holds out every article; lower it")
    rest = set(dataset.by_qid) - held
    return DevSplit(
        train=restrict_questions(dataset, rest, f"{dataset.name}-train"),
        dev=restrict_questions(dataset, held, f"{dataset.name}-dev"),
        fraction=float(fraction),
        seed=int(seed),
        articles=articles,
    )
