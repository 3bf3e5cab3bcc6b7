#!/usr/bin/env bash
# Use the project as a package, from outside the checkout: a fresh virtual environment, a regular
# (non-editable) `pip install .`, then every command from another directory:
#   train the main job -> export it for sentence-transformers -> faiss search over the 13,014 XQuAD-R
#   candidates -> ad-hoc (BEIR-layout) evaluation of XQuAD-R's English questions against all candidates.
#   bash scripts/demo_installed_package.sh [WORK_DIR]      (~15 min on a 2-core CPU)
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-/tmp/hr-demo}
export HYBRID_RETRIEVAL_DATA=${HYBRID_RETRIEVAL_DATA:-$SRC/../shared/data}
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
echo "== fresh venv in $WORK/venv, pip install $SRC[export] (not editable)"
python -m venv venv
venv/bin/pip install -q --upgrade pip
time venv/bin/pip install -q "$SRC[export]"
export PATH=$WORK/venv/bin:$PATH
python - <<'EOF'
import hybrid_retrieval.common.paths as u
print("package:", u.PACKAGE_DIR, "| configs:", u.CONFIG_DIR)
EOF

echo "== train (README's main job) from $WORK"
time hr-train +experiment=xquad_r logger=csv
CKPT=$(ls -t logs/xquad_r/runs/*/checkpoints/epoch*.ckpt | head -1)
echo "checkpoint: $CKPT"

echo "== export for sentence-transformers"
hr-export "$CKPT" exported
python - "$CKPT" <<'EOF'
import sys, torch
from sentence_transformers import SentenceTransformer
from hybrid_retrieval.models.checkpoint import encoder_from_checkpoint
from hybrid_retrieval.evaluation.encode import encode_texts
texts = ["Wie lang ist die Donau?", "How long is the Danube?", "¿Cuánto mide el Danubio?",
         "Дунай — вторая по длине река Европы.", "多瑙河是欧洲第二长河。", "Tuna Nehri Avrupa'nın ikinci uzun nehridir."]
st = SentenceTransformer("exported", device="cpu")
enc = encoder_from_checkpoint(sys.argv[1])
for kind in ("query", "passage"):
    a = torch.tensor(st.encode(texts, prompt_name=kind, normalize_embeddings=True))
    b = torch.nn.functional.normalize(encode_texts(enc, texts, kind), dim=-1)
    print(f"sentence-transformers vs project ({kind}): min cosine {float((a * b).sum(-1).min()):.6f} over {len(texts)} sentences")
EOF

echo "== the 13,014 XQuAD-R candidates as a corpus; English questions as an ad-hoc (BEIR-layout) benchmark"
python - <<'EOF'
import json, os
from pathlib import Path
from hybrid_retrieval.data.corpus import EvalCorpus
from hybrid_retrieval.data.lareqa import load_lareqa
ds = load_lareqa(Path(os.environ["HYBRID_RETRIEVAL_DATA"]) / "xquad-r", None, name="xquad-r")
c = EvalCorpus.from_dataset(ds)
with open("xquad_candidates.tsv", "w", encoding="utf-8") as fh:
    for cid, text in zip(c.c_ids, c.c_texts):
        fh.write(f"{cid}\t{' '.join(text.split())}\n")
root = Path("xquad-r-en-beir"); (root / "qrels").mkdir(parents=True, exist_ok=True)
en = c.languages.index("en")
with open(root / "corpus.jsonl", "w", encoding="utf-8") as fh:
    for cid, text in zip(c.c_ids, c.c_texts):
        fh.write(json.dumps({"_id": cid, "text": text}, ensure_ascii=False) + "\n")
with open(root / "queries.jsonl", "w", encoding="utf-8") as fq, open(root / "qrels" / "test.tsv", "w") as fr:
    fr.write("query-id\tcorpus-id\tscore\n")
    for qid, text, lang in zip(c.q_ids, c.q_texts, c.q_lang):
        if lang == en:
            fq.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
            for cand in c.gold[qid].values():  # the answer sentence in each of the 11 languages
                fr.write(f"{qid}\t{c.c_ids[cand]}\t1\n")
print(f"{len(c.c_ids)} candidates -> xquad_candidates.tsv; {sum(1 for l in c.q_lang if l == en)} English questions -> {root}")
EOF

echo "== faiss search: exact and HNSW indexes, queries from the command line"
hr-search index --ckpt "$CKPT" --corpus xquad_candidates.tsv --index idx_flat
hr-search index --ckpt "$CKPT" --corpus xquad_candidates.tsv --index idx_hnsw --kind hnsw
for idx in idx_flat idx_hnsw; do
  hr-search query --index $idx -k 3 -q "Which team won Super Bowl 50?" -q "Wer waren die Normannen?" \
    -q "¿Qué porcentaje de la selva amazónica está en Brasil?"
done

echo "== ad-hoc evaluation (nDCG@10, Recall@100, MRR@10): untrained vs trained"
hr-evaluate adhoc.root=xquad-r-en-beir adhoc.split=test hydra.run.dir=eval_untrained
hr-evaluate adhoc.root=xquad-r-en-beir adhoc.split=test ckpt_path="$CKPT" hydra.run.dir=eval_trained
