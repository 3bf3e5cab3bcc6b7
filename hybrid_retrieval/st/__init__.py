"""hybrid_retrieval inside sentence-transformers: what an ST training script adds (no Lightning, no Hydra imported).

from hybrid_retrieval.st import LAReQAEvaluator
evaluator = LAReQAEvaluator("data/xquad-r")          # any LAReQA-format folder (XQuAD-R, MLQA-R)
trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss, evaluator=evaluator)
"""

from hybrid_retrieval.st.evaluator import LAReQAEvaluator
from hybrid_retrieval.st.layout import long_layout, long_layout_from
from hybrid_retrieval.st.sampler import HybridPairCollator, HybridSTBatchSampler, hybrid_batch_sampler, hybrid_collator

__all__ = [
    "HybridPairCollator",
    "HybridSTBatchSampler",
    "LAReQAEvaluator",
    "hybrid_batch_sampler",
    "hybrid_collator",
    "long_layout",
    "long_layout_from",
]
