"""`--engine ray`: the engine hook of `embed()` (fast, no Ray), and the real thing on a local 2-CPU Ray (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qkrag.cache import DiskCache
from qkrag.embed.encoders import EmbedOptions, embed

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"


class LocalEngine:
    """An engine with RayEngine's contract that embeds in this process, counting what it is handed."""

    def __init__(self) -> None:
        self.handed = 0

    def embed_into(self, out, todo, encoder, texts, keys, side, cache):
        self.handed += len(todo)
        vectors = encoder.embed_batch([texts[i] for i in todo], side)
        out.update(zip(todo, vectors))
        from qkrag.cache import pack_vector

        cache.put_many({keys[i]: pack_vector(v) for i, v in zip(todo, vectors)})


def test_engine_gets_only_cache_misses_and_fills_the_shared_cache(fake_encoder, tmp_path):
    cache = DiskCache(tmp_path / "c.sqlite")
    texts = ["alpha beta", "gamma delta", "alpha beta", "epsilon"]
    local = embed(fake_encoder, texts[:2], "document", EmbedOptions(cache=cache, progress=False))
    engine = LocalEngine()
    got = embed(fake_encoder, texts, "document", EmbedOptions(cache=cache, progress=False, engine=engine))
    assert engine.handed == 1  # "epsilon" only: the two cached texts and the duplicate never reach the engine
    np.testing.assert_array_equal(got[:2], local)
    np.testing.assert_array_equal(got[2], got[0])
    again = LocalEngine()
    embed(fake_encoder, texts, "document", EmbedOptions(cache=cache, progress=False, engine=again))
    assert again.handed == 0


def _stored(index):
    ids, vectors = index.get_vectors()
    order = np.argsort(ids)
    return [ids[i] for i in order], vectors[order], index.stored_texts([ids[i] for i in order])


@pytest.mark.slow
def test_ray_engine_matches_local_path_and_reruns_from_cache(tmp_path):
    pytest.importorskip("ray")
    from qkrag.data import load_corpus
    from qkrag.embed.encoders import make_encoder
    from qkrag.embed.ray import RayEngine
    from qkrag.retrieval.index import IndexConfig, build_index

    corpus = load_corpus(DEMO)
    encoder = make_encoder()
    local = build_index(corpus, encoder, IndexConfig(path=tmp_path / "local"), progress=False,
                        options=EmbedOptions(cache=DiskCache(tmp_path / "local.sqlite"), progress=False))

    class Counting(RayEngine):
        sent = 0

        def stream(self, encoder, texts, side):
            Counting.sent += len(texts)
            yield from super().stream(encoder, texts, side)

    engine = Counting(num_cpus=2, actors=2, batch_size=32)  # one actor pool: starting one costs the most
    ray_cache = DiskCache(tmp_path / "ray.sqlite")
    try:
        on_ray = build_index(corpus, encoder, IndexConfig(path=tmp_path / "ray"), progress=False,
                             options=EmbedOptions(cache=ray_cache, progress=False, engine=engine))
        assert Counting.sent == len(corpus.ids)
        ids_a, vec_a, texts_a = _stored(local)
        ids_b, vec_b, texts_b = _stored(on_ray)
        assert ids_a == ids_b and texts_a == texts_b
        np.testing.assert_allclose(vec_b, vec_a, atol=1e-6)
        assert on_ray.metadata == local.metadata  # same encoder, count, content hash: the same index
        # A re-run into a new collection embeds nothing: every vector comes from the cache Ray filled.
        Counting.sent = 0
        again = build_index(corpus, encoder, IndexConfig(path=tmp_path / "again"), progress=False,
                            options=EmbedOptions(cache=ray_cache, progress=False, engine=engine))
        assert Counting.sent == 0
        np.testing.assert_allclose(_stored(again)[1], vec_a, atol=1e-6)
    finally:
        engine.shutdown()
