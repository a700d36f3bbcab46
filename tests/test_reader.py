"""The store reader: every layout it reads directly equals plain h5py, every other falls back.

Each case builds a real store whose layer has the layout under test (``relayout`` rewrites the
dataset with h5py), reads it through ``Store.reader`` in blocks that do and do not line up with
the chunks, and compares with ``h5py`` reading the same dataset in one go.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import distillscope as ds
from conftest import write_store
from distillscope._kernels import jit_enabled

#: without the JIT the direct reader steps aside (its checksum kernel would crawl as Python)
DIRECT = jit_enabled()

PATH = "/models/teacher/clean/x"


def relayout(source, target, *, userblock: int = 0, **create):
    """A copy of the store ``source`` whose layer ``PATH`` is created with ``create``."""
    with h5py.File(source, "r") as src, h5py.File(target, "w", userblock_size=userblock) as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for name in src:
            src.copy(src[name], dst, name=name)
        data = src[PATH][()]
        attrs = dict(src[PATH].attrs)
        del dst[PATH]
        ds_ = dst.create_dataset(PATH, data=data.astype(create.pop("dtype", data.dtype)),
                                 **create)
        for key, value in attrs.items():
            ds_.attrs[key] = value
    return target


def _store(tmp_path, shape=(1000, 37), dtype=np.float32):
    z = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    return write_store(tmp_path / "base.h5", {("teacher", "clean", "x"): z}), z


def _read_in_blocks(path, rows, widen=False, validate=True):
    """Read the layer in blocks through the store's reader (``validate=False``: through a
    ``DatasetReader`` on the bare h5py dataset, as if validation had let the file through)."""
    if not validate:
        from distillscope.store.chunks import DatasetReader

        with h5py.File(path, "r") as f:
            reader = DatasetReader(f[PATH], (path, PATH), widen=widen)
            parts = []
            for start in range(0, f[PATH].shape[0], rows):
                block = reader.read(start, min(f[PATH].shape[0], start + rows))
                parts.append(block.copy())
                reader.done(block)
            return np.concatenate(parts), reader
    with ds.open_store(path) as st:
        info = st.layers("teacher", "clean")["x"]
        reader = st.reader(info, widen=widen)
        parts = []
        for start in range(0, info.shape[0], rows):
            block = reader.read(start, min(info.shape[0], start + rows))
            parts.append(block.copy())
            reader.done(block)
        return np.concatenate(parts), reader


def _plain(path):
    with h5py.File(path, "r") as f:
        return f[PATH][()]


LAYOUTS = {  # name -> (relayout keywords, read directly?)
    "distillscope (rows, fletcher32)": (None, True),
    "chunked rows, no filter": ({"chunks": (64, 37)}, True),
    "user block": ({"userblock": 512, "chunks": (100, 37), "fletcher32": True}, True),
    "big-endian float32": ({"dtype": ">f4", "chunks": (100, 37), "fletcher32": True}, False),
    "shuffle + gzip": ({"chunks": (100, 37), "shuffle": True, "compression": "gzip"}, False),
    "contiguous": ({}, False),
    "chunked along features too": ({"chunks": (100, 5)}, False),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_reads_equal_to_h5py(tmp_path, layout):
    base, z = _store(tmp_path)
    create, direct = LAYOUTS[layout]
    path = base if create is None else relayout(base, tmp_path / "l.h5", **create)
    expected = _plain(path)
    assert expected.dtype.newbyteorder("=") == np.float32
    chunk = h5py.File(path, "r")[PATH].chunks
    step = chunk[0] if chunk else 100
    for rows in (1, 7, step - 1, step, step + 1, 3 * step, 1000):
        got, reader = _read_in_blocks(path, rows)
        assert got.dtype == np.float32 and got.dtype.isnative
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(got, z)
        assert (reader.direct is not None) == (direct and DIRECT), layout
        assert reader.rows_read == 1000
        if reader.direct is not None:  # every chunk read once, whatever the block size
            assert reader.direct.chunks_read == -(-1000 // chunk[0])


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
@pytest.mark.parametrize("shape", [(333, 3, 5, 7), (50, 1)])
def test_other_dtypes_and_shapes(tmp_path, dtype, shape):
    base, z = _store(tmp_path, shape, dtype)
    for rows in (1, 13, 333):
        got, reader = _read_in_blocks(base, rows)
        assert got.dtype == dtype and (reader.direct is not None) == DIRECT
        np.testing.assert_array_equal(got, z)
        wide, _ = _read_in_blocks(base, rows, widen=True)
        assert wide.dtype == (np.float32 if dtype == np.float16 else dtype)
        np.testing.assert_array_equal(wide, z)  # float16 -> float32 is exact


def test_a_chunk_stored_without_its_filter_falls_back(tmp_path):
    base, z = _store(tmp_path, (300, 8))
    path = relayout(base, tmp_path / "m.h5", chunks=(100, 8), fletcher32=True)
    with h5py.File(path, "r+") as f:  # rewrite one chunk raw, with fletcher32 marked skipped
        d = f[PATH]
        d.id.write_direct_chunk((100, 0), z[100:200].tobytes(), filter_mask=1)
    got, reader = _read_in_blocks(path, 64)
    assert reader.direct is None
    np.testing.assert_array_equal(got, _plain(path))
    np.testing.assert_array_equal(got, z)


@pytest.mark.parametrize("create", [{"chunks": (100, 37), "fletcher32": True},
                                    {"chunks": (100, 37), "compression": "gzip"}])
def test_unwritten_chunks_are_an_error_naming_the_samples(tmp_path, create):
    base, _ = _store(tmp_path)
    path = relayout(base, tmp_path / "u.h5", **create)
    with h5py.File(path, "r+") as f:  # a dataset whose rows 300..399 were never written
        d = f[PATH]
        data, attrs = d[()], dict(d.attrs)
        del f[PATH]
        d = f.create_dataset(PATH, shape=data.shape, dtype=data.dtype, **create)
        d[:300], d[400:] = data[:300], data[400:]
        for key, value in attrs.items():
            d.attrs[key] = value
    with pytest.raises(ds.StoreError, match=r"x: 1 of 10 chunks were never written \(first: "
                                            r"samples 300\.\.399\)"):
        ds.open_store(path)  # validation finds them before anything is read
    with pytest.raises(ds.StoreError, match=r"x: samples 300\.\.399 were never written"):
        _read_in_blocks(path, 128, validate=False)  # and the reader, should one slip through


def _chunk_spans(path):
    with h5py.File(path, "r") as f:
        spans = []
        f[PATH].id.chunk_iter(lambda i: spans.append((i.chunk_offset[0], i.byte_offset, i.size)))
    return sorted(spans)


def test_checksums_catch_corruption_and_accept_legacy_byte_order(tmp_path):
    z = np.arange(1000 * 300, dtype=np.float32).reshape(1000, 300)  # chunks of 873 rows: edge 127
    path = write_store(tmp_path / "e.h5", {("teacher", "clean", "x"): z})
    (_, first, first_size), (_, edge, _) = _chunk_spans(path)
    data = bytearray(path.read_bytes())
    stored = data[first + first_size - 4:first + first_size]
    data[first + first_size - 4:first + first_size] = bytes([stored[1], stored[0], stored[3],
                                                             stored[2]])
    path.write_bytes(bytes(data))
    got, reader = _read_in_blocks(path, 400)  # HDF5 < 1.6.3 byte order: accepted, as HDF5 does
    assert (reader.direct is not None) == DIRECT
    np.testing.assert_array_equal(got, z)
    data[edge + 10] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ds.StoreError, match=r"x: cannot read samples 873\.\.999 \(fletcher32 "
                                             r"checksum mismatch\)" if DIRECT else "damaged"):
        _read_in_blocks(path, 400)
    with pytest.raises(ds.StoreError, match=r"cannot read samples .*damaged"):
        ds.validate_store(path, deep=True)
