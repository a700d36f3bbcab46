"""extract/: configuration, data, conditions, models and layers, the store it writes, errors."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from distillscope import open_store  # noqa: E402
from distillscope.cli import main  # noqa: E402
from distillscope.metrics.frequency import (  # noqa: E402
    band_fractions,
    band_mask,
    power_spectrum,
    tokens_to_maps,
)

from distillscope_extract import extract, plan_extraction  # noqa: E402
from distillscope_extract.conditions import SEVERITIES, gaussian_blur, parse_condition  # noqa: E402
from distillscope_extract.config import load_config  # noqa: E402
from distillscope_extract.errors import ConfigError, DataError, ModelError  # noqa: E402

ASSETS = Path(__file__).parent / "extract_assets"
FACTORIES = ASSETS / "factories.py"


def write_config(tmp_path: Path, body: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def vit_config(tmp_path: Path, *, weights: str | None = None, extra_model: str = "",
               conditions: str = "", data: str = 'source = "digits"\nlimit = 12',
               run: str = "batch_size = 8\ndtype = \"float32\"", layers: str | None = None) -> Path:
    layers = layers or '["embedding", "blocks.1", { module = "blocks.0", name = "first" }]'
    weights_line = f'weights = "{weights}"' if weights else ""
    return write_config(tmp_path, f"""
        [run]
        {run}
        [data]
        {data}
        [preprocess]
        preset = "none"
        size = [32, 48]
        mean = [0.5, 0.5, 0.5]
        std = [0.25, 0.25, 0.25]
        [[conditions]]
        name = "clean"
        kind = "clean"
        [[conditions]]
        name = "noise"
        kind = "gaussian_noise"
        space = "normalized"
        sigma = 0.1
        {conditions}
        [[models]]
        name = "teacher"
        role = "teacher"
        timm = "vit_tiny_patch16_224"
        kwargs = {{ img_size = [32, 48], patch_size = 8, depth = 2, num_classes = 0 }}
        {weights_line}
        layers = {layers}
        {extra_model}
        """)


def run_cli(*args) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(map(str, args)))
    return code, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------------------ configuration
@pytest.mark.parametrize("snippet, message", [
    ("[run]\nbatchsize = 3", "unknown key 'batchsize'; valid keys: seed, batch_size"),
    ("[data]\nsource = 'digits'\nfolder = 'x'", "unknown key 'folder'; valid keys: source, root"),
    ("[[conditions]]\nname = 'n'\nkind = 'gaussian_noise'\nsigma = 0.1\nsigmaa = 1",
     "unknown key 'sigmaa' for kind 'gaussian_noise'; valid keys: name, kind, sigma, severity"),
    ("[[conditions]]\nname = 'n'\nkind = 'fog'", "unknown condition kind 'fog'; valid kinds: clean"),
    ("[[conditions]]\nname = 'n'\nkind = 'gaussian_noise'", "needs 'sigma' or severity"),
    ("[[conditions]]\nname = 'n'\nkind = 'band_noise'\nsigma = 1\nband = 'ultra'",
     "band must be one of low, mid, high"),
    ("[extras]\nx = 1", "unknown key 'extras'; valid keys: run, data, preprocess, conditions, models"),
])
def test_config_errors_name_the_key_and_list_valid_ones(tmp_path, snippet, message):
    base = "[[models]]\nname = 't'\nrole = 'teacher'\ntimm = 'resnet18'\n"
    if not snippet.startswith("[data]"):
        base += "[data]\nsource = 'digits'\n"
    path = write_config(tmp_path, snippet + "\n" + base)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(path)


@pytest.mark.parametrize("line, message", [
    ('factory = "x:y"', "exactly one of timm"),
    ('layer = ["embedding"]', "unknown key 'layer'; valid keys: name, role, timm"),
    ('layers = [{ module = "x", conditions = ["fog"] }]', "unknown condition 'fog'; conditions: clean"),
])
def test_model_table_errors(tmp_path, line, message):
    path = write_config(tmp_path, f"""
        [data]
        source = "digits"
        [[models]]
        name = "t"
        role = "teacher"
        timm = "resnet18"
        {line}
        """)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_shipped_configs_parse():
    for path in sorted((Path(__file__).parents[1] / "extract" / "configs").glob("*.toml")):
        config = load_config(path)
        assert config.models and config.conditions


def test_paper_config_mirrors_the_paper():
    config = load_config(Path(__file__).parents[1] / "extract" / "configs" / "arxiv_2603_06698.toml")
    teacher = config.models[0]
    assert teacher.role == "teacher" and "clip" in teacher.timm and teacher.pretrained
    widths = sorted({m.kwargs["width"] for m in config.models[1:]})
    assert widths == [1, 2, 4]
    sigmas = sorted(c.strength for c in config.conditions if c.kind == "gaussian_noise")
    assert sigmas == [0.05, 0.1, 0.2]
    assert all(c.space == "normalized" for c in config.conditions if c.kind == "gaussian_noise")
    assert config.preprocess.preset == "clip" and config.data.source == "cifar10"


# ------------------------------------------------------------------------------ conditions
def cond(**entry):
    return parse_condition(entry, "test")


def test_noise_depends_only_on_seed_condition_and_sample_id():
    c = cond(name="n", kind="gaussian_noise", sigma=0.1, space="normalized")
    x = torch.zeros(4, 3, 8, 8)
    a = c(x, [10, 11, 12, 13], seed=0)
    b = c(x[1:3], [11, 12], seed=0)  # another batch composition
    assert torch.equal(a[1:3], b)
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(a, c(x, [10, 11, 12, 13], seed=1))
    other = cond(name="m", kind="gaussian_noise", sigma=0.1, space="normalized")
    assert not torch.equal(a, other(x, [10, 11, 12, 13], seed=0))
    assert abs(float(a.std()) - 0.1) < 0.01


def test_pixel_space_noise_is_clipped_normalized_is_not():
    x = torch.full((2, 3, 16, 16), 0.99)
    pixel = cond(name="p", kind="gaussian_noise", sigma=0.5)(x, [1, 2], seed=0)
    assert float(pixel.max()) <= 1.0 and float(pixel.min()) >= 0.0
    normalized = cond(name="p", kind="gaussian_noise", sigma=0.5, space="normalized")(x, [1, 2], seed=0)
    assert float(normalized.max()) > 1.5


def test_severity_tables_are_the_published_ones():
    assert SEVERITIES["cifar"]["gaussian_noise"] == (0.04, 0.06, 0.08, 0.09, 0.10)
    assert cond(name="s", kind="gaussian_noise", severity=3).strength == 0.08
    assert cond(name="s", kind="shot_noise", severity=5).strength == 50
    assert cond(name="s", kind="gaussian_blur", severity=2, table="imagenet").strength == 2
    with pytest.raises(ConfigError, match="either severity or sigma"):
        cond(name="s", kind="gaussian_noise", severity=3, sigma=0.1)


@pytest.mark.parametrize("band", ["low", "mid", "high"])
def test_band_noise_has_its_power_in_its_band_at_equal_per_pixel_sigma(band):
    c = cond(name=f"b_{band}", kind="band_noise", band=band, sigma=0.2)
    noise = c(torch.zeros(64, 3, 24, 24), list(range(64)), seed=0).numpy()
    assert abs(noise.std() - 0.2) < 0.005  # equal per-pixel sigma in every band
    fractions = band_fractions(power_spectrum(noise))
    assert fractions[band] > 0.999


@pytest.mark.parametrize("shape", [(2, 3, 24, 24), (2, 3, 9, 14)])
def test_band_noise_is_the_masked_full_spectrum_one_image_at_a_time(shape):
    """Against the obvious filter: each sample's white noise, each channel's full complex DFT
    times the band's mask, inverted, its real part, scaled to unit per-pixel variance."""
    ids = [3, 11]
    for band in ("low", "mid", "high"):
        c = cond(name=f"b_{band}", kind="band_noise", band=band, sigma=1.0, space="normalized")
        mask = band_mask(*shape[-2:], band)
        ref = np.stack([[np.fft.ifft2(np.fft.fft2(channel) * mask).real
                         for channel in c.generator(0, sid).standard_normal(shape[1:])]
                        for sid in ids]) / np.sqrt(mask.mean())
        noise = c(torch.zeros(shape), ids, seed=0).numpy()
        np.testing.assert_allclose(noise, ref, rtol=1e-6, atol=1e-6)


def test_blur_matches_scipy_gaussian_filter_nearest():
    from scipy.ndimage import gaussian_filter

    x = torch.rand(3, 20, 17, generator=torch.Generator().manual_seed(0))
    ours = gaussian_blur(x, 1.3).numpy()
    ref = np.stack([gaussian_filter(x[c].double().numpy(), 1.3, mode="nearest", truncate=4.0)
                    for c in range(3)])
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_shot_noise_is_unbiased_and_seeded():
    c = cond(name="shot", kind="shot_noise", lam=60)
    x = torch.full((1, 3, 64, 64), 0.5)
    y = c(x, [7], seed=0)
    assert abs(float(y.mean()) - 0.5) < 0.01 and torch.equal(y, c(x, [7], seed=0))


# ------------------------------------------------------------------------------ preprocessing
def test_clip_preprocessing_is_pil_on_uint8_as_the_papers_pipeline():
    """The clip preset resizes as CLIP's preprocess and arXiv 2603.06698's notebook do:
    torchvision's Resize on a PIL image (uint8 after each pass), CenterCrop, ToTensor,
    Normalize. On noise images (the worst case for rounding) every value is within one 8-bit
    level and almost all are equal; the float resize (quantize = false) is torchvision's tensor
    pipeline and lies up to ~21/255 away from PIL's."""
    from PIL import Image
    from torchvision import transforms as T
    from torchvision.transforms import v2

    from distillscope_extract.config import PreprocessSpec
    from distillscope_extract.preprocess import resolve_preprocessing

    prep = resolve_preprocessing(PreprocessSpec(preset="clip"), None)
    assert prep.quantize
    rng = np.random.default_rng(0)
    clean = cond(name="clean", kind="clean")
    for shape in ((32, 32, 3), (48, 40, 3)):
        images = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(2)]
        ours = prep(images, clean, [0, 1], seed=0)
        notebook = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC),
                              T.CenterCrop(224), T.ToTensor(), T.Normalize(prep.mean, prep.std)])
        ref = torch.stack([notebook(Image.fromarray(im)) for im in images])
        std = torch.tensor(prep.std).view(1, 3, 1, 1)
        levels = ((ours - ref) * std * 255).abs()  # in 8-bit levels
        assert ours.shape == (2, 3, 224, 224)
        assert float(levels.max()) < 1 + 1e-3 and float((levels > 0.5).float().mean()) < 0.01
        # the float path: torchvision on tensors, and far from PIL on noise
        floats = resolve_preprocessing(PreprocessSpec(preset="clip", quantize=False), None)
        tv = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                         v2.Resize(224, interpolation=v2.InterpolationMode.BICUBIC,
                                   antialias=True),
                         v2.CenterCrop(224), v2.Lambda(lambda t: t.clamp(0, 1)),
                         v2.Normalize(prep.mean, prep.std)])
        unrounded = floats(images, clean, [0, 1], seed=0)
        torch.testing.assert_close(unrounded, torch.stack([tv(im) for im in images]),
                                   atol=1e-5, rtol=1e-5)
        assert float(((unrounded - ref) * std * 255).abs().max()) > 5


# ------------------------------------------------------------------------------ end to end
def save_weights(tmp_path: Path, kind: str = "safetensors") -> Path:
    torch.manual_seed(123)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=(32, 48),
                              patch_size=8, depth=2, num_classes=0)
    if kind == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "teacher.safetensors"
        save_file(model.state_dict(), str(path))
    else:
        path = tmp_path / "teacher.pt"
        torch.save({"state_dict": model.state_dict()}, path)
    return path


@pytest.mark.parametrize("kind", ["safetensors", "pt"])
def test_stored_features_equal_a_direct_forward_pass(tmp_path, kind):
    weights = save_weights(tmp_path, kind)
    config = vit_config(tmp_path, weights=weights.name)
    out = extract(config, output=tmp_path / "f.h5", device="cpu", progress=False,
                  log=lambda *a: None)  # compared with a CPU forward pass below
    plan = plan_extraction(config, output=tmp_path / "unused.h5", device="cpu")
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=(32, 48),
                              patch_size=8, depth=2, num_classes=0).eval()
    from distillscope_extract.models import load_state_dict

    model.load_state_dict(load_state_dict(weights, "test"))
    prep = plan.preprocessing["teacher"]
    with open_store(out) as st, h5py.File(out) as f:
        assert st.n_samples == 24 and list(st.conditions) == ["clean", "noise"]
        assert f["models/teacher"].attrs["n_params"] == sum(p.numel() for p in model.parameters())
        assert len(f["models/teacher"].attrs["weights_sha256"]) == 64
        for c in plan.config.conditions:
            x = prep(plan.data.images(0, 8), c, plan.data.ids[:8], seed=0)
            with torch.inference_mode():
                emb = model(x).numpy()
                maps = model.forward_intermediates(x, indices=[1], output_fmt="NCHW",
                                                   intermediates_only=True)[0].numpy()
            stored = f[f"models/teacher/{c.name}/embedding"][:8]
            np.testing.assert_array_equal(stored, emb)
            tokens = st.layers("teacher", c.name)["blocks.1"]
            assert tokens.kind == "tokens" and tuple(tokens.grid) == (4, 6)
            assert tokens.num_prefix_tokens == 1
            stored_maps = tokens_to_maps(f[f"models/teacher/{c.name}/blocks.1"][:8], (4, 6), 1)
            np.testing.assert_array_equal(stored_maps, maps)  # non-square grid, CLS dropped
        assert "first" in st.layers("teacher", "clean")


def test_every_model_sees_the_same_noisy_input_and_reruns_reproduce_it(tmp_path):
    models = "\n".join(f"""
        [[models]]
        name = "{name}"
        role = "student"
        factory = "{FACTORIES}:identity"
        layers = ["embedding"]
        """ for name in ("a", "b"))
    config = vit_config(tmp_path, extra_model=textwrap.dedent(models), conditions="""
        [[conditions]]
        name = "band"
        kind = "band_noise"
        band = "high"
        sigma = 0.3
        [[conditions]]
        name = "shot"
        kind = "shot_noise"
        severity = 2
        """)
    first = extract(config, output=tmp_path / "1.h5", progress=False, log=lambda *a: None,
                    allow_code=True)
    second = extract(config, output=tmp_path / "2.h5", progress=False, batch_size=5,
                     workers=2, log=lambda *a: None, allow_code=True)  # other batches, threads
    with h5py.File(first) as f, h5py.File(second) as g:
        for c in ("clean", "noise", "band", "shot"):
            a = f[f"models/a/{c}/embedding"][:]
            np.testing.assert_array_equal(a, f[f"models/b/{c}/embedding"][:])
            np.testing.assert_array_equal(a, g[f"models/a/{c}/embedding"][:])
        clean = f["models/a/clean/embedding"][:]
        noise = f["models/a/noise/embedding"][:] - clean
        assert abs(noise.std() - 0.1) < 0.005  # normalized-space sigma, no clipping


def test_dry_run_writes_nothing(tmp_path, capsys):
    config = vit_config(tmp_path)
    code, out, err = run_cli("extract", config, "-o", tmp_path / "f.h5", "--dry-run")
    assert code == 0, err
    assert "tokens" in out and "grid 4x6 + 1 prefix" in out and "MiB" in out
    assert list(tmp_path.iterdir()) == [config]


def test_existing_output_is_refused_before_any_work(tmp_path):
    config = vit_config(tmp_path)
    (tmp_path / "f.h5").write_bytes(b"precious")
    code, _, err = run_cli("extract", config, "-o", tmp_path / "f.h5", "-q")
    assert code == 1 and "--overwrite" in err and "Traceback" not in err
    assert (tmp_path / "f.h5").read_bytes() == b"precious"
    assert not (tmp_path / "f.h5.work").exists()


def test_resume_refuses_another_configuration(tmp_path):
    config = vit_config(tmp_path)
    work = tmp_path / "f.h5.work"
    work.mkdir()
    (work / "plan.json").write_text('{"config_sha256": "something else"}')
    code, _, err = run_cli("extract", config, "-o", tmp_path / "f.h5", "-q")
    assert code == 2 and "unfinished extraction" in err and "config_sha256" in err


def test_analyze_accepts_an_extracted_store(tmp_path):
    from distillscope import analyze

    config = vit_config(tmp_path, extra_model=f"""
        [[models]]
        name = "student"
        role = "student"
        factory = "{FACTORIES}:tiny_cnn"
        layers = ["embedding", "0"]
        """, data='source = "digits"\nlimit = 30')
    out = extract(config, output=tmp_path / "f.h5", progress=False, log=lambda *a: None,
                  allow_code=True)
    results = analyze(out, progress=False)
    assert set(results.model.values) == {"teacher", "student"}
    assert float(results["effective_rank"].sel(model="teacher", condition="clean",
                                               layer="embedding", estimator="erank_variance")) > 1


# ------------------------------------------------------------------------------ data sources
def write_cifar(root: Path, n_train: int = 6, n_test: int = 4) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        batch = {b"data": rng.integers(0, 256, (n_train, 3072), dtype=np.uint8),
                 b"labels": list(rng.integers(0, 10, n_train))}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
    test = {b"data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8),
            b"labels": list(range(n_test))}
    (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=2))


def test_cifar_from_a_local_folder(tmp_path):
    from distillscope_extract.config import DataSpec
    from distillscope_extract.data import load_data

    write_cifar(tmp_path / "data")
    data = load_data(DataSpec("cifar10", root=tmp_path / "data"))
    assert len(data) == 34 and data.pixels.shape == (34, 32, 32, 3)
    assert data.ids[-1] == 50003 and list(data.splits[-4:]) == ["test"] * 4
    assert list(data.labels[-4:]) == [0, 1, 2, 3]
    raw = pickle.loads((tmp_path / "data/cifar-10-batches-py/test_batch").read_bytes())
    np.testing.assert_array_equal(data.pixels[-4][..., 0], raw[b"data"][0, :1024].reshape(32, 32))


def test_cifar_pickles_cannot_run_code(tmp_path):
    from distillscope_extract.config import DataSpec
    from distillscope_extract.data import load_data

    write_cifar(tmp_path / "data")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "data/cifar-10-batches-py/test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        load_data(DataSpec("cifar10", root=tmp_path / "data"))


def test_missing_dataset_files_say_where_they_must_be(tmp_path):
    config = vit_config(tmp_path, data=f'source = "cifar10"\nroot = "{tmp_path / "nowhere"}"')
    code, _, err = run_cli("extract", config, "-q")
    assert code == 2 and "Traceback" not in err  # invalid input
    assert "cifar-10-batches-py/data_batch_1 not found" in err and "nothing is downloaded" in err


def test_imagefolder_of_real_photographs(tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    photos = {"cat": ["chelsea"], "coffee": ["coffee"], "person": ["astronaut"]}
    for split in ("train", "test"):
        for label, names in photos.items():
            (tmp_path / "imgs" / split / label).mkdir(parents=True)
            for name in names:
                Image.fromarray(getattr(skimage_data, name)()).save(
                    tmp_path / "imgs" / split / label / f"{name}.png")
    config = vit_config(tmp_path, data='source = "imagefolder"\nroot = "imgs"')
    out = extract(config, output=tmp_path / "f.h5", progress=False, log=lambda *a: None)
    with open_store(out) as st:
        assert st.n_samples == 6 and list(st.labels) == [0, 1, 2, 0, 1, 2]
        assert list(st.splits) == ["train"] * 3 + ["test"] * 3
        emb = st.read(st.layers("teacher", "clean")["embedding"])
        np.testing.assert_array_equal(emb[:3], emb[3:])  # same photographs in both splits


def test_numpy_arrays_as_a_dataset(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", images=rng.integers(0, 256, (10, 32, 48, 3), dtype=np.uint8),
             labels=np.arange(10), split=np.array(["train"] * 6 + ["test"] * 4),
             ids=np.arange(10) * 7)
    config = vit_config(tmp_path, data='source = "numpy"\nroot = "d.npz"\nsplits = ["test"]')
    plan = plan_extraction(config, output=tmp_path / "x.h5")
    assert list(plan.data.ids) == [42, 49, 56, 63]


# ------------------------------------------------------------------------------ models
def test_pretrained_weights_from_the_local_hub_cache(tmp_path, monkeypatch):
    """timm's pretrained = true is served from a Hugging Face cache folder, offline."""
    import huggingface_hub.constants as hf_constants
    from safetensors.torch import save_file

    torch.manual_seed(5)
    name = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    model = timm.create_model(name, pretrained=False)
    revision = "0" * 40
    repo = tmp_path / "hub" / "models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision).mkdir(parents=True)
    save_file(model.state_dict(), str(repo / "snapshots" / revision / "model.safetensors"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)

    from distillscope_extract.config import ModelSpec
    from distillscope_extract.models import build_model, state_sha256

    built = build_model(ModelSpec(name="t", role="teacher", timm=name, pretrained=True,
                                  layers=()), seed=0, where="test")
    assert built.weights["state_sha256"] == state_sha256(model)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ModelError, match="not in the local Hugging Face cache"):
        build_model(ModelSpec(name="t", role="teacher", timm=name, pretrained=True, layers=()),
                    seed=0, where="test")


@pytest.mark.parametrize("change, message", [
    ('timm = "vit_tiny_patch16_224"', None),
    ('timm = "vit_tinny_patch16_224"', "unknown timm model 'vit_tinny_patch16_224'; did you mean"),
    ("layers = [\"embedding\", \"blocks.7\"]", "no layer 'blocks.7' in vit_tiny_patch16_224; available: embedding, blocks.0, blocks.1"),
    ('factory = "FACTORY:not_a_module"', "returned int, not a torch.nn.Module"),
    ('factory = "FACTORY:nothing_here"', "has no function 'nothing_here'"),
])
def test_model_errors_are_one_line_without_traceback(tmp_path, change, message):
    config = vit_config(tmp_path)
    text = config.read_text()
    if change.startswith("timm"):
        text = text.replace('timm = "vit_tiny_patch16_224"', change)
    elif change.startswith("layers"):
        text = text.replace(text[text.index("layers = "):].splitlines()[0], change)
    else:
        text = (text.replace('timm = "vit_tiny_patch16_224"', change.replace("FACTORY", str(FACTORIES)))
                .replace(text[text.index("kwargs = "):].splitlines()[0], ""))
    config.write_text(text)
    code, _, err = run_cli("extract", config, "--dry-run", "-q", "--allow-code")
    if message is None:
        assert code == 0, err
        return
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert message in err


def test_a_factory_from_outside_runs_only_when_allowed(tmp_path):
    """A configuration is data: a factory file or another package's module is code, refused
    without --allow-code (the shipped students are trusted)."""
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.py"
    evil.write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('x')\n"
                    "def model():\n    import torch\n    return torch.nn.Identity()\n")

    def config_naming(target):
        return vit_config(tmp_path, extra_model=f"""
            [[models]]
            name = "student"
            role = "student"
            factory = "{target}"
            layers = ["embedding"]
            """)

    for target in (f"{evil}:model", "json:loads"):
        code, _, err = run_cli("extract", config_naming(target), "--dry-run", "-q")
        assert code == 2 and "runs code from outside distillscope" in err and "--allow-code" in err
        assert len(err.strip().splitlines()) == 1 and not marker.exists()
    code, _, err = run_cli("extract", config_naming(f"{evil}:model"), "--dry-run", "-q",
                           "--allow-code")
    assert code == 0, err
    assert marker.exists()


def test_checkpoint_that_does_not_fit(tmp_path):
    from safetensors.torch import save_file

    state = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=(32, 48),
                              patch_size=8, depth=3, num_classes=0).state_dict()
    save_file(state, str(tmp_path / "deeper.safetensors"))
    config = vit_config(tmp_path, weights="deeper.safetensors")
    code, _, err = run_cli("extract", config, "-q")
    assert code == 2 and "Traceback" not in err
    assert "do not fit the model" in err and "unexpected (first blocks.2." in err


def test_unwritable_output(tmp_path):
    config = vit_config(tmp_path)
    (tmp_path / "plain-file").write_text("not a folder")
    code, _, err = run_cli("extract", config, "-o", tmp_path / "plain-file" / "f.h5", "-q")
    assert code == 1 and "Traceback" not in err and "plain-file" in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_and_mixed_precision_match_the_cpu(tmp_path):
    config = vit_config(tmp_path, data='source = "digits"\nlimit = 64')
    stores = {}
    for label, options in {"cpu": {"device": "cpu"}, "cuda": {"device": "cuda"},
                           "amp": {"device": "cuda", "amp": True, "workers": 4}}.items():
        stores[label] = extract(config, output=tmp_path / f"{label}.h5", progress=False,
                                log=lambda *a: None, **options)
    with h5py.File(stores["cpu"]) as ref:
        for label, tol in (("cuda", 1e-3), ("amp", 2e-2)):  # cuDNN convolutions use TF32
            with h5py.File(stores[label]) as f:
                assert "cuda" in f.attrs["provenance"]
                for c in ("clean", "noise"):
                    for layer in ("embedding", "blocks.1"):
                        a = ref[f"models/teacher/{c}/{layer}"][:]
                        b = f[f"models/teacher/{c}/{layer}"][:]
                        rel = np.linalg.norm(a - b) / np.linalg.norm(a)
                        assert rel < tol, (label, c, layer, rel)


def test_the_embedded_default_config_runs_and_analyze_accepts_it(tmp_path):
    """The shipped default, reduced to 20 samples per split (the full run: 42 s on 2 cores)."""
    from distillscope import analyze

    path = Path(__file__).parents[1] / "extract" / "configs" / "default.toml"
    text = path.read_text().replace("[data]", "[data]\nlimit = 20", 1)
    text = text.replace('"../models/', f'"{path.parents[1] / "models"}/')  # the shipped weights
    config = write_config(tmp_path, text, name="default.toml")
    out = extract(config, output=tmp_path / "default.h5", progress=False, log=lambda *a: None)
    with open_store(out) as st:
        assert st.models["teacher"].role == "teacher" and len(st.models) == 12
        assert len(st.conditions) == 7
        assert st.layers("teacher", "clean")["blocks.3"].kind == "tokens"
        assert "blocks.3" not in st.layers("teacher", "gauss_0.1")  # clean only, as configured
    results = analyze(out, progress=False)
    ranks = results["effective_rank"].sel(layer="embedding", estimator="erank_variance")
    assert np.isfinite(ranks.values).all()


def test_imagefolder_per_class_takes_the_first_images_of_each_class(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("b", "a"):
        (tmp_path / "imgs" / "val" / label).mkdir(parents=True)
        for name in ("3.png", "1.png", "2.png"):
            Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(
                tmp_path / "imgs" / "val" / label / name)
    config = vit_config(tmp_path, data='source = "imagefolder"\nroot = "imgs"\n'
                                       'splits = ["val"]\nper_class = 2')
    plan = plan_extraction(config, output=tmp_path / "x.h5")
    names = [str(p.relative_to(tmp_path / "imgs")) for p in plan.data.files]
    assert names == ["val/a/1.png", "val/a/2.png", "val/b/1.png", "val/b/2.png"]
    bad = vit_config(tmp_path, data='source = "digits"\nper_class = 1')
    code, _, err = run_cli("extract", bad, "--dry-run", "-q")
    assert code == 2 and "per_class" in err and "imagefolder option" in err
