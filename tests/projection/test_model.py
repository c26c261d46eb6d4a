"""The projection estimators: identity start, learning a planted relevance map, persistence, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qkrag.data import load_beir
from qkrag.errors import IndexMismatchError, InputError
from qkrag.projection.model import QKProjection, QueryAdapter, SymmetricProjection
from qkrag.projection.data import Pairs, pairs_from_collection
from qkrag.evaluate.metrics import binary_ndcg
from qkrag.projection.train import TrainConfig
from qkrag.ranking import exact_search

FAST = TrainConfig(epochs=6, learning_rate=3e-3, init_weight=0.0, random_negatives=64, progress=False)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class Planted:
    """Relevance defined by a hidden linear map W: the relevant documents of query v are the top 5 by (W·v)·d.
    Raw cosine ranks them poorly; a Q/K projection can represent W exactly (Q = W, K = I)."""

    def __init__(self, d: int = 32, n_docs: int = 200, n_train: int = 300, n_test: int = 100, top: int = 5,
                 seed: int = 0):
        rng = np.random.default_rng(seed)
        self.documents = _unit(rng.normal(size=(n_docs, d)))
        self.W = (np.eye(d) + 0.8 * rng.normal(size=(d, d)) / np.sqrt(d)).astype(np.float32)
        self.train = self._pairs(_unit(rng.normal(size=(n_train, d))), top, "train")
        self.test_queries = _unit(rng.normal(size=(n_test, d)))
        self.test_relevant = [set(row) for row in self._top(self.test_queries, top).tolist()]

    def _top(self, queries: np.ndarray, top: int) -> np.ndarray:
        return np.argsort(-((queries @ self.W.T) @ self.documents.T), 1)[:, :top]

    def _pairs(self, queries: np.ndarray, top: int, name: str) -> Pairs:
        tops = self._top(queries, top)
        qids = np.repeat([f"{name}{i}" for i in range(len(queries))], top)
        return Pairs(np.repeat(queries, top, 0), tops.ravel(), self.documents, query_ids=tuple(qids),
                     encoder="planted", source=name)

    def test_ndcg(self, model=None) -> float:
        q = self.test_queries if model is None else model.transform_queries(self.test_queries)
        k = self.documents if model is None else model.transform_documents(self.documents)
        _, top = exact_search(q, k, 10, space="ip")
        return binary_ndcg(top, self.test_relevant, 10).mean()

    def achievable_ndcg(self) -> float:
        _, top = exact_search(self.test_queries @ self.W.T, self.documents, 10, space="ip")
        return binary_ndcg(top, self.test_relevant, 10).mean()


@pytest.fixture(scope="module")
def planted() -> Planted:
    return Planted()


@pytest.fixture(scope="module")
def trained(planted) -> QKProjection:
    return QKProjection(config=FAST).fit(planted.train)


# ------------------------------------------------------------------------------------------------------ behaviour


def test_identity_reproduces_the_raw_dot_product_ranking_exactly(planted):
    model = QKProjection.identity(32)
    q = planted.test_queries
    raw = q @ planted.documents.T
    np.testing.assert_array_equal(model.score_matrix(q, planted.documents), raw)
    np.testing.assert_array_equal(np.argsort(-model.score_matrix(q, planted.documents), 1), np.argsort(-raw, 1))


def test_training_starts_from_the_raw_ranking(planted):
    """Epoch 0 of the history is the initialisation: its validation nDCG must be raw cosine's."""
    train, val = planted.train.split(0.1, seed=0)
    model = QKProjection(config=FAST).fit(train, val)
    vq, rel = val.unique_queries()
    _, top = exact_search(vq, planted.documents, 10, space="ip")
    assert model.history_[0]["val_ndcg"] == pytest.approx(binary_ndcg(top, rel, 10).mean(), abs=1e-5)
    assert model.selected_.startswith("trained")


def test_planted_map_is_recovered(planted, trained):
    raw, achievable, learned = planted.test_ndcg(), planted.achievable_ndcg(), planted.test_ndcg(trained)
    assert raw < 0.7 * achievable  # the task is not solved by raw cosine...
    assert learned > 0.9 * achievable, (raw, learned, achievable)  # ...but is by the projection (held-out queries)


@pytest.mark.parametrize("cls", [QueryAdapter, SymmetricProjection])
def test_other_variants_train_and_beat_raw(planted, cls):
    model = cls(config=FAST).fit(planted.train)
    assert planted.test_ndcg(model) > planted.test_ndcg() + 0.1
    # the validation record names the epoch kept, and it is the history's best
    kept = model.validation_["best_epoch"]
    assert kept > 0 and model.selected_.startswith(f"trained (epoch {kept},")
    assert model.history_[kept]["val_ndcg"] == model.validation_["ndcg@10"] == max(h["val_ndcg"] for h in model.history_)


def test_low_rank_starts_from_pca_and_has_rank_r(planted):
    model = QKProjection(rank=8, config=FAST).fit(planted.train)
    assert model.Q_.shape == model.K_.shape == (8, 32)
    assert model.transform_documents(planted.documents).shape == (200, 8)
    assert model.history_[0]["epoch"] == 0 and model.selected_.startswith(("pca-8", "trained (epoch "))


def test_selection_returns_the_start_when_every_epoch_is_worse(planted):
    """When raw cosine already is the truth, training can only make it worse: selection must return the start's
    maps, not the last epoch's."""
    rng = np.random.default_rng(3)
    q = _unit(rng.normal(size=(200, 32)))
    top = np.argsort(-(q @ planted.documents.T), 1)[:, :5]
    pairs = Pairs(np.repeat(q, 5, 0), top.ravel(), planted.documents, query_ids=tuple(np.repeat(np.arange(200), 5)))
    model = QKProjection(config=TrainConfig(epochs=2, learning_rate=5e-2, progress=False)).fit(pairs)
    history = [h["val_ndcg"] for h in model.history_]
    assert history[0] == 1.0 and max(history[1:]) < 1.0  # perfect at the start, and training did make it worse
    assert model.selected_.startswith("identity") and model.validation_["best_epoch"] == 0
    assert model.validation_["ndcg@10"] == model.validation_["init_ndcg@10"] == 1.0
    np.testing.assert_allclose(model.Q_, np.eye(32), atol=1e-6)
    np.testing.assert_allclose(model.K_, np.eye(32), atol=1e-6)


def test_selection_keeps_the_start_when_a_validation_gain_is_luck(planted):
    # Random positives: nothing to learn. On 12 validation queries a trained map still "gains" by chance; with any
    # gain accepted (alpha 1) it is kept, with the default significance test the identity is.
    import dataclasses

    rng = np.random.default_rng(0)
    q = _unit(rng.normal(size=(60, 32)))
    pairs = Pairs(q, rng.integers(0, 200, 60), planted.documents, query_ids=tuple(f"q{i}" for i in range(60)))
    config = dataclasses.replace(FAST, validation_fraction=0.2)
    lucky = QKProjection(config=dataclasses.replace(config, selection_alpha=1.0)).fit(pairs)
    assert lucky.selected_.startswith("trained") and lucky.validation_["gain_p_value"] > 0.05
    careful = QKProjection(config=config).fit(pairs)
    assert careful.selected_.startswith("identity (trained epoch") and "> 0.05" in careful.selected_
    np.testing.assert_allclose(careful.Q_, np.eye(32), atol=1e-6)
    assert careful.validation_["ndcg@10"] == careful.validation_["init_ndcg@10"]
    with pytest.raises(InputError, match="selection_alpha"):
        QKProjection(config=dataclasses.replace(config, selection_alpha=0.0)).fit(pairs)


def test_probabilities_are_sigmoid_of_scores_and_symmetric_is_symmetric(planted, trained):
    q, d = planted.test_queries[:20], planted.documents[:20]
    p = trained.predict_proba(q, d)
    assert np.all((p > 0) & (p < 1))
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-trained.score(q, d))), rtol=1e-5)
    np.testing.assert_allclose(trained.predict_proba_matrix(q, d).diagonal(), p, rtol=1e-5)
    np.testing.assert_allclose(trained.probability(np.einsum("ij,ij->i", trained.transform_queries(q),
                                                             trained.transform_documents(d))), p, rtol=1e-5)
    sym = SymmetricProjection(config=TrainConfig(epochs=1, progress=False)).fit(planted.train)
    np.testing.assert_allclose(sym.score(q, d), sym.score(d, q), rtol=1e-5)


def test_deterministic_under_seed(planted):
    config = TrainConfig(epochs=2, learning_rate=3e-3, random_negatives=32, progress=False, seed=7)
    a = QKProjection(config=config).fit(planted.train)
    b = QKProjection(config=config).fit(planted.train)
    np.testing.assert_array_equal(a.Q_, b.Q_)
    np.testing.assert_array_equal(a.K_, b.K_)
    assert (a.scale_, a.bias_) == (b.scale_, b.bias_)
    assert [h["val_ndcg"] for h in a.history_] == [h["val_ndcg"] for h in b.history_]


# ---------------------------------------------------------------------------------------------------- persistence


@pytest.mark.parametrize("cls", [QKProjection, SymmetricProjection, QueryAdapter])
def test_save_load_round_trip_is_exact(tmp_path, planted, cls):
    model = cls(config=TrainConfig(epochs=1, progress=False)).fit(planted.train)
    model.save(tmp_path / "p")
    back = QKProjection.load(tmp_path / "p")
    assert type(back) is cls
    np.testing.assert_array_equal(back.Q_, model.Q_)
    np.testing.assert_array_equal(back.K_, model.K_)
    assert (back.scale_, back.bias_) == (model.scale_, model.bias_)
    np.testing.assert_array_equal(back.score_matrix(planted.test_queries, planted.documents),
                                  model.score_matrix(planted.test_queries, planted.documents))
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    for key in ("qkrag_version", "format_version", "variant", "encoder", "dimension", "rank", "training_data_hash",
                "validation", "train_config", "selected"):
        assert key in config
    assert config["encoder"] == "planted" and config["training_data_hash"] == planted.train.content_hash()
    assert back.history_ == model.history_ and back.selected_ == model.selected_


def test_load_with_another_encoder_is_an_index_mismatch(tmp_path, trained, fake_encoder):
    trained.save(tmp_path / "p")
    with pytest.raises(IndexMismatchError, match="planted.*fake-encoder"):
        QKProjection.load(tmp_path / "p", encoder=fake_encoder)


def test_load_refuses_a_folder_that_is_not_a_projection(tmp_path, trained):
    with pytest.raises(InputError, match="not a saved projection"):
        QKProjection.load(tmp_path)
    trained.save(tmp_path / "p")
    with pytest.raises(InputError, match="'qk' projection"):
        SymmetricProjection.load(tmp_path / "p")


# --------------------------------------------------------------------------------------------------------- errors


def test_dimension_mismatch_is_an_index_mismatch(trained):
    with pytest.raises(IndexMismatchError, match="dimension 16, expected 32.*Fix:"):
        trained.transform_queries(np.ones((2, 16), np.float32))
    with pytest.raises(IndexMismatchError):
        trained.check_encoder("other", 32)
    with pytest.raises(IndexMismatchError):
        Pairs(np.ones((2, 16), np.float32), np.array([0, 1]), np.ones((3, 8), np.float32))


def test_bad_hyperparameters_quote_the_value(planted):
    with pytest.raises(InputError, match=r"rank=64.*between 1 and the embedding dimension 32"):
        QKProjection(rank=64).fit(planted.train)
    with pytest.raises(InputError, match=r"QueryAdapter\(rank=8\)"):
        QueryAdapter(rank=8).fit(planted.train)
    with pytest.raises(InputError, match=r"learning_rate.*-1"):
        QKProjection(config=TrainConfig(learning_rate=-1)).fit(planted.train)
    with pytest.raises(InputError, match="not fitted"):
        QKProjection().transform_queries(np.ones((1, 32), np.float32))


def test_split_keeps_queries_whole_and_is_seeded(planted):
    a_train, a_val = planted.train.split(0.2, seed=1)
    b_train, b_val = planted.train.split(0.2, seed=1)
    assert a_val.query_ids == b_val.query_ids
    assert not set(a_train.query_ids) & set(a_val.query_ids)
    assert a_val.n_queries == 60 and len(a_train) + len(a_val) == len(planted.train)


# ------------------------------------------------------------------------------------------------------ real data


@pytest.mark.slow
@pytest.mark.shared_data
def test_scifact_train_pairs_beat_raw_cosine_on_test(shared_data):
    """On real data: human train pairs -> a projection that ranks SciFact's test queries better than raw cosine.
    (Embeds 5,183 documents once with the real model; later runs read the cache.)"""
    from qkrag.embed.encoders import EmbedOptions, embed, make_encoder

    folder = shared_data / "scifact"
    test = load_beir(folder, "test")
    train = load_beir(folder, "train", corpus=test.corpus)
    encoder = make_encoder()
    options = EmbedOptions(progress=False)
    pairs = pairs_from_collection(train, encoder, options)
    assert (len(pairs), pairs.n_queries) == (919, 809)
    model = QKProjection(config=TrainConfig(epochs=8, learning_rate=1e-4, progress=False)).fit(pairs)
    queries = embed(encoder, list(test.queries.values()), "query", options)
    relevant = [{test.corpus.position(d) for d, r in test.qrels[q].items() if r > 0} for q in test.queries]
    _, raw_top = exact_search(queries, pairs.documents, 10, space="ip")
    _, top = exact_search(model.transform_queries(queries), model.transform_documents(pairs.documents), 10, space="ip")
    assert binary_ndcg(top, relevant).mean() > binary_ndcg(raw_top, relevant).mean() + 0.03


# ------------------------------------------------------------------------------------------- numbers and files


def test_a_diverging_loss_stops_training_with_a_clear_error(planted):
    # a pull toward the start of 1e38 overflows float32 as soon as a step moves the map
    with pytest.raises(InputError, match=r"the loss became (nan|inf) .*lower the learning rate"):
        QKProjection(config=TrainConfig(epochs=2, learning_rate=1.0, progress=False, init_weight=1e38)
                     ).fit(planted.train)


@pytest.mark.parametrize("lr", ["1e38", "1000", "inf"])
def test_an_absurd_learning_rate_is_refused_before_training(planted, lr):
    with pytest.raises(InputError, match=r"TrainConfig.learning_rate: .* is above 1.*at most 1"):
        QKProjection(config=TrainConfig(learning_rate=float(lr), progress=False)).fit(planted.train)


def test_a_kept_start_never_carries_a_diverged_scale_and_bias(planted):
    # at lr 1 every trained epoch is worse than the start: the start is kept, with the start's (s, b)
    model = QKProjection(config=TrainConfig(epochs=2, learning_rate=1.0, progress=False, calibrate=False)
                         ).fit(planted.train)
    assert model.selected_.startswith("identity")
    assert (model.scale_, model.bias_) == (20.0, -10.0)


def test_non_finite_or_diverged_weights_are_never_saved(tmp_path, trained):
    import copy

    broken = copy.deepcopy(trained)
    broken.scale_ = float("nan")
    with pytest.raises(InputError, match="scale holds NaN or infinite values"):
        broken.save(tmp_path / "p")
    broken = copy.deepcopy(trained)
    broken.bias_ = 532e3
    with pytest.raises(InputError, match="outside 0 < s"):
        broken.save(tmp_path / "p")
    broken = copy.deepcopy(trained)
    broken.Q_ = broken.Q_.copy()
    broken.Q_[0, 0] = np.inf
    with pytest.raises(InputError, match="Q holds NaN or infinite"):
        broken.save(tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_the_same_weights_save_to_the_same_bytes(tmp_path, trained):
    saved = {trained.save(tmp_path / f"p{i}").joinpath("model.safetensors").read_bytes() for i in range(12)}
    assert len(saved) == 1


def test_a_save_is_all_or_nothing(tmp_path, trained, monkeypatch):
    import qkrag.atomic

    old = QKProjection.identity(32, "planted")
    old.save(tmp_path / "p")
    before = {n: (tmp_path / "p" / n).read_bytes() for n in ("model.safetensors", "config.json")}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # a kill between writing the weights and the config

    monkeypatch.setattr(qkrag.atomic, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        trained.save(tmp_path / "p")
    assert {n: (tmp_path / "p" / n).read_bytes() for n in before} == before
    assert [p.name for p in tmp_path.iterdir()] == ["p"]  # no temporary folder left behind
    monkeypatch.undo()
    trained.save(tmp_path / "p")
    assert QKProjection.load(tmp_path / "p").selected_ == trained.selected_


def test_saving_over_a_folder_with_other_files_is_refused(tmp_path, trained):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match=r"holds other files than a projection \(notes.txt\)"):
        trained.save(tmp_path / "runs")
    assert (tmp_path / "runs" / "notes.txt").read_text() == "keep me"
