"""The reproduction configurations in ``extract/configs/papers/``: each model is built and
checked by ``extract --dry-run`` (random weights: nothing is downloaded here), and each stored
layer has the shape its registry entry records."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from distillscope import papers

pytest.importorskip("timm")
from distillscope_extract.config import load_config  # noqa: E402
from distillscope_extract.run import extract  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "extract" / "configs" / "papers"


@pytest.fixture
def photos(tmp_path):
    """A two-class image folder of real photographs (scikit-image's samples)."""
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    root = tmp_path / "data" / "imagenet" / "val"
    for label, names in {"n01": ["chelsea", "astronaut"], "n02": ["coffee", "rocket"]}.items():
        (root / label).mkdir(parents=True)
        for name in names:
            Image.fromarray(getattr(skimage_data, name)()).save(root / label / f"{name}.png")
    return tmp_path


@pytest.mark.slow
def test_tian_2511_15572_config_builds_every_model_with_the_papers_token_shapes(photos):
    text = (CONFIGS / "tian_2511_15572.toml").read_text()
    config = load_config(CONFIGS / "tian_2511_15572.toml")
    assert config.data.per_class == 1 and config.data.splits == ("val",)
    registry = {n.timm: n.representation for n in papers.numbers("tian_2511_15572")
                if n.convention == "tian_2511_15572_per_image"}
    head, *models = text.replace("pretrained = true", "pretrained = false").split("\n[[models]]")
    assert len(models) == 14  # every model of the paper's table (Swin-Small: layout nhwc)
    for block in models:
        one = photos / "one.toml"
        one.write_text(head + "\n[[models]]" + block)
        plan = extract(one, dry_run=True, progress=False, log=lambda *a: None)
        assert plan.data.ids.size == 2  # per_class = 1: the first image of each class
        model = plan.models[0]
        layer = plan.layers[model.spec.name]["last_block"]
        tokens, channels = (int(v) for v in re.search(
            r"(\d+) tokens x (\d+) channels", registry[model.spec.timm]).groups())
        shape = tuple(layer["shape"])
        assert layer["kind"] == "tokens", model.spec.timm
        assert (shape[0] - layer["num_prefix_tokens"], shape[1]) == (tokens, channels), \
            model.spec.timm
        assert int(np.prod(layer["grid"])) == tokens
