"""Slow, obvious references for the alignment metrics: n x n Gram matrices, explicit SVDs,
full similarity matrices and Python loops, following the papers' formulas line by line."""

from __future__ import annotations

import math

import numpy as np


def centre(z):
    z = np.asarray(z, dtype=np.float64)
    return z - z.mean(axis=0)


def _centre_gram(k):
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return h @ k @ h


def linear_cka(x, y):
    k, l_ = _centre_gram(x @ x.T), _centre_gram(y @ y.T)
    return np.sum(k * l_) / math.sqrt(np.sum(k * k) * np.sum(l_ * l_))


def _hsic_unbiased(k, l_):
    """Song et al. (2012) eq. 5, literally."""
    n = k.shape[0]
    k = k.copy(); l_ = l_.copy()
    np.fill_diagonal(k, 0); np.fill_diagonal(l_, 0)
    one = np.ones(n)
    return (np.trace(k @ l_) + (one @ k @ one) * (one @ l_ @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ k @ l_ @ one) / (n * (n - 3))


def linear_cka_debiased(x, y):
    x = np.asarray(x, float); y = np.asarray(y, float)
    k, l_ = x @ x.T, y @ y.T
    return _hsic_unbiased(k, l_) / math.sqrt(_hsic_unbiased(k, k) * _hsic_unbiased(l_, l_))


def cca(x, y, center=True):
    if center:
        x, y = centre(x), centre(y)
    qx, _ = np.linalg.qr(x)
    qy, _ = np.linalg.qr(y)
    return np.linalg.svd(qx.T @ qy, compute_uv=False)


def svcca(x, y, variance=0.99):
    def reduce(z):
        u, s, _ = np.linalg.svd(centre(z), full_matrices=False)
        k = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), variance - 1e-12) + 1)
        return u[:, :k] * s[:k]
    return cca(reduce(x), reduce(y)).mean()


def pwcca(x, y):
    x, y = centre(x), centre(y)
    if np.linalg.matrix_rank(y) < np.linalg.matrix_rank(x):
        x, y = y, x
    qx, rx = np.linalg.qr(x)
    qy, _ = np.linalg.qr(y)
    u, rho, _ = np.linalg.svd(qx.T @ qy)
    h = qx @ u[:, : rho.size]  # unit-norm canonical variates of x, n x r
    a = np.abs(h.T @ x).sum(axis=1)
    return float(a @ rho / a.sum())


def principal_angles_sample(x, y, k):
    ux = np.linalg.svd(centre(x), full_matrices=False)[0][:, :k]
    uy = np.linalg.svd(centre(y), full_matrices=False)[0][:, :k]
    return np.sort(np.arccos(np.clip(np.linalg.svd(ux.T @ uy, compute_uv=False), -1, 1)))


def procrustes_angular(x, y, alpha=1.0):
    def phi(z):
        zc = centre(z)
        c = zc.T @ zc / z.shape[0]
        lam, v = np.linalg.eigh(c)
        inv_sqrt = (v / np.sqrt(lam)) @ v.T
        return zc @ (alpha * np.eye(z.shape[1]) + (1 - alpha) * inv_sqrt)
    px, py = phi(x), phi(y)
    nuclear = np.linalg.svd(px.T @ py, compute_uv=False).sum()
    return math.acos(min(1.0, nuclear / (np.linalg.norm(px) * np.linalg.norm(py))))


def variance_captured(x, y):
    xc, yc = centre(x), centre(y)
    v = np.linalg.svd(xc, full_matrices=False)[2].T
    along = np.array([np.sum((yc @ v[:, j]) ** 2) for j in range(v.shape[1])])
    return np.cumsum(along) / np.sum(yc**2)


def mutual_knn(x, y, k):
    def neighbours(z):
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
        s = z @ z.T
        np.fill_diagonal(s, -np.inf)
        return [set(np.argsort(-row, kind="stable")[:k]) for row in s]
    nx, ny = neighbours(np.asarray(x, float)), neighbours(np.asarray(y, float))
    return np.mean([len(a & b) / k for a, b in zip(nx, ny)])


def infonce(s, t, tau, batch, reduction):
    losses, weights = [], []
    n = s.shape[0]
    for start in range(0, n, batch):
        sb = s[start:start + batch]; tb = t[start:start + batch]
        per = []
        for i in range(sb.shape[0]):
            logits = [float(sb[i] @ tb[j] / (np.linalg.norm(sb[i]) * np.linalg.norm(tb[j]))) / tau
                      for j in range(tb.shape[0])]
            per.append(-(logits[i] - math.log(sum(math.exp(v) for v in logits))))
        losses.append(np.mean(per))
        weights.append(len(per) if reduction == "sample" else 1)
    return float(np.average(losses, weights=weights))


def uniformity(z, t=2.0, include_diagonal=False):
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    values = [math.exp(-t * float(np.sum((z[i] - z[j]) ** 2)))
              for i in range(len(z)) for j in range(len(z)) if include_diagonal or i != j]
    return math.log(np.mean(values))


def ridge_cv(teacher, student, folds, ridge):
    """Explicit K-fold ridge of teacher on student (train-centred), pooled held-out R^2 and the
    per-teacher-direction retention."""
    n = teacher.shape[0]
    v = np.linalg.svd(centre(teacher), full_matrices=False)[2].T
    res_dirs = np.zeros(v.shape[1]); tot_dirs = np.zeros(v.shape[1])
    res = tot = 0.0
    for idx in folds:
        train = np.setdiff1d(np.arange(n), idx)
        mt, ms = teacher[train].mean(0), student[train].mean(0)
        ys, xt = student[train] - ms, teacher[train] - mt
        penalty = ridge * np.trace(ys.T @ ys) / student.shape[1]
        w = np.linalg.solve(ys.T @ ys + penalty * np.eye(student.shape[1]), ys.T @ xt)
        pred = (student[idx] - ms) @ w + mt
        err = teacher[idx] - pred
        dev = teacher[idx] - teacher[idx].mean(0)
        res += np.sum(err**2); tot += np.sum(dev**2)
        res_dirs += np.sum((err @ v) ** 2, axis=0); tot_dirs += np.sum((dev @ v) ** 2, axis=0)
    return 1 - res / tot, 1 - res_dirs / tot_dirs
