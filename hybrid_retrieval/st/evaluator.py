"""``LAReQAEvaluator``: the LAReQA protocol (mono / cross / multi mAP, mAP@20, R@1, R@10, rank distance) as a
sentence-transformers evaluator, computed by this project's own metric code (``evaluate_embeddings``), so its
numbers are those of ``python -m hybrid_retrieval.evaluate`` on the same weights.

Queries go through ``model.encode_query`` and candidates through ``model.encode_document`` (the model's own
``query`` / ``document`` prompts, pooling and normalisation); with a cosine model the embeddings are L2-normalised
before the inner products, with a dot-product model they are used as they are.
"""

from __future__ import annotations

import csv
import logging
import os

import torch

from hybrid_retrieval.data.corpus import EvalCorpus
from hybrid_retrieval.data.lareqa import load_lareqa, subsample_questions
from hybrid_retrieval.evaluation.lareqa_eval import EvalResult, evaluate_embeddings

try:  # sentence-transformers >= 6 (the old path still imports, with a deprecation warning)
    from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator
except ImportError:  # pragma: no cover - sentence-transformers 3-5
    from sentence_transformers.evaluation import SentenceEvaluator

log = logging.getLogger(__name__)

#: The metrics reported (and written to the CSV), ``multi_map`` first: the primary metric.
REPORTED = (
    *(f"{s}_{m}" for s in ("multi", "cross", "mono") for m in ("map", "map@20", "r@1", "r@10")),
    "multi_rank_distance",
)


class LAReQAEvaluator(SentenceEvaluator):
    """Evaluate a SentenceTransformer on a LAReQA-format folder (``{lang}.json`` per language).

    Args:
        root: the benchmark folder, e.g. ``.../xquad-r`` or ``.../mlqa-r``.
        languages: a subset of its languages (default: every ``*.json``).
        name: the metric prefix (default: the folder's name), e.g. ``xquad-r_multi_map``.
        max_questions: evaluate on a seeded subset of question ids (the candidate pool stays whole), for speed.
        batch_size: encoding batch size. block: queries scored per block (memory).
        with_context: candidates as sentence + paragraph context instead of the sentence alone.
        write_csv: append a row per call to ``lareqa_{name}_results.csv`` in ``output_path``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        languages: list[str] | None = None,
        name: str | None = None,
        max_questions: int | None = None,
        batch_size: int = 64,
        block: int = 256,
        with_context: bool = False,
        write_csv: bool = True,
        show_progress_bar: bool = False,
    ):
        super().__init__()
        dataset = load_lareqa(root, languages, name=name)
        if max_questions is not None:
            dataset = subsample_questions(dataset, int(max_questions), seed=0)
        self.corpus = EvalCorpus.from_dataset(dataset, with_context=with_context)
        self.name = dataset.name
        self.batch_size, self.block, self.show_progress_bar = batch_size, block, show_progress_bar
        self.write_csv = write_csv
        self.csv_file = f"lareqa_{self.name}_results.csv"
        self.csv_headers = ["epoch", "steps", *REPORTED]
        self.primary_metric = "multi_map"
        self.last: EvalResult | None = None  # the full result of the last call: per pair, per language

    def embed(self, model) -> tuple[torch.Tensor, torch.Tensor]:
        """(query, candidate) embeddings as the model's retrieval uses them (normalised for a cosine model)."""
        kw = {"batch_size": self.batch_size, "convert_to_tensor": True, "show_progress_bar": self.show_progress_bar}
        q = model.encode_query(self.corpus.q_texts, **kw).float().cpu()
        c = model.encode_document(self.corpus.c_texts, **kw).float().cpu()
        if str(getattr(model, "similarity_fn_name", None) or "cosine") == "cosine":
            q, c = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(c, dim=-1)
        return q, c

    def __call__(self, model, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        q, c = self.embed(model)
        self.last = evaluate_embeddings(self.corpus, q, c, block=self.block)
        macro = {key.replace("/", "_"): value for key, value in self.last.macro().items()}
        metrics = {key: macro[key] for key in REPORTED}
        log.info(
            "LAReQA %s: multi mAP %.4f | cross mAP %.4f | mono mAP %.4f | rank distance %.1f",
            self.name,
            metrics["multi_map"],
            metrics["cross_map"],
            metrics["mono_map"],
            metrics["multi_rank_distance"],
        )
        if output_path is not None and self.write_csv:
            os.makedirs(output_path, exist_ok=True)
            path = os.path.join(output_path, self.csv_file)
            new = not os.path.isfile(path)
            with open(path, "a", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                if new:
                    writer.writerow(self.csv_headers)
                writer.writerow([epoch, steps, *(metrics[k] for k in REPORTED)])
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    def get_config_dict(self) -> dict:
        return {"languages": self.last.languages if self.last else None, "questions": len(self.corpus.q_texts)}
