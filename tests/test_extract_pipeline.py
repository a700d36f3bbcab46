"""The input pipeline of extraction: one read per batch, one input per preprocessing, every
model fed; channels-last; pairs of (model, condition) resumed at different points."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from digits_config import digits_config  # noqa: E402
from distillscope_extract import extract, plan_extraction  # noqa: E402
from distillscope_extract import run as run_module  # noqa: E402
from distillscope_extract.errors import ConfigError  # noqa: E402
from distillscope_extract.preprocess import Preprocessing  # noqa: E402

N_BATCHES, N_CONDITIONS = 3, 3  # 24 digits in batches of 8; clean, noise, band


def config(tmp_path: Path, run: str = "") -> Path:
    students = "".join(f"""
        [[models]]
        name = "student_{i}"
        role = "student"
        factory = "distillscope_extract.students:paper_cnn"
        kwargs = {{ width = 1, embed_dim = 16 }}
        layers = ["embedding", {{ module = "blocks.1", conditions = ["clean", "band"] }}]
        """ for i in range(2))
    return digits_config(tmp_path / "pipeline.toml", run=run, models="""
        [[models]]
        name = "teacher"
        role = "teacher"
        timm = "vit_tiny_patch16_224"
        kwargs = { img_size = 32, patch_size = 8, depth = 2, num_classes = 0 }
        layers = ["embedding"]
        """ + students + """
        [[models]]
        name = "own"
        role = "student"
        timm = "vit_tiny_patch16_224"
        kwargs = { img_size = 32, patch_size = 8, depth = 1, num_classes = 0 }
        preprocess = "model"
        layers = ["embedding"]
        """)


def datasets(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path) as f:
        f["models"].visititems(lambda name, obj: out.__setitem__(name, obj[()])
                               if isinstance(obj, h5py.Dataset) else None)
    return out


def quiet(**options):
    return {"progress": False, "log": lambda *a: None, **options}


def test_each_input_is_built_once_per_preprocessing_and_fed_to_every_model(tmp_path, monkeypatch):
    """Three models share the configured preprocessing, one has its own: per batch and
    condition, two inputs are built (not four), and each model's features are those of a
    forward pass on its own preprocessing of the batch."""
    path = config(tmp_path)
    calls = []
    original = Preprocessing.__call__

    def counted(self, images, condition, ids, seed, device="cpu"):
        calls.append((self, condition.name, int(ids[0])))
        return original(self, images, condition, ids, seed, device=device)

    monkeypatch.setattr(Preprocessing, "__call__", counted)
    out = extract(path, output=tmp_path / "store.h5", **quiet())
    monkeypatch.setattr(Preprocessing, "__call__", original)
    built = calls[4:]  # after the plan's one shape probe per model
    assert len(built) == len(set(built)) == N_BATCHES * N_CONDITIONS * 2
    plan = plan_extraction(path, output=tmp_path / "unused.h5")
    assert plan.preprocessing["teacher"] == plan.preprocessing["student_1"]
    assert plan.preprocessing["own"] != plan.preprocessing["teacher"]
    stored = datasets(out)
    for model in plan.models:
        name = model.spec.name
        for c in plan.config.conditions:
            x = plan.preprocessing[name](plan.data.images(8, 16), c, plan.data.ids[8:16], 0)
            with torch.inference_mode():
                features = model.forward(x)
            for layer in plan.layers_of(name, c.name):
                np.testing.assert_array_equal(stored[f"{name}/{c.name}/{layer}"][8:16],
                                              features[layer].numpy())


def test_channels_last_gives_the_same_features_within_float_rounding(tmp_path):
    path = config(tmp_path)
    reference = datasets(extract(path, output=tmp_path / "a.h5", **quiet()))
    nhwc = extract(path, output=tmp_path / "b.h5", **quiet(channels_last=True))
    with h5py.File(nhwc) as f:
        assert '"channels_last": true' in f.attrs["provenance"]
    other = datasets(nhwc)
    assert other.keys() == reference.keys()
    for key, a in reference.items():
        b = other[key]
        assert np.linalg.norm(a - b) <= 1e-5 * np.linalg.norm(a), key
    maps = other["student_0/band/blocks.1"]
    assert maps.shape == (24, 32, 8, 8) and maps.flags.c_contiguous  # stored (n, c, h, w)


def test_pairs_resumed_at_different_points_equal_an_uninterrupted_run(tmp_path, monkeypatch):
    """Each (model, condition) pair resumes where its own shards stop: work shards deleted
    unevenly (one pair from its second batch, one entirely) are redone, the rest kept."""
    path = config(tmp_path, run="checkpoint_seconds = 0")  # a shard per batch
    reference = datasets(extract(path, output=tmp_path / "ref.h5", **quiet()))
    plan = plan_extraction(path, output=tmp_path / "store.h5")
    run_module._prepare_work(plan)
    run_module._extract_shards(plan, progress=False)
    for shard in sorted((plan.work / "student_1" / "band").glob("*.npz"))[1:]:
        shard.unlink()
    for shard in (plan.work / "teacher" / "noise").glob("*.npz"):
        shard.unlink()
    calls = []
    original = Preprocessing.__call__

    def counted(self, images, condition, ids, seed, device="cpu"):
        calls.append((condition.name, int(ids[0])))
        return original(self, images, condition, ids, seed, device=device)

    monkeypatch.setattr(Preprocessing, "__call__", counted)
    resumed = extract(path, output=tmp_path / "store.h5", **quiet())
    monkeypatch.setattr(Preprocessing, "__call__", original)
    first = {int(plan.data.ids[s]): s for s in (0, 8, 16)}  # batch starts by first sample id
    assert sorted((c, first[i]) for c, i in calls[4:]) == [
        ("band", 8), ("band", 16), ("noise", 0), ("noise", 8), ("noise", 16)]  # what was deleted
    other = datasets(resumed)
    assert other.keys() == reference.keys()
    for key, a in reference.items():
        np.testing.assert_array_equal(other[key], a, err_msg=key)
    assert not plan.work.exists()


def test_buffered_activations_are_bounded_whatever_the_number_of_pairs(tmp_path, monkeypatch):
    """Every pair is written out once all the buffers together reach the byte cap."""
    path = config(tmp_path, run="checkpoint_seconds = 1000")
    monkeypatch.setattr(run_module, "_SHARD_MAX_BYTES", 1)
    plan = plan_extraction(path, output=tmp_path / "store.h5")
    run_module._prepare_work(plan)
    run_module._extract_shards(plan, progress=False)
    for pair in (("teacher", "clean"), ("student_0", "band"), ("own", "noise")):
        assert len(list((plan.work / pair[0] / pair[1]).glob("*.npz"))) == N_BATCHES, pair


def test_a_failed_shard_write_stops_the_run_and_a_rerun_resumes(tmp_path, monkeypatch):
    """Shards are written by a thread while the models go on: its error reaches the run, what
    it wrote before stays, and the rerun finishes the store the uninterrupted run writes."""
    from distillscope import OutputError

    path = config(tmp_path, run="checkpoint_seconds = 1000")
    reference = datasets(extract(path, output=tmp_path / "reference.h5", **quiet()))
    monkeypatch.setattr(run_module, "_SHARD_MAX_BYTES", 1)  # a write after every batch
    write, calls = run_module._atomic_write, []

    def failing(target, content):
        calls.append(target)
        if target.suffix == ".npz" and len(calls) > 10:
            raise OutputError(f"{target}: no space left on device")
        write(target, content)

    monkeypatch.setattr(run_module, "_atomic_write", failing)
    with pytest.raises(OutputError, match="no space left"):
        extract(path, output=tmp_path / "store.h5", **quiet())
    shards = list((tmp_path / "store.h5.work").rglob("*.npz"))
    assert not (tmp_path / "store.h5").exists() and 0 < len(shards) < len(calls)
    monkeypatch.setattr(run_module, "_atomic_write", write)
    resumed = datasets(extract(path, output=tmp_path / "store.h5", **quiet()))
    assert resumed.keys() == reference.keys()
    for key, a in reference.items():
        np.testing.assert_array_equal(resumed[key], a, err_msg=key)


def test_resuming_with_another_memory_layout_is_refused(tmp_path):
    path = config(tmp_path)
    plan = plan_extraction(path, output=tmp_path / "store.h5")
    run_module._prepare_work(plan)
    with pytest.raises(ConfigError, match="channels_last"):
        extract(path, output=tmp_path / "store.h5", **quiet(channels_last=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_inputs_built_on_the_gpu_equal_the_cpu_path(tmp_path):
    """Pinned uint8 batches, resize, normalisation and noise on the device (the draws are the
    CPU's, seeded per sample id): the same inputs within float rounding."""
    from distillscope_extract.pipeline import build_batches

    plan = plan_extraction(config(tmp_path), output=tmp_path / "unused.h5", device="cuda")
    prep = plan.preprocessing["own"]  # resized 32 -> 35, cropped: interpolation on the device
    needs = tuple((prep, c) for c in plan.config.conditions)
    for device in ("cpu", "cuda"):
        got = list(build_batches(plan.data, range(0, 24, 8), 8, lambda s: needs, seed=0,
                                 device=device, workers=2))
        if device == "cpu":
            reference = got
    for a, b in zip(reference, got):
        for key, x in a.inputs.items():
            torch.testing.assert_close(b.inputs[key].cpu(), x, rtol=1e-5, atol=1e-5)


def test_folded_batch_norms_give_the_same_features_within_float_rounding(tmp_path):
    """A shipped student (trained norms), with layers at a block, at a norm (its identity
    after folding) and at a convolution (left unfolded): float32 rounding apart, the same."""
    weights = Path(__file__).resolve().parents[1] / "extract" / "models" / "student_M_seed0.safetensors"
    path = digits_config(tmp_path / "fold.toml", models=f"""
        [[models]]
        name = "student"
        role = "student"
        factory = "distillscope_extract.students:paper_cnn"
        kwargs = {{ width = 2, embed_dim = 192 }}
        weights = "{weights}"
        layers = ["embedding", "blocks.1", "blocks.2.1", "blocks.0.0"]
        """)
    plan = plan_extraction(path, output=tmp_path / "unused.h5", fuse_batchnorm=True)
    module = plan.models[0].module
    assert [type(m).__name__ for m in module.blocks[1]][:2] == ["Conv2d", "Identity"]
    assert type(module.blocks[0][1]).__name__ == "BatchNorm2d"  # its convolution is a layer
    reference = datasets(extract(path, output=tmp_path / "a.h5", **quiet()))
    folded = datasets(extract(path, output=tmp_path / "b.h5", **quiet(fuse_batchnorm=True)))
    assert folded.keys() == reference.keys()
    for key, a in reference.items():
        assert np.linalg.norm(folded[key] - a) <= 1e-5 * np.linalg.norm(a), key
    np.testing.assert_array_equal(folded["student/clean/blocks.0.0"],
                                  reference["student/clean/blocks.0.0"])
