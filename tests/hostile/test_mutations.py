"""Random mutations of a valid store (attributes, shapes, dtypes, links, deletions) end in a
correct result or in one clear line of error: never a traceback, never a hang.

Examples per run: ``DISTILLSCOPE_MUTATIONS`` (default 40; the nightly profile runs 2000:
``DISTILLSCOPE_MUTATIONS=2000 pytest tests/hostile/test_mutations.py``).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import distillscope as ds
from cases import base_store
from distillscope.cli import main
from test_corpus import within

EXAMPLES = int(os.environ.get("DISTILLSCOPE_MUTATIONS", "40"))

OBJECTS = ["/", "/samples", "/samples/id", "/samples/label", "/samples/split", "/conditions",
           "/conditions/clean", "/conditions/noise", "/models", "/models/teacher",
           "/models/student", "/models/teacher/clean", "/models/student/noise",
           "/models/teacher/clean/embedding", "/models/student/clean/embedding",
           "/models/student/noise/embedding"]
DATASETS = [p for p in OBJECTS if p.startswith("/samples/") or p.endswith("embedding")]
NAMES = ["format", "format_version", "complete", "n_samples", "kind", "sigma", "seed", "role",
         "architecture", "n_params", "family", "grid", "num_prefix_tokens", "space", "other"]

values = st.one_of(
    st.integers(-2**40, 2**40), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8),
    st.sampled_from(["False", "True", "teacher", "student", "embedding", "tokens", "map",
                     "distillscope.store", "70k", ""]),
    st.lists(st.integers(-3, 40), min_size=1, max_size=3).map(np.asarray),
)
dtypes = st.sampled_from(["f2", "f4", "f8", ">f4", "<f8", "i4", "u1", "c8", "?", "S4"])


@st.composite
def mutation(draw):
    kind = draw(st.sampled_from(["set", "delete attribute", "delete", "dataset", "soft link",
                                 "external link", "hard link", "resize"]))
    path = draw(st.sampled_from(OBJECTS))
    if kind == "set":
        return kind, path, draw(st.sampled_from(NAMES)), draw(values)
    if kind == "delete attribute":
        return kind, path, draw(st.sampled_from(NAMES)), None
    if kind in ("dataset", "resize"):
        return kind, draw(st.sampled_from(DATASETS)), draw(dtypes), draw(st.integers(-2, 2))
    return kind, path, draw(st.sampled_from(["/models", "/nowhere", "/models/teacher",
                                             "/samples/id", "/"])), None


def _apply(f: h5py.File, change) -> None:
    kind, path, what, extra = change
    if path not in f:
        return
    if kind == "set":
        f[path].attrs[what] = extra
    elif kind == "delete attribute":
        if what in f[path].attrs:
            del f[path].attrs[what]
    elif kind == "delete" and path != "/":
        del f[path]
    elif kind in ("dataset", "resize") and isinstance(f[path], h5py.Dataset):
        old = f[path]
        attrs, shape = dict(old.attrs), list(old.shape)
        if kind == "resize":
            shape[extra % max(1, len(shape))] = max(0, shape[extra % max(1, len(shape))] + extra)
        data = np.zeros(shape, dtype=what) if kind == "resize" or old.dtype.kind == "O" \
            else old[()].astype(what)
        del f[path]
        new = f.create_dataset(path, data=data)
        for key, value in attrs.items():
            new.attrs[key] = value
    elif kind in ("soft link", "external link", "hard link") and path != "/":
        parent = f[path].parent if path.count("/") > 1 else f
        name = "linked"
        if name in parent:
            return
        if kind == "soft link":
            parent[name] = h5py.SoftLink(what)
        elif kind == "external link":
            parent[name] = h5py.ExternalLink("elsewhere.h5", what)
        elif what in f:
            parent[name] = f[what]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return base_store(tmp_path_factory.mktemp("mutations") / "base.h5")


@settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 100,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(changes=st.lists(mutation(), min_size=1, max_size=3))
def test_a_mutated_store_gives_a_result_or_one_line(base, changes):
    with tempfile.TemporaryDirectory() as folder:
        store, out = Path(folder) / "store.h5", Path(folder) / "out" / "r.nc"
        out.parent.mkdir()
        store.write_bytes(base.read_bytes())
        with h5py.File(store, "r+") as f:
            for change in changes:
                with contextlib.suppress(Exception), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # complex -> float casts, say
                    _apply(f, change)  # h5py refused the mutation: skip it
        for argv in (["inspect", "--deep", str(store)],
                     ["analyze", str(store), "-o", str(out), "-q", "--no-robustness"]):
            err = io.StringIO()
            with within(30), contextlib.redirect_stderr(err), \
                    contextlib.redirect_stdout(io.StringIO()):
                code = main(argv)  # any exception escaping main is a traceback: the test fails
            lines = err.getvalue().strip().splitlines()
            errors = [line for line in lines if line.startswith("distillscope: error: ")]
            if code == 0:
                assert not errors
            else:
                assert code in (1, 2) and len(errors) == 1, (changes, err.getvalue())
                assert "Traceback" not in err.getvalue()
        if out.exists():
            assert ds.load_results(out)["effective_rank"].size > 0
        else:
            assert list(out.parent.iterdir()) == []
