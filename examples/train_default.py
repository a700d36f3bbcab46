"""Train the embedded default: a small ViT teacher and CNN students distilled from it, on CPU.

    python examples/train_default.py [--out extract/models] [--epochs-teacher 40] [--epochs-student 30]

Data: scikit-learn's digits, upscaled to 32 x 32 RGB, with the fixed split of
``distillscope_extract.data`` (1348 train, 449 test), CLIP's normalisation (as the default
extraction config).

Teacher: timm ``vit_tiny_patch16_224`` at 32 x 32, patch 8, depth 4 (192-d). A supervised
10-class teacher collapses to about 9 dimensions (measured: erank 8.6 for cross-entropy alone),
so the teacher learns three things at once, on augmented images (small random rotation, scale
and shift; Gaussian noise sigma 0.1 in normalized space):

* ``0.3 x`` cross-entropy on the digit classes (a useful embedding),
* the whitened coordinates of the top 64 principal components of the (noise-free) augmented
  image, regressed by a linear head (the embedding must carry the image's many directions of
  variation, not only its class),
* VICReg's variance and covariance terms on the batch of embeddings, weight 2.5 (Bardes et al.,
  arXiv 2105.04906): unit spread per dimension, no correlation between dimensions.

Students: the arXiv 2603.06698 CNN (``distillscope_extract.students.paper_cnn``) at widths 1, 2
and 4, seeds 0, 1 and 2, distilled with the cosine loss ``1 - cos(s(x), t(x))`` on the clean
training images; the paper's controls: the widest student with crop-and-flip augmentation, and
one with cosine plus an InfoNCE term (tau 0.1, the v2 "contrastive expansion").

Everything is seeded and runs single-process on the CPU; weights are saved as float16
safetensors with a manifest (``models.json``: sha256, sizes, and the numbers measured here).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from distillscope_extract.data import digits_images, digits_split
from distillscope_extract.preprocess import CLIP_MEAN, CLIP_STD
from distillscope_extract.students import paper_cnn

TEACHER = {"name": "vit_tiny_patch16_224", "kwargs": {"img_size": 32, "patch_size": 8, "depth": 4,
                                                      "num_classes": 0}}
EMBED = 192
WIDTHS = {"S": 1, "M": 2, "L": 4}
SEEDS = (0, 1, 2)
BATCH = 128


def data() -> dict[str, torch.Tensor]:
    images, labels = digits_images()
    split = digits_split(len(images))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    x = (x - mean) / std
    train, test = split == "train", split == "test"
    return {"x_train": x[train], "y_train": torch.from_numpy(labels[train]),
            "x_test": x[test], "y_test": torch.from_numpy(labels[test]),
            "background": ((0 - mean) / std)}


def affine(x: torch.Tensor, background: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random rotation (+-0.25 rad), scale (+-15%) and shift (+-12.5%), background filled."""
    k = x.shape[0]
    angle = (torch.rand(k, generator=g) - 0.5) * 0.5
    scale = 1 + (torch.rand(k, generator=g) - 0.5) * 0.3
    theta = torch.zeros(k, 2, 3)
    theta[:, 0, 0] = torch.cos(angle) / scale
    theta[:, 0, 1] = -torch.sin(angle) / scale
    theta[:, 1, 0] = torch.sin(angle) / scale
    theta[:, 1, 1] = torch.cos(angle) / scale
    theta[:, :, 2] = (torch.rand(k, 2, generator=g) - 0.5) * 0.25
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    bg = background.expand_as(x)
    return F.grid_sample(x - bg, grid, align_corners=False) + bg


def embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i:i + 256]) for i in range(0, len(x), 256)])


def train_teacher(d: dict, epochs: int, log) -> nn.Module:
    import timm

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = d["x_train"], d["y_train"]
    # whitening of the augmented images' principal components (one channel: grey images)
    sample = torch.cat([affine(x, d["background"], g) for _ in range(4)])[:, 0].reshape(4 * len(x), -1)
    mean = sample.double().mean(0)
    _, s, vt = torch.linalg.svd(sample.double() - mean, full_matrices=False)
    whiten = (vt[:64].T / (s[:64] / (len(sample) - 1) ** 0.5)).float()
    mean = mean.float()
    model = timm.create_model(TEACHER["name"], pretrained=False, **TEACHER["kwargs"])
    classes, pcs = nn.Linear(EMBED, 10), nn.Linear(EMBED, 64)
    params = [*model.parameters(), *classes.parameters(), *pcs.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
    steps = epochs * -(-len(x) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.1)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), BATCH):
            idx = order[i:i + BATCH]
            clean = affine(x[idx], d["background"], g)
            z = model(clean + 0.1 * torch.randn(clean.shape, generator=g))
            target = (clean[:, 0].reshape(len(idx), -1) - mean) @ whiten
            zc = z - z.mean(0)
            cov = zc.T @ zc / (len(idx) - 1)
            off = cov - torch.diag(torch.diag(cov))
            vicreg = F.relu(1 - torch.sqrt(zc.var(0) + 1e-4)).mean() + (off**2).sum() / EMBED
            loss = (0.3 * F.cross_entropy(classes(z), y[idx]) + F.mse_loss(pcs(z), target)
                    + 2.5 * vicreg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if (epoch + 1) % 10 == 0:
            log(f"teacher epoch {epoch + 1}/{epochs}: loss {float(loss.detach()):.3f}")
    return model.eval()


def info_nce(s: torch.Tensor, t: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    logits = F.normalize(s, dim=1) @ F.normalize(t, dim=1).T / tau
    return F.cross_entropy(logits, torch.arange(len(s)))


def crop_flip(x: torch.Tensor, background: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random 32 x 32 crop of the image padded by 4 (background), and a horizontal flip."""
    k = x.shape[0]
    padded = F.pad(x - background, (4, 4, 4, 4)) + background
    out = torch.empty_like(x)
    offsets = torch.randint(0, 9, (k, 2), generator=g)
    flips = torch.rand(k, generator=g) < 0.5
    for i in range(k):
        r, c = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[i, :, r:r + 32, c:c + 32]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out


def train_student(d: dict, targets: torch.Tensor, width: int, seed: int, epochs: int, *,
                  augment: bool = False, infonce: float = 0.0, teacher: nn.Module | None = None
                  ) -> nn.Module:
    torch.manual_seed(1000 + seed)
    g = torch.Generator().manual_seed(2000 + seed)
    model = paper_cnn(width=width, embed_dim=EMBED)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x = d["x_train"]
    steps = epochs * -(-len(x) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), BATCH):
            idx = order[i:i + BATCH]
            if augment:  # the teacher sees the same augmented image
                xb = crop_flip(x[idx], d["background"], g)
                with torch.no_grad():
                    tb = teacher(xb)
            else:
                xb, tb = x[idx], targets[idx]
            s = model(xb)
            loss = (1 - F.cosine_similarity(s, tb, dim=1)).mean()
            if infonce:
                loss = loss + infonce * info_nce(s, tb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def measure(model: nn.Module, d: dict) -> dict:
    """Effective rank (arXiv 2603.06698 convention) and linear-probe accuracy on the test split."""
    import distillscope as ds
    from distillscope.metrics.robustness import probe_accuracy

    train = embed(model, d["x_train"]).numpy()
    test = embed(model, d["x_test"]).numpy()
    acc, _ = probe_accuracy(train, d["y_train"].numpy(), {"test": (test, d["y_test"].numpy())})
    return {"erank_test": round(float(ds.effective_rank(test, "erank_variance", l2_normalize=True)), 3),
            "probe_accuracy_test": round(acc["test"], 4)}


def save(model: nn.Module, path: Path) -> str:
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "extract" / "models")
    p.add_argument("--epochs-teacher", type=int, default=40)
    p.add_argument("--epochs-student", type=int, default=30)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] {msg}", flush=True)

    d = data()
    manifest = {"data": "sklearn digits, 32x32 RGB, distillscope_extract.data split",
                "teacher": TEACHER, "embed_dim": EMBED, "models": {}}
    teacher = train_teacher(d, args.epochs_teacher, log)
    # the shipped weights are float16: measure the model as shipped
    teacher.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                             for k, v in teacher.state_dict().items()})
    runs = [("teacher", teacher, {"role": "teacher"})]
    log(f"teacher: {measure(teacher, d)}")
    targets = embed(teacher, d["x_train"])
    students = [(f"student_{f}_seed{s}", dict(width=w, seed=s), {"family": f, "seed": s, "width": w})
                for f, w in WIDTHS.items() for s in SEEDS]
    students += [("student_L_aug", dict(width=4, seed=0, augment=True), {"family": "L_aug", "seed": 0, "width": 4}),
                 ("student_L_infonce", dict(width=4, seed=0, infonce=1.0), {"family": "L_infonce", "seed": 0, "width": 4})]
    for name, kwargs, meta in students:
        model = train_student(d, targets, epochs=args.epochs_student, teacher=teacher, **kwargs)
        model.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                               for k, v in model.state_dict().items()})
        runs.append((name, model, {"role": "student", **meta}))
        log(f"{name}: {measure(model, d)}")
    for name, model, meta in runs:
        sha = save(model, args.out / f"{name}.safetensors")
        manifest["models"][name] = {**meta, "file": f"{name}.safetensors", "sha256": sha,
                                    "n_params": sum(p.numel() for p in model.parameters()),
                                    **measure(model, d)}
    manifest["training_seconds"] = round(time.perf_counter() - start, 1)
    manifest["torch_version"] = torch.__version__
    (args.out / "models.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(f.stat().st_size for f in args.out.glob("*.safetensors"))
    log(f"wrote {len(runs)} models to {args.out} ({total / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
