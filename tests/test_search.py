"""faiss search CLI: index a corpus, query it; exact results equal a brute-force ranking; HNSW agrees."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hybrid_retrieval.common.errors import DataFormatError
from hybrid_retrieval.data.beir import read_texts
from hybrid_retrieval.search import main

pytest.importorskip("faiss")


def _corpus(tmp_path, n=40):
    docs = [(f"d{i}", f"document {i} about " + " ".join(f"w{(i * 7 + j) % 23}" for j in range(4 + i % 5))) for i in range(n)]
    path = tmp_path / "corpus.tsv"
    path.write_text("".join(f"{d}\t{t}\n" for d, t in docs), encoding="utf-8")
    return path, docs


def test_index_and_query_equal_brute_force(tmp_path, tiny_model_dir, tiny_encoder_factory, capsys):
    from hybrid_retrieval.evaluation.encode import encode_texts

    corpus, docs = _corpus(tmp_path)
    queries = tmp_path / "queries.jsonl"
    qs = [("a", "w3 w10 about"), ("b", "document 7"), ("c", "w1 w2 w22")]
    queries.write_text("".join(json.dumps({"id": q, "text": t}) + "\n" for q, t in qs), encoding="utf-8")
    for kind in ("flat", "hnsw"):
        main(["index", "--corpus", str(corpus), "--index", str(tmp_path / kind), "--base", str(tiny_model_dir), "--kind", kind])
        main(
            [
                "query",
                "--index",
                str(tmp_path / kind),
                "--queries",
                str(queries),
                "-k",
                "10",
                "--run",
                str(tmp_path / f"{kind}.run"),
            ]
        )
    enc = tiny_encoder_factory(max_length=128).eval()  # the offline-default settings, tiny weights
    d = encode_texts(enc, [t for _, t in docs], "passage").numpy()
    q = encode_texts(enc, [t for _, t in qs], "query").numpy()
    expected = {qid: [docs[i][0] for i in np.argsort(-(q[r] @ d.T), kind="stable")[:10]] for r, (qid, _) in enumerate(qs)}

    def read(path):
        out = {}
        for line in path.read_text().splitlines():
            qid, _, doc, *_ = line.split()
            out.setdefault(qid, []).append(doc)
        return out

    assert read(tmp_path / "flat.run") == expected
    hnsw = read(tmp_path / "hnsw.run")
    recall = np.mean([len(set(hnsw[k]) & set(v)) / 10 for k, v in expected.items()])
    assert recall >= 0.9
    capsys.readouterr()
    main(["query", "--index", str(tmp_path / "flat"), "-q", "w3 w10 about", "-k", "3"])
    printed = capsys.readouterr().out
    assert "[q1] w3 w10 about" in printed and "1. " in printed and expected["a"][0] in printed
    top_text = dict(docs)[expected["a"][0]]
    assert f"{expected['a'][0]}  {top_text}" in printed  # the hit's text follows its id


@pytest.mark.parametrize(
    ("name", "content", "where", "expected"),
    [
        ("c.tsv", "d1\tone\nd1\ttwo\n", "line 2 (id d1)", "unique document ids"),
        ("c.tsv", "d1 no tab\n", "line 1", "id<TAB>text"),
        ("c.jsonl", '{"id": "x"}\n', "line 1", 'an id ("_id", "docid" or "id") and "text"'),
        ("c.jsonl", "\n\n", "file", "at least one line"),
    ],
)
def test_corpus_errors_name_file_and_line(tmp_path, name, content, where, expected):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataFormatError) as err:
        read_texts(path)
    assert err.value.item == where and expected in err.value.expected


def test_an_index_built_with_relative_paths_answers_from_any_directory(tmp_path, tiny_model_dir, monkeypatch, capsys):
    import shutil

    here = tmp_path / "project"
    shutil.copytree(tiny_model_dir, here / "models" / "tiny")
    (here / "docs.tsv").write_text("".join(f"d{i}\tword{i} text number {i}\n" for i in range(20)), encoding="utf-8")
    monkeypatch.chdir(here)
    main(["index", "--corpus", "docs.tsv", "--index", "ix", "--base", "models/tiny"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    main(["query", "--index", str(here / "ix"), "-q", "word3 text", "-k", "2"])
    assert "[q1] word3 text" in capsys.readouterr().out
    # an index answers only with the weights it was built with
    meta_path = here / "ix" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["encoder_digest"] = "0" * 32
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(SystemExit) as exit_:
        main(["query", "--index", str(here / "ix"), "-q", "word3 text"])
    assert exit_.value.code == 2 and "rebuild the index" in capsys.readouterr().err
