"""Feature store v1: round trip, provenance, validation with one-line messages."""

import json
import os

import h5py
import numpy as np
import pytest

import distillscope as ds
from conftest import write_store


def test_round_trip_and_provenance(tmp_path):
    rng = np.random.default_rng(0)
    n = 37
    emb = rng.standard_normal((n, 9)).astype(np.float16)
    maps = rng.standard_normal((n, 4, 3, 5)).astype(np.float32)
    tokens = rng.standard_normal((n, 1 + 6, 8))
    labels = rng.integers(0, 3, n)
    path = tmp_path / "s.h5"
    with ds.StoreWriter(path, sample_ids=np.arange(n) * 7, labels=labels,
                        splits=["train"] * 30 + ["test"] * 7, config={"sigma": [0.1, 0.2]},
                        producer="pytest") as w:
        w.add_condition("clean")
        w.add_condition("noise", kind="gaussian_noise", sigma=0.1, space="normalized")
        w.add_model("t", role="teacher", architecture="vit", n_params=123, weights_sha256="ab")
        w.add_model("s", role="student", architecture="cnn", n_params=5, family="s", seed=2)
        w.write_layer("t", "clean", "tok", tokens, grid=(2, 3), num_prefix_tokens=1)
        w.write_layer("s", "clean", "emb", emb)
        w.write_layer("s", "noise", "map", maps)
        assert not path.exists()  # written under <name>.partial until complete
    assert not path.with_name("s.h5.partial").exists()
    with ds.open_store(path) as st:
        assert st.n_samples == n
        np.testing.assert_array_equal(st.sample_ids, np.arange(n) * 7)
        np.testing.assert_array_equal(st.labels, labels)
        assert list(st.splits[-2:]) == ["test", "test"]
        assert st.attrs["complete"] and st.attrs["format_version"] == 1
        assert st.attrs["producer"] == "pytest"
        assert json.loads(st.attrs["config"]) == {"sigma": [0.1, 0.2]}
        assert st.conditions["noise"] == {"kind": "gaussian_noise", "sigma": 0.1, "space": "normalized"}
        assert st.models["s"].family == "s" and st.models["s"].seed == 2
        assert st.models["t"].attrs["weights_sha256"] == "ab" and st.models["t"].n_params == 123
        info = st.layers("t", "clean")["tok"]
        assert (info.kind, info.grid, info.num_prefix_tokens) == ("tokens", (2, 3), 1)
        np.testing.assert_array_equal(st.read(info), tokens)
        np.testing.assert_array_equal(st.read(st.layers("s", "clean")["emb"]), emb)
        info = st.layers("s", "noise")["map"]
        assert info.dtype == np.float32 and info.chunks[1:] == (4, 3, 5)
        blocks = [(start, block.copy()) for start, block in st.iter_chunks(info, rows=10)]
        assert [b[0] for b in blocks] == [0, 10, 20, 30]
        np.testing.assert_array_equal(np.concatenate([b[1] for b in blocks]), maps)
    with h5py.File(path) as f:
        assert f["models/s/noise/map"].fletcher32


def test_chunks_along_samples(tmp_path):
    z = np.zeros((5000, 512), np.float32)
    path = write_store(tmp_path / "c.h5", {("teacher", "clean", "e"): z})
    with h5py.File(path) as f:
        chunks = f["models/teacher/clean/e"].chunks
    assert chunks[1] == 512 and 1 < chunks[0] < 5000
    assert chunks[0] * 512 * 4 <= 1 << 20


def test_npy_input_and_sample_id_check(tmp_path):
    z = np.random.default_rng(1).standard_normal((20, 3)).astype(np.float32)
    np.save(tmp_path / "f.npy", z)
    path = tmp_path / "n.h5"
    with ds.StoreWriter(path, sample_ids=np.arange(20)) as w:
        w.add_condition("clean")
        w.add_model("teacher", role="teacher", architecture="x")
        w.write_layer("teacher", "clean", "emb", tmp_path / "f.npy", sample_ids=np.arange(20))
        ids = np.arange(20)
        ids[[4, 5]] = ids[[5, 4]]
        with pytest.raises(ds.InputError, match=r"first at position 4 \(got id 5, store has 4\)"):
            w.write_layer("teacher", "clean", "emb2", z, sample_ids=ids)
        with pytest.raises(ds.InputError, match="expected 20 samples along axis 0; got shape"):
            w.write_layer("teacher", "clean", "emb3", z[:19])
    with ds.open_store(path) as st:
        np.testing.assert_array_equal(st.read(st.layers("teacher", "clean")["emb"]), z)


@pytest.mark.parametrize("array, kwargs, message", [
    (np.ones((5, 3), np.int32), {}, "float16, float32 or float64 \\(either byte order\\); got int32"),
    (np.ones((5, 3), np.complex64), {}, "got complex64"),
    (np.ones((5, 7, 2)), {}, "cannot tell the layer kind"),
    (np.ones((5, 7, 2)), {"grid": (2, 3), "num_prefix_tokens": 2}, "7 tokens != 2 prefix"),
    (np.ones((5, 7, 2)), {"kind": "tokens"}, "tokens need grid"),
    (np.ones((5, 3)), {"kind": "map"}, "a map layer is 4-D"),
])
def test_writer_refuses_bad_layers(tmp_path, array, kwargs, message):
    path = tmp_path / "bad.h5"
    with pytest.raises(ds.InputError, match=message):
        with ds.StoreWriter(path, sample_ids=np.arange(5)) as w:
            w.add_condition("clean")
            w.add_model("teacher", role="teacher", architecture="x")
            w.write_layer("teacher", "clean", "layer", array, **kwargs)
    assert not path.exists() and not list(tmp_path.iterdir())  # partial file removed


def test_writer_checks(tmp_path):
    with pytest.raises(ds.InputError, match="unique; id 3 appears 2 times"):
        ds.StoreWriter(tmp_path / "a.h5", sample_ids=[1, 3, 3])
    with pytest.raises(ds.InputError, match="integer array"):
        ds.StoreWriter(tmp_path / "a.h5", sample_ids=[0.5, 1.5])
    with ds.StoreWriter(tmp_path / "a.h5", sample_ids=[1, 2]) as w:
        w.add_condition("clean")
        with pytest.raises(ds.InputError, match="role must be"):
            w.add_model("m", role="teacherr", architecture="x")
        with pytest.raises(ds.InputError, match="without '/'"):
            w.add_model("a/b", role="student", architecture="x")
        w.add_model("t", role="teacher", architecture="x")
        with pytest.raises(ds.InputError, match="already has a teacher"):
            w.add_model("t2", role="teacher", architecture="x")
        with pytest.raises(ds.InputError, match="add_condition"):
            w.write_layer("t", "noise", "e", np.ones((2, 2)))
        w.write_layer("t", "clean", "e", np.ones((2, 2)))
    with pytest.raises(ds.OutputError, match="exists; pass overwrite=True"):
        ds.StoreWriter(tmp_path / "a.h5", sample_ids=[1, 2])


def test_incomplete_layer_refused_and_overwrite_keeps_old_until_done(tmp_path):
    path = write_store(tmp_path / "s.h5", {("teacher", "clean", "e"): np.ones((4, 2))})
    before = path.read_bytes()
    with pytest.raises(ds.InputError, match="only 2 of 4 samples written"):
        with ds.StoreWriter(path, sample_ids=np.arange(4), overwrite=True) as w:
            w.add_condition("clean")
            w.add_model("teacher", role="teacher", architecture="x")
            w.create_layer("teacher", "clean", "e", (2,)).append(np.ones((2, 2)))
    assert path.read_bytes() == before


# ----------------------------------------------------------------------------- bad stores
def _break(path, how):
    with h5py.File(path, "r+") as f:
        how(f)
    return path


BREAKAGES = {
    "not a store": (lambda f: f.attrs.__delitem__("format"), "not a distillscope store"),
    "wrong version": (lambda f: f.attrs.__setitem__("format_version", 2),
                      "format_version 2 is not supported"),
    "incomplete": (lambda f: f.attrs.__setitem__("complete", False), "store is incomplete"),
    "missing group": (lambda f: f.__delitem__("conditions"), "/conditions: required group is missing"),
    "missing ids": (lambda f: f.__delitem__("samples/id"), "/samples/id: must be a 1-D integer"),
    "duplicate ids": (lambda f: f["samples/id"].__setitem__(1, f["samples/id"][0]), "not unique"),
    "bad role": (lambda f: f["models/teacher"].attrs.__setitem__("role", "boss"), "'role' is 'boss'"),
    "undeclared condition": (lambda f: f.move("models/teacher/clean", "models/teacher/fog"),
                             "condition 'fog' is not declared"),
    "sample count": (lambda f: (f["models/student/clean"].__delitem__("embedding"),
                                f["models/student/clean"].create_dataset(
                                    "embedding", data=np.ones((59, 24), np.float32)),
                                f["models/student/clean/embedding"].attrs.__setitem__("kind", "embedding")),
                     "/models/student/clean/embedding: holds 59 samples but /samples/id has 60"),
    "integer dataset": (lambda f: (f["models/student/clean"].__delitem__("embedding"),
                                   f["models/student/clean"].create_dataset(
                                       "embedding", data=np.ones((60, 24), np.int64)),
                                   f["models/student/clean/embedding"].attrs.__setitem__("kind", "embedding")),
                        "dtype int64 is not float16/32/64"),
    "bad kind": (lambda f: f["models/teacher/clean/embedding"].attrs.__setitem__("kind", "blob"),
                 "'kind' is 'blob'"),
}


@pytest.mark.parametrize("name", list(BREAKAGES))
def test_validation_names_file_path_and_fix(small_store, name):
    how, message = BREAKAGES[name]
    _break(small_store, how)
    with pytest.raises(ds.StoreError, match=message) as info:
        ds.open_store(small_store)
    text = str(info.value)
    assert text.startswith(str(small_store)) and "\n" not in text


def test_incomplete_store_can_be_read_on_request(small_store):
    _break(small_store, lambda f: f.attrs.__setitem__("complete", False))
    with ds.open_store(small_store, allow_incomplete=True) as st:
        assert st.n_samples == 60


def test_missing_truncated_and_non_hdf5_files(tmp_path, small_store):
    with pytest.raises(ds.StoreError, match="no such file"):
        ds.open_store(tmp_path / "nope.h5")
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(small_store.read_bytes()[: os.path.getsize(small_store) // 2])
    with pytest.raises(ds.StoreError, match="truncated"):
        ds.open_store(truncated)
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(ds.StoreError, match="not HDF5"):
        ds.open_store(text)
    with pytest.raises(ds.StoreError, match="is a directory"):
        ds.open_store(tmp_path)


def test_deep_validation_finds_nonfinite_and_corruption(small_store):
    ds.validate_store(small_store, deep=True).close()
    with h5py.File(small_store, "r+") as f:
        e = f["models/student/clean/embedding"]
        e[12, 5] = np.nan
        e[40, 0] = np.inf
    with pytest.raises(ds.StoreError, match=r"2 non-finite values \(1 NaN, 1 infinite\), first at "
                                             r"sample 12 \(id 1012\), feature index \(5\)"):
        ds.validate_store(small_store, deep=True)
    ds.validate_store(small_store).close()  # structure alone is fine


def test_checksum_detects_flipped_bytes(tmp_path):
    z = np.arange(4000 * 8, dtype=np.float32).reshape(4000, 8)
    path = write_store(tmp_path / "k.h5", {("teacher", "clean", "e"): z})
    with h5py.File(path) as f:
        offset = f["models/teacher/clean/e"].id.get_chunk_info(0).byte_offset
    data = bytearray(path.read_bytes())
    data[offset + 100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ds.StoreError, match=r"/models/teacher/clean/e: cannot read samples 0\.\..*damaged"):
        ds.validate_store(path, deep=True)
