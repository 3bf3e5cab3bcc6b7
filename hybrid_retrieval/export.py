"""Export a trained checkpoint as a sentence-transformers model (also a plain transformers model directory).

    python -m hybrid_retrieval.export logs/xquad_r/runs/<run>/checkpoints/last.ckpt exported/my-retriever

The checkpoint describes its encoder (name, pooling, prefixes, max length, frozen prefix), so nothing else
is needed. ``OUT`` then loads with ``SentenceTransformer(OUT)`` — Transformer + Pooling (+ Normalize), the
query / passage prefixes as prompts ``query`` and ``document`` (= ``passage``), ``max_seq_length``; so
``encode_query`` / ``encode_document`` and MTEB's query / document prompt types get the right prefix — and with
``AutoModel.from_pretrained(OUT)``. A frozen-prefix checkpoint is completed with its base model's
frozen layers (checked against the digest it recorded). Needs ``pip install sentence-transformers``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hybrid_retrieval.common.console import ArgumentParser, user_errors
from hybrid_retrieval.common.errors import UserError
from hybrid_retrieval.models.checkpoint import encoder_from_checkpoint
from hybrid_retrieval.runs.config_check import model_name_problem


def check_target(out: Path, force: bool) -> None:
    """Refuse to mix an export into a directory holding something else (an earlier export is replaced)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "hybrid_retrieval.json").exists() and not force:
        raise UserError(f"{out}: not empty and not an earlier export; choose another directory or pass --force")


def export_sentence_transformers(encoder, out: str | Path) -> Path:
    """Write ``encoder`` as a sentence-transformers directory whose root is a transformers model."""
    try:
        from sentence_transformers import SentenceTransformer, models  # noqa: PLC0415 - optional extra (pip install .[export]): export only
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise UserError("export needs sentence-transformers: pip install sentence-transformers") from err
    if not encoder.shared:
        raise UserError("export: separate query and passage towers (shared=false) do not fit one sentence-transformers model")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    encoder.query_model.save_pretrained(out)
    encoder.tokenizer.save_pretrained(out)
    # Our towers have no pooler (mean / CLS pooling of the last hidden states): load them without one, or
    # transformers reports the pooler weights as missing and initialises them at random (unused, but alarming).
    no_pooler = {"add_pooling_layer": False} if getattr(encoder.query_model, "pooler", "absent") is None else {}
    transformer = models.Transformer(str(out), max_seq_length=encoder.max_length, model_kwargs=no_pooler or None)
    dim = getattr(transformer, "get_embedding_dimension", None) or transformer.get_word_embedding_dimension  # renamed in ST 6
    modules = [transformer, models.Pooling(dim(), encoder.pooling)]
    if encoder.normalize:
        modules.append(models.Normalize())
    # sentence-transformers >= 5 adds a "document" prompt ("") of its own, which encode_document() and MTEB's
    # document prompt type use: it must carry the passage prefix too, or passages go out without it.
    prompts = {"query": encoder.query_prefix, "document": encoder.passage_prefix, "passage": encoder.passage_prefix}
    st = SentenceTransformer(modules=modules, prompts=prompts, similarity_fn_name="cosine" if encoder.normalize else "dot")
    st.save(str(out))
    if no_pooler:  # sentence-transformers does not save model_kwargs itself; its loader reads them from here
        config_path = out / "sentence_bert_config.json"
        config = json.loads(config_path.read_text())
        config["model_kwargs"] = {**config.get("model_kwargs", {}), **no_pooler}
        config_path.write_text(json.dumps(config, indent=2))
    (out / "hybrid_retrieval.json").write_text(json.dumps({"encoder": encoder.init_config}, indent=1))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = ArgumentParser(prog="hybrid_retrieval.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="a hybrid_retrieval Lightning checkpoint (.ckpt)")
    ap.add_argument("out", help="output directory")
    ap.add_argument("--base", help="load the base model from here instead of the recorded name (e.g. offline copy)")
    ap.add_argument("--force", action="store_true", help="write into a non-empty directory that is not an earlier export")
    args = ap.parse_args(argv)
    with user_errors():
        out = Path(args.out)
        check_target(out, args.force)
        if args.base and (problem := model_name_problem(args.base)) is not None:
            raise UserError(f"--base {args.base}: {problem}")
        overrides = {"name": args.base} if args.base else {}
        encoder = encoder_from_checkpoint(args.checkpoint, **overrides)  # a bad checkpoint fails before anything is written
        out = export_sentence_transformers(encoder, out)
    print(f"exported: {out}  (SentenceTransformer('{out}').encode(texts, prompt_name='query' | 'passage'))")


if __name__ == "__main__":
    main()
