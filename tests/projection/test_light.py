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
