"""Sharded corpus encoding: equal to encoding at once, resumable after a kill, exact top-k over the shards."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid_retrieval.common.errors import UserError
from hybrid_retrieval.evaluation.encode import encode_texts
from hybrid_retrieval.evaluation.shards import ShardedEmbeddings, encode_to_shards

TEXTS = [f"document {i} about the river number {i % 7} in the city {i % 3}" for i in range(23)]


class Killed(Exception):
    pass


def test_shards_equal_one_encode_and_a_killed_encode_resumes(tmp_path, tiny_encoder_factory):
    enc = tiny_encoder_factory()
    whole = encode_texts(enc, TEXTS, "passage").numpy()
    done: list[int] = []

    def kill_after_second(i: int) -> None:
        done.append(i)
        if i == 1:
            raise Killed

    with pytest.raises(Killed):
        encode_to_shards(enc, TEXTS, "passage", tmp_path / "emb", shard_size=5, progress=False, on_shard=kill_after_second)
    assert sorted(p.name for p in (tmp_path / "emb").glob("shard*.npy")) == ["shard00000.npy", "shard00001.npy"]
    with pytest.raises(UserError, match="incomplete encode"):
        ShardedEmbeddings(tmp_path / "emb")
    done.clear()
    emb = encode_to_shards(enc, TEXTS, "passage", tmp_path / "emb", shard_size=5, progress=False, on_shard=done.append)
    assert done == [2, 3, 4]  # only the missing shards
    assert len(emb) == 23 and emb.dim == enc.dim and not list((tmp_path / "emb").glob("*.tmp-*"))
    np.testing.assert_allclose(emb.to_array(), whole, atol=2e-3)  # float16 on disk


def test_another_corpus_or_encoder_in_the_same_folder_is_refused(tmp_path, tiny_encoder_factory):
    enc = tiny_encoder_factory()
    encode_to_shards(enc, TEXTS, "passage", tmp_path / "emb", shard_size=10, progress=False)
    with pytest.raises(UserError, match="texts"):
        encode_to_shards(enc, TEXTS[:-1], "passage", tmp_path / "emb", shard_size=10, progress=False)
    other = tiny_encoder_factory()
    next(other.parameters()).data.add_(1.0)
    with pytest.raises(UserError, match="encoder"):
        encode_to_shards(other, TEXTS, "passage", tmp_path / "emb", shard_size=10, progress=False)


def test_topk_over_shards_is_exact(tmp_path, tiny_encoder_factory):
    enc = tiny_encoder_factory()
    emb = encode_to_shards(enc, TEXTS, "passage", tmp_path / "emb", shard_size=4, progress=False)
    queries = encode_texts(enc, ["river number 3", "city 2 document"], "query").numpy()
    full = queries @ emb.to_array().T  # (2, 23) brute force over the same float16 values
    for k in (1, 5, 23, 40):
        scores, rows = emb.topk(queries, k)
        expected = np.argsort(-full, axis=1, kind="stable")[:, : min(k, 23)]
        assert rows.shape == (2, min(k, 23))
        np.testing.assert_array_equal(rows, expected)
        np.testing.assert_allclose(scores, np.take_along_axis(full, expected, axis=1), rtol=1e-6)
