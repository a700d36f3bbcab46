"""Counter-based noise (``[run] rng = "counter"``): the torch code against a numpy evaluation
of the same generator, its statistics, and extraction with it on the CPU (and a GPU)."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from digits_config import NOISE, band, digits_config  # noqa: E402
from distillscope_extract import extract, plan_extraction  # noqa: E402
from distillscope_extract.conditions import parse_condition, with_rng  # noqa: E402
from distillscope_extract.counter import (GOLDEN, counter_normals, counter_uniforms,  # noqa: E402
                                          sample_keys, splitmix64)


def numpy_words(key: int, count: int) -> np.ndarray:
    """Word j = splitmix64(key + (j + 1) GOLDEN), in numpy's uint64 (wrapping) arithmetic."""
    z = np.uint64(key) + np.arange(1, count + 1, dtype=np.uint64) * np.uint64(GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def numpy_normals(key: int, count: int) -> np.ndarray:
    u = ((numpy_words(key, 2 * count) >> np.uint64(40)).astype(np.float64) + 0.5) / 2.0**24
    return np.sqrt(-2.0 * np.log(u[0::2])) * np.cos(2.0 * np.pi * u[1::2])


def test_splitmix64_is_the_published_sequence():
    """splitmix64 of the state advanced by the golden gamma: Vigna's reference output for
    seed 0 (first two values of ``next()``)."""
    assert splitmix64(GOLDEN) == 0xE220A8397B1DCDAF
    assert splitmix64(2 * GOLDEN) == 0x6E789E6AA1B965F4


def test_torch_words_and_normals_equal_the_numpy_evaluation():
    keys = sample_keys(7, 123456, [0, 1, 2**40, 59999])
    for key, uniforms, normals in zip(keys, counter_uniforms(keys, 1000).numpy(),
                                      counter_normals(keys, (2, 250)).numpy()):
        words = numpy_words(key, 1000)
        expected = ((words >> np.uint64(40)).astype(np.float64) + 0.5) / 2.0**24
        np.testing.assert_array_equal(uniforms, expected.astype(np.float32))  # exact: 24 bits
        np.testing.assert_allclose(normals.ravel(), numpy_normals(key, 500), rtol=0, atol=2e-6)


def test_counter_normals_are_standard_and_independent_across_samples():
    keys = sample_keys(0, 99, range(64))
    z = counter_normals(keys, (3, 32, 32)).numpy().reshape(64, -1).astype(np.float64)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01  # 4.5 and 4 standard errors
    assert abs(np.mean(z ** 4) - 3) < 0.09  # Gaussian kurtosis, within 4 standard errors
    assert abs(np.mean(np.abs(z) > 3) - 0.0027) < 0.0005  # the tails: P(|z| > 3)
    corr = np.corrcoef(z[:, :2000])  # 64 samples' noise: uncorrelated
    assert np.abs(corr[np.triu_indices(64, 1)]).max() < 0.1
    assert np.abs(z).max() < math.sqrt(-2 * math.log(0.5 / 2**24)) + 1e-6


def test_noise_depends_on_seed_condition_and_id_only():
    cond = with_rng(parse_condition({"name": "g", "kind": "gaussian_noise", "sigma": 1.0},
                                    "test"), "counter")
    x = torch.zeros(6, 3, 8, 8)
    ids = [5, 9, 11, 40, 41, 1000]
    whole = cond(x, ids, seed=3)
    parts = torch.cat([cond(x[:2], ids[:2], seed=3), cond(x[2:], ids[2:], seed=3)])
    torch.testing.assert_close(whole, parts, rtol=0, atol=0)
    assert not torch.equal(whole, cond(x, ids, seed=4))
    other = with_rng(parse_condition({"name": "h", "kind": "gaussian_noise", "sigma": 1.0},
                                     "test"), "counter")
    assert not torch.equal(whole, other(x, ids, seed=3))
    assert cond.params["rng"] == "counter"


@pytest.mark.parametrize("entry", [
    {"kind": "band_noise", "band": "high", "sigma": 1.0},
    {"kind": "impulse_noise", "amount": 0.2},
    {"kind": "speckle_noise", "sigma": 0.5},
])
def test_every_drawing_kind_runs_on_the_counter(entry):
    cond = with_rng(parse_condition({"name": "c", **entry}, "test"), "counter")
    x = torch.full((4, 3, 16, 16), 0.5)
    y = cond(x, [1, 2, 3, 4], seed=0)
    assert y.shape == x.shape and not torch.equal(y, x)
    if entry["kind"] == "impulse_noise":
        hit = (y != 0.5).float().mean()
        assert abs(float(hit) - 0.2) < 0.03 and set(torch.unique(y).tolist()) == {0.0, 0.5, 1.0}
    if entry["kind"] == "band_noise":
        assert abs(float(y.std()) - 1.0) < 0.1  # unit per-pixel standard deviation


def config(tmp_path, rng: str):
    return digits_config(tmp_path / f"{rng}.toml", run=f'rng = "{rng}"', limit=8,
                         conditions=NOISE + band(which="mid"), models="""
        [[models]]
        name = "teacher"
        role = "teacher"
        timm = "vit_tiny_patch16_224"
        kwargs = { img_size = 32, patch_size = 8, depth = 1, num_classes = 0 }
        layers = ["embedding"]
        """)


def test_an_extraction_with_counter_noise_records_it_and_adds_that_noise(tmp_path):
    path = config(tmp_path, "counter")
    out = extract(path, output=tmp_path / "c.h5", progress=False, log=lambda *a: None)
    plan = plan_extraction(path, output=tmp_path / "unused.h5")
    with h5py.File(out) as f:
        assert f["conditions/noise"].attrs["rng"] == "counter"
        assert "rng" not in f["conditions/clean"].attrs
        stored = f["models/teacher/noise/embedding"][:]
    noise = plan.config.conditions[1]
    prep = plan.preprocessing["teacher"]
    clean = prep(plan.data.images(0, 16), plan.config.conditions[0], plan.data.ids[:16], 0)
    keys = sample_keys(0, noise.key, plan.data.ids[:16])
    x = clean + 0.1 * counter_normals(keys, tuple(clean.shape[1:]))
    with torch.inference_mode():
        np.testing.assert_allclose(stored, plan.models[0].forward(x)["embedding"].numpy(),
                                   rtol=1e-5, atol=1e-5)
    numpy_store = extract(config(tmp_path, "numpy"), output=tmp_path / "n.h5", progress=False,
                          log=lambda *a: None)
    with h5py.File(numpy_store) as f, h5py.File(out) as g:
        np.testing.assert_array_equal(f["models/teacher/clean/embedding"][:],
                                      g["models/teacher/clean/embedding"][:])
        assert not np.array_equal(f["models/teacher/noise/embedding"][:], stored)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_counter_noise_on_the_gpu_equals_the_cpu():
    keys = sample_keys(0, 1, range(32))
    cpu = counter_normals(keys, (3, 224, 224))
    gpu = counter_normals(keys, (3, 224, 224), device="cuda").cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(counter_uniforms(keys, 4096, "cuda").cpu(),
                               counter_uniforms(keys, 4096), rtol=0, atol=0)
