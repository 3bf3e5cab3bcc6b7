"""hybrid_retrieval inside sentence-transformers: what an ST training script adds (no Lightning, no Hydra imported).

from hybrid_retrieval.st import LAReQAEvaluator
evaluator = LAReQAEvaluator("data/xquad-r")          # any LAReQA-format folder (XQuAD-R, MLQA-R)
trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss, evaluator=evaluator)
"""

from hybrid_retrieval.st.evaluator import LAReQAEvaluator

__all__ = ["LAReQAEvaluator"]
