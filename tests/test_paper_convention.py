"""``--convention arxiv_2603_06698`` against a slow numpy re-implementation of the paper's
notebook (``asymmetric-distillation-phase-collapse.ipynb``, cells 4-11, as recorded in
``distillscope/papers/arxiv_2603_06698.toml``), on a store shaped like its experiment: a teacher
and students S / M / L x 3 seeds, labels, a train/test split, clean and three noise levels.

The notebook computes every spectrum, rank, dims for 90%, the singular-value rank, A(k), InfoNCE,
uniformity and the mean-cosine alignment on the test images only; probes fit on clean train embeddings and score the test images; spreads over
seeds are ``np.std`` (ddof 0); student ranks come from the seed-averaged singular values.
"""

from __future__ import annotations

import numpy as np
import pytest

import distillscope as ds

SIGMAS = (0.05, 0.1, 0.2)
SEEDS = (42, 123, 456)
FAMILIES = {"S": 2, "M": 4, "L": 6}  # latent dimensions of each family's students
D = 16
N = 331  # not a multiple of the 64-row batches, nor of the blocks


# ------------------------------------------------------------------- the notebook, in float64
def l2(z):
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def singular_values(z):
    """Cells 4, 8, 10: L2-normalise, centre, singular values."""
    zn = l2(np.asarray(z, np.float64))
    return np.linalg.svd(zn - zn.mean(axis=0), compute_uv=False)


def effective_rank(s):
    p = s**2 / np.sum(s**2)
    return float(np.exp(-np.sum(p * np.log(p + 1e-10))))


def dims_90(s):
    p = s**2 / np.sum(s**2)
    return int(np.argmax(np.cumsum(p) >= 0.90) + 1)


def batches(n, size=64):
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


def infonce(student, teacher, tau=0.1):
    """Cell 7: cross-entropy of student rows against teacher columns, per batch of 64, averaged
    over batches (the short last one included)."""
    losses = []
    for b in batches(len(student)):
        logits = l2(student[b]) @ l2(teacher[b]).T / tau
        logits -= logits.max(axis=1, keepdims=True)
        log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        losses.append(-np.mean(np.diag(log_softmax)))
    return float(np.mean(losses))


def uniformity(z, t=2.0):
    """Cell 7: log mean exp(-t ||z_i - z_j||^2) over every pair of a batch, i = j included."""
    values = []
    for b in batches(len(z)):
        u = l2(z[b])
        sq = ((u[:, None, :] - u[None, :, :]) ** 2).sum(axis=2)
        values.append(np.log(np.mean(np.exp(-t * sq))))
    return float(np.mean(values))


def singular_rank(s):
    """Cell 3, the older cell: entropy of the L1-normalised singular values."""
    p = s / np.sum(s)
    return float(np.exp(-np.sum(p * np.log(p + 1e-10))))


def cosine_alignment(student, teacher):
    """Cell 3: mean over batches of the mean cosine of each image's student and teacher rows."""
    return float(np.mean([np.mean(np.sum(l2(student[b]) * l2(teacher[b]), axis=1))
                          for b in batches(len(student))]))


def variance_captured(student, teacher, center=True):
    """Fig. 1: the share of the (centred, L2-normalised) student's variance along the
    teacher's top-k principal directions; cell 5 does not centre the student (``center``)."""
    t = l2(teacher)
    y = l2(student)
    if center:
        y = y - y.mean(axis=0)
    v = np.linalg.svd(t - t.mean(axis=0), full_matrices=False)[2]
    return np.cumsum(((y @ v.T) ** 2).sum(axis=0)) / np.sum(y**2)


def probe(train, labels_train, tests, labels_test):
    """Cells 10-11: LogisticRegression(lbfgs, C = 1, max_iter 2000) on L2-normalised clean
    train embeddings, accuracy on each condition's test embeddings."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=2000, solver="lbfgs", C=1.0)
    model.fit(l2(train), labels_train)
    return {c: float(np.mean(model.predict(l2(z)) == labels_test)) for c, z in tests.items()}


# --------------------------------------------------------------------------- the experiment
@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    rng = np.random.default_rng(2603)
    teacher = rng.standard_normal((N, D)) * np.geomspace(3, 0.1, D)
    labels = np.argmax(teacher[:, :4], axis=1)
    split = np.where(np.arange(N) % 3 == 1, "test", "train")
    features = {"teacher": teacher}
    for family, k in FAMILIES.items():
        for seed in SEEDS:
            mix = np.random.default_rng(seed + k).standard_normal((D, k))
            out = np.random.default_rng(seed).standard_normal((k, D))
            features[f"{family}_{seed}"] = (teacher @ mix @ out
                                            + 0.05 * rng.standard_normal((N, D)))
    noisy = {(name, sigma): z + sigma * 8 * np.random.default_rng(int(sigma * 100)).standard_normal(z.shape)
             for name, z in features.items() for sigma in SIGMAS}
    path = tmp_path_factory.mktemp("paper") / "paper.h5"
    with ds.StoreWriter(path, sample_ids=np.arange(N) + 10, labels=labels, splits=split) as w:
        w.add_condition("clean", kind="clean")
        for sigma in SIGMAS:
            w.add_condition(f"noise_{sigma}", kind="gaussian_noise", sigma=sigma,
                            space="normalized")
        w.add_model("teacher", role="teacher", architecture="vit", n_params=1000)
        for family in FAMILIES:
            for seed in SEEDS:
                w.add_model(f"{family}_{seed}", role="student", architecture="cnn",
                            n_params=100 * FAMILIES[family], family=family, seed=seed)
        for name, z in features.items():
            w.write_layer(name, "clean", "embedding", z.astype(np.float32))
            for sigma in SIGMAS:
                w.write_layer(name, f"noise_{sigma}", "embedding",
                              noisy[(name, sigma)].astype(np.float32))
    # what the notebook sees: the stored float32 values, in float64
    stored = {name: z.astype(np.float32).astype(np.float64) for name, z in features.items()}
    stored_noisy = {key: z.astype(np.float32).astype(np.float64) for key, z in noisy.items()}
    test = split == "test"
    return path, stored, stored_noisy, labels, test


@pytest.fixture(scope="module")
def results(experiment):
    path = experiment[0]
    return ds.analyze(path, convention="arxiv_2603_06698", rows=50,  # blocks cut the test rows
                      metrics="default,variance_captured_uncentred")


def _at(results, name, **where):
    return float(results[name].sel(**where))


def test_spectra_ranks_and_dims_are_the_notebooks_on_the_test_rows(experiment, results):
    _, stored, _, _, test = experiment
    assert results.attrs["analysed_samples"].startswith(f"the test split: {test.sum()} of {N}")
    for name, z in stored.items():
        s = singular_values(z[test])
        here = dict(model=name, condition="clean", layer="embedding")
        assert _at(results, "effective_rank", estimator="erank_variance", **here) == \
            pytest.approx(effective_rank(s), rel=1e-6, abs=1e-6)
        assert _at(results, "effective_rank", estimator="n_components_90", **here) == dims_90(s)
    for family in FAMILIES:  # the rank of the seed-averaged singular values
        mean_s = np.mean([singular_values(stored[f"{family}_{seed}"][test]) for seed in SEEDS],
                         axis=0)
        where = dict(family=family, condition="clean", layer="embedding")
        assert _at(results, "seed_averaged_rank", **where) == pytest.approx(
            effective_rank(mean_s), rel=1e-6)
        assert _at(results, "seed_averaged_dims", **where) == dims_90(mean_s)  # Table I's 19/20/20
        assert _at(results, "seed_averaged_singular_rank", **where) == pytest.approx(
            singular_rank(mean_s), rel=1e-6)


def test_infonce_uniformity_and_variance_captured_are_the_notebooks(experiment, results):
    _, stored, _, _, test = experiment
    teacher = stored["teacher"][test]
    for family in FAMILIES:
        for seed in SEEDS:
            name = f"{family}_{seed}"
            student = stored[name][test]
            pair = dict(student=name, condition="clean", teacher_layer="embedding",
                        student_layer="embedding")
            assert _at(results, "infonce_loss", **pair) == pytest.approx(
                infonce(student, teacher), rel=1e-6)
            curve = results["variance_captured"].sel(**pair).values
            np.testing.assert_allclose(curve[:D], variance_captured(student, teacher), rtol=1e-6)
            curve = results["variance_captured_uncentred"].sel(**pair).values
            np.testing.assert_allclose(curve[:D], variance_captured(student, teacher, False),
                                       rtol=1e-6)
            assert _at(results, "cosine_alignment", **pair) == pytest.approx(
                cosine_alignment(student, teacher), rel=1e-6)
            assert _at(results, "uniformity", model=name, condition="clean",
                       layer="embedding") == pytest.approx(uniformity(student), rel=1e-6)


def test_probes_are_exact_and_spreads_over_seeds_are_np_std(experiment, results):
    _, stored, noisy, labels, test = experiment
    train = ~test
    per_seed = {}
    for name, z in stored.items():
        tests = {"clean": z[test]} | {f"noise_{s}": noisy[(name, s)][test] for s in SIGMAS}
        expected = probe(z[train], labels[train], tests, labels[test])
        for condition, accuracy in expected.items():
            got = _at(results, "probe_accuracy", model=name, condition=condition,
                      layer="embedding")
            assert got == accuracy, (name, condition)  # exactly: the same probe, same rows
        per_seed[name] = expected
    for family in FAMILIES:
        for condition in ["clean"] + [f"noise_{s}" for s in SIGMAS]:
            values = [per_seed[f"{family}_{seed}"][condition] for seed in SEEDS]
            where = dict(family=family, condition=condition, layer="embedding")
            assert _at(results, "probe_accuracy_seed_mean", **where) == pytest.approx(
                np.mean(values), abs=1e-15)
            assert _at(results, "probe_accuracy_seed_std", **where) == pytest.approx(
                np.std(values), abs=1e-12)  # np.std: ddof 0


def test_the_block_size_does_not_change_a_number(experiment, results):
    other = ds.analyze(experiment[0], convention="arxiv_2603_06698",
                       metrics="default,variance_captured_uncentred")
    for name in ("effective_rank", "seed_averaged_rank", "infonce_loss", "uniformity",
                 "variance_captured", "linear_cka", "probe_accuracy", "feature_drift"):
        np.testing.assert_allclose(other[name].values, results[name].values, rtol=1e-9,
                                   equal_nan=True, err_msg=name)


def test_without_a_split_the_convention_says_it_uses_every_sample(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "plain.h5"
    with ds.StoreWriter(path, sample_ids=np.arange(40)) as w:
        w.add_condition("clean", kind="clean")
        w.add_model("teacher", role="teacher", architecture="a")
        w.write_layer("teacher", "clean", "embedding", rng.standard_normal((40, 5)))
    with pytest.warns(UserWarning, match="computes on the test split.*all 40 samples"):
        result = ds.analyze(path, convention="arxiv_2603_06698")
    assert result.attrs["analysed_samples"].startswith("all 40 samples")
