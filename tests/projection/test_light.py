"""The numpy + safetensors path: a saved projection applied without torch gives qkrag's numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qkrag.errors import InputError
from qkrag.projection.light import LightProjection, weights_hash
from qkrag.projection.model import QueryAdapter
from tests.fakes import random_projection

ROOT = Path(__file__).resolve().parents[2]


def test_light_projection_matches_the_full_one(tmp_path):
    projection = random_projection(16, "enc", rank=8)
    projection.save(tmp_path / "p")
    light = LightProjection.load(tmp_path / "p")
    rng = np.random.default_rng(1)
    q, d = rng.normal(size=(3, 16)).astype(np.float32), rng.normal(size=(5, 16)).astype(np.float32)
    np.testing.assert_allclose(light.score_matrix(q, d), projection.score_matrix(q, d), atol=1e-5)
    np.testing.assert_allclose(light.predict_proba_matrix(q, d), projection.predict_proba_matrix(q, d), atol=1e-6)
    np.testing.assert_allclose(light.transform_documents(d), projection.transform_documents(d), atol=1e-6)
    dots = light.transform_queries(q) @ light.transform_documents(d).T
    np.testing.assert_allclose(light.probability(dots), projection.probability(dots), atol=1e-6)
    assert light.sha256 == weights_hash(tmp_path / "p") and light.encoder == "enc"
    with pytest.raises(InputError, match="takes 16-d vectors"):
        light.transform_queries(np.zeros((1, 3)))


def test_query_adapter_leaves_documents_alone(tmp_path):
    adapter = QueryAdapter.identity(8, "enc")
    adapter.save(tmp_path / "a")
    d = np.random.default_rng(0).normal(size=(2, 8)).astype(np.float32)
    np.testing.assert_array_equal(LightProjection.load(tmp_path / "a").transform_documents(d), d)


def test_light_path_imports_no_torch(tmp_path):
    random_projection(8, "enc").save(tmp_path / "p")
    code = ("import sys, json\nfrom qkrag.projection.light import LightProjection\n"
            f"p = LightProjection.load({str(tmp_path / 'p')!r})\nimport numpy as np\n"
            "print(json.dumps([float(p.predict_proba_matrix(np.full((1, 8), 0.1), np.full((1, 8), 0.1))[0, 0]), "
            "'torch' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert out.returncode == 0, out.stderr
    probability, torch_loaded = json.loads(out.stdout)
    assert 0 < probability < 1 and torch_loaded is False


def test_a_damaged_folder_is_one_clear_error(tmp_path):
    random_projection(8, "enc").save(tmp_path / "p")
    (tmp_path / "p" / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(InputError, match="safetensors"):
        LightProjection.load(tmp_path / "p")


def _tamper(folder: Path, what: str) -> None:
    """Damage a saved projection the way a hand edit, a mixed copy or a future qkrag would."""
    from safetensors.numpy import load as st_load, save as st_save

    tensors = st_load((folder / "model.safetensors").read_bytes())
    config = json.loads((folder / "config.json").read_text())
    if what == "wrong K shape":
        tensors["K"] = np.ones((3, 8), np.float32)
    elif what == "missing K":
        del tensors["K"]
    elif what == "1-D Q":
        tensors["Q"] = np.ones(8, np.float32)
    elif what == "empty scale":
        tensors["scale"] = np.zeros(0, np.float32)
    elif what == "NaN in Q":
        tensors["Q"][0, 0] = np.nan
    elif what == "bias 532":
        tensors["bias"] = np.float32([1e5])
        config["bias"] = 1e5
    elif what == "config is a list":
        config = [config]
    elif what == "unknown train_config key":
        config["train_config"] = {**(config["train_config"] or {}), "warp_factor": 9}
    elif what == "future format":
        config["format_version"] = 99
    elif what == "rank mismatch":
        config["rank"] = 384
    elif what == "dimension as a string":
        config["dimension"] = str(config["dimension"])
    (folder / "model.safetensors").write_bytes(st_save(tensors))
    (folder / "config.json").write_text(json.dumps(config))


TAMPERED = {"wrong K shape": "K of shape", "missing K": "has no K", "1-D Q": "Q of shape", "empty scale":
            "scale of shape", "NaN in Q": "NaN or infinite values in Q", "bias 532": "outside 0 < s",
            "config is a list": "JSON list", "unknown train_config key": "warp_factor", "future format":
            "projection format 99", "rank mismatch": "config.json says rank 384, but model.safetensors has 8",
            "dimension as a string": "config.json says dimension '8', but model.safetensors has 8"}


@pytest.mark.parametrize("what", sorted(TAMPERED))
def test_a_tampered_or_future_projection_is_one_clear_error_for_both_loaders(tmp_path, what):
    from qkrag.projection.model import QKProjection
    from qkrag.projection.train import TrainConfig

    projection = random_projection(8, "enc")
    projection.config = TrainConfig()
    projection.save(tmp_path / "p")
    _tamper(tmp_path / "p", what)
    loaders = [QKProjection.load] + ([] if what == "unknown train_config key" else [LightProjection.load])
    for load in loaders:  # the light loader ignores train_config: it never builds a TrainConfig
        with pytest.raises(InputError, match=TAMPERED[what]) as caught:
            load(tmp_path / "p")
        assert "\n" not in str(caught.value) and "Fix:" in str(caught.value)


def test_light_and_full_share_one_sigmoid_with_tiny_probabilities_kept():
    from qkrag.projection.light import sigmoid
    from qkrag.projection.model import QKProjection

    x = np.array([-800.0, -40.0, 0.0, 40.0, 800.0])
    p = sigmoid(x)
    assert np.isfinite(p).all() and p[0] == 0.0 and p[1] == pytest.approx(np.exp(-40.0), rel=1e-9)
    assert p[2] == 0.5 and p[-1] == 1.0
    np.testing.assert_allclose(QKProjection.identity(2, scale=1.0).probability(x[1:4]), p[1:4].astype(np.float32))
