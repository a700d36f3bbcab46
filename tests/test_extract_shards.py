"""``extract --shard I/N``: three shards, read as one store, equal one unsharded extraction."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("timm")

import distillscope as ds  # noqa: E402
from distillscope.cli import main  # noqa: E402
from distillscope_extract import extract  # noqa: E402

from test_extract import FACTORIES, vit_config  # noqa: E402


def test_three_shards_equal_one_extraction_bit_for_bit(tmp_path, capsys):
    config = vit_config(tmp_path, data='source = "digits"\nlimit = 30',
                        run='batch_size = 10\ndtype = "float16"', extra_model=f"""
                            [[models]]
                            name = "student"
                            role = "student"
                            factory = "{FACTORIES}:tiny_cnn"
                            layers = ["embedding", "0"]
                            """)
    whole = extract(config, output=tmp_path / "whole.h5", progress=False, allow_code=True,
                    log=lambda *a: None)
    folder = tmp_path / "shards"
    for i in (2, 0, 1):  # in any order, each on its own (a job array)
        extract(config, output=folder, shard=f"{i}/3", progress=False, allow_code=True,
                log=lambda *a: None)
    with ds.open_store(whole) as one, ds.open_store(folder) as many:
        assert [s.n_samples for s in many.shards] == [20, 20, 20]  # whole batches of 10
        np.testing.assert_array_equal(many.sample_ids, one.sample_ids)
        np.testing.assert_array_equal(many.labels, one.labels)
        np.testing.assert_array_equal(many.splits, one.splits)
        infos = list(one.entries())
        assert len(infos) > 4
        for info in infos:  # the deterministic CPU models: bit for bit
            np.testing.assert_array_equal(many.read(info), one.read(info), err_msg=info.path)
    assert main(["inspect", str(folder)]) == 0
    assert "60" in capsys.readouterr().out
    # another configuration's shard into this folder is refused before extracting anything
    other = config.with_name("other.toml")
    other.write_text(config.read_text().replace("sigma = 0.1", "sigma = 0.2"))
    with pytest.raises(ds.InputError, match="another extraction .*config_sha256"):
        extract(other, output=folder, shard="0/2", progress=False, allow_code=True,
                log=lambda *a: None)
    assert not (folder / "shard-00000-of-00002.h5").exists()
    # a shard index out of range is one line, before any work
    assert main(["extract", str(config), "--shard", "3/3", "-o", str(folder), "-q",
                 "--allow-code"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--shard must be I/N" in err
