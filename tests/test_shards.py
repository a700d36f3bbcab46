"""A store in shards read as one (``distillscope.store.shards``): equal to one store, and every
way a folder of shards can be wrong is one line naming the shard."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

import distillscope as ds
from distillscope.cli import main
from distillscope.store.shards import (MANIFEST, ShardedStore, manifest_for, shard_bounds,
                                       shard_name, write_manifest)

N, BATCH, COUNT = 250, 10, 3


def _write(path, ids, rows, provenance=None):
    """A store of a teacher and a student (embeddings and one map layer), two conditions."""
    with ds.StoreWriter(path, sample_ids=ids, labels=ids % 4,
                        splits=np.where(ids % 5 == 0, "test", "train"), overwrite=True,
                        provenance=provenance) as w:
        w.add_condition("clean", kind="clean")
        w.add_condition("noise", kind="gaussian_noise", space="normalized", sigma=0.1)
        w.add_model("teacher", role="teacher", architecture="t", n_params=10)
        w.add_model("student", role="student", architecture="s", n_params=5)
        for (model, condition), (embedding, maps) in rows.items():
            w.write_layer(model, condition, "embedding", embedding)
            w.write_layer(model, condition, "map", maps, kind="map")
    return path


def _rows(n, seed=0):
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, 6))
    out = {}
    for model, width in (("teacher", 24), ("student", 12)):
        for condition, sigma in (("clean", 0.0), ("noise", 0.3)):
            z = latent + sigma * rng.standard_normal(latent.shape)
            emb = (z @ rng.standard_normal((6, width))).astype(np.float32)
            maps = rng.standard_normal((n, 3, 6, 6)).astype(np.float32)
            out[(model, condition)] = (emb, maps)
    return out


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """One store, and the same samples in 3 shards with their manifest."""
    root = tmp_path_factory.mktemp("shards")
    ids = np.arange(N, dtype=np.int64) * 3 + 11
    rows = _rows(N)
    single = _write(root / "one.h5", ids, rows, {"config_sha256": "c0ffee"})
    folder = root / "sharded"
    manifest = manifest_for(COUNT, "c0ffee", ids, BATCH)
    write_manifest(folder, manifest)
    bounds = manifest["bounds"]
    for i in range(COUNT):
        lo, hi = bounds[i], bounds[i + 1]
        _write(folder / shard_name(i, COUNT), ids[lo:hi],
               {k: (e[lo:hi], m[lo:hi]) for k, (e, m) in rows.items()},
               {"config_sha256": "c0ffee",
                "shard": {"index": i, "count": COUNT, "start": lo, "stop": hi}})
    return single, folder


def test_bounds_fall_on_whole_batches():
    assert shard_bounds(250, 3, 10) == [0, 80, 160, 250]
    assert shard_bounds(7, 7, 1) == list(range(8))
    with pytest.raises(ds.InputError, match="empty"):
        shard_bounds(25, 4, 10)


def test_shards_read_as_one_store(stores):
    single, folder = stores
    with ds.open_store(single) as one, ds.open_store(folder) as many:
        assert isinstance(many, ShardedStore)
        np.testing.assert_array_equal(many.sample_ids, one.sample_ids)
        np.testing.assert_array_equal(many.labels, one.labels)
        np.testing.assert_array_equal(many.splits, one.splits)
        described = [[(i.path, i.kind, i.shape, i.dtype) for i in st.entries()]
                     for st in (many, one)]
        assert described[0] == described[1]  # their chunks are each shard's own
        for info in one.entries():
            np.testing.assert_array_equal(many.read(info), one.read(info))
            # blocks straddling the shards' bounds (80, 160)
            for start, block in many.iter_chunks(info, rows=37):
                np.testing.assert_array_equal(block, one.read(info)[start:start + 37])


def test_analyze_of_the_folder_equals_analyze_of_one_store(stores):
    single, folder = stores
    a = ds.analyze(single, rows=64, bootstrap=1)
    b = ds.analyze(folder, rows=64, bootstrap=1)
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:  # the same blocks: the same numbers
        if a[name].dtype.kind == "f":
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
        else:
            assert a[name].equals(b[name]), name


def _broken(stores, tmp_path):
    folder = tmp_path / "sharded"
    shutil.copytree(stores[1], folder)
    return folder


def test_inspect_lists_the_shards(stores, capsys):
    assert main(["inspect", str(stores[1])]) == 0
    out = capsys.readouterr().out
    assert "shard 1/3: shard-00001-of-00003.h5, samples 80..159" in out and "samples 250" in out


def _one_line_error(capsys, folder, *expected):
    assert main(["inspect", str(folder)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


def test_a_missing_shard_is_one_line(stores, tmp_path, capsys):
    folder = _broken(stores, tmp_path)
    (folder / shard_name(1, COUNT)).unlink()
    _one_line_error(capsys, folder, shard_name(1, COUNT), "shard 1/3 is missing",
                    "--shard 1/3")


def test_a_foreign_shard_is_one_line(stores, tmp_path, capsys):
    folder = _broken(stores, tmp_path)
    with h5py.File(folder / shard_name(2, COUNT), "r+") as f:  # another configuration's
        prov = json.loads(f.attrs["provenance"])
        prov["config_sha256"] = "beef"
        f.attrs["provenance"] = json.dumps(prov)
    _one_line_error(capsys, folder, shard_name(2, COUNT), "foreign shard", "configuration beef")
    folder = _broken(stores, tmp_path / "stray")
    shutil.copy(folder / shard_name(0, COUNT), folder / shard_name(0, 4))
    _one_line_error(capsys, folder, shard_name(0, 4), "foreign shard", "lists 3 shards")


def test_overlapping_shards_are_one_line(stores, tmp_path, capsys):
    folder = _broken(stores, tmp_path)
    path = folder / shard_name(1, COUNT)
    with ds.open_store(path) as st:
        ids = st.sample_ids.copy()
        rows = {(m, c): (st.read(st.layers(m, c)["embedding"]), st.read(st.layers(m, c)["map"]))
                for m in st.models for c in st.conditions}
        provenance = json.loads(st.attrs["provenance"])
    ids[5] = 11  # shard 0's first sample
    _write(path, ids, rows, provenance)
    _one_line_error(capsys, folder, "sample id 11 is in more than one shard (0, 1)")


def test_a_manifest_of_another_extraction_is_refused(stores, tmp_path):
    folder = _broken(stores, tmp_path)
    other = json.loads((folder / MANIFEST).read_text())
    other["config_sha256"] = "beef"
    with pytest.raises(ds.InputError, match="another extraction .*config_sha256"):
        write_manifest(folder, other)
    (folder / MANIFEST).write_text("{not json")
    with pytest.raises(ds.StoreError, match="unreadable shard manifest"):
        ds.open_store(folder)


def test_no_output_overwrites_a_shard(stores, tmp_path, capsys):
    folder = _broken(stores, tmp_path)
    before = (folder / shard_name(0, COUNT)).read_bytes()
    for target in (folder / shard_name(0, COUNT), folder / MANIFEST):
        code = main(["analyze", str(folder), "-o", str(target), "--overwrite", "-q"])
        err = capsys.readouterr().err
        assert code != 0 and "is the input" in err and len(err.strip().splitlines()) == 1, err
    assert (folder / shard_name(0, COUNT)).read_bytes() == before
