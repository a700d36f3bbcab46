"""Cross-validated linear predictivity of the teacher from the student, and the retention
spectrum over the teacher's principal directions: the array layer, from the ``PairMoments`` of
contiguous folds of the samples. Definitions: ``docs/metrics.md`` section 2."""

from __future__ import annotations

import numpy as np

from .._errors import InputError
from .linalg import along, eigh_desc
from .registry import REQUESTED, TEACHER_STUDENT, Metric, register

__all__ = ["ridge_retention", "CrossValidation", "N_FOLDS", "RIDGE"]

#: contiguous cross-validation folds of the sample order, and the ridge penalty (x tr(Syy)/d2)
N_FOLDS = 5
RIDGE = 1e-3


def ridge_retention(folds, *, ridge: float = 1e-3) -> tuple[float, np.ndarray]:
    r"""Cross-validated linear predictivity of the teacher from the student, and its spectrum.

    For each fold f, ridge regression of the teacher on the student is fitted on the other folds
    (centred at their means; penalty ``ridge * tr(S_yy) / d2``) and scored on f. With the
    held-out residual scatter ``R`` and the held-out teacher scatter ``S_tt`` (about the fold's
    own mean), pooled over folds:

    * ``linear_predictivity`` :math:`= 1 - \mathrm{tr}\,R / \mathrm{tr}\,S_{tt}` (R^2 pooled over
      teacher dimensions);
    * the **retention spectrum** :math:`r_j = 1 - v_j^\top R v_j / v_j^\top S_{tt} v_j`, for each
      teacher principal direction ``v_j`` of the whole data: the fraction of the teacher's
      variance along ``v_j`` that the student preserves, linearly recoverable on held-out data.

    Parameters
    ----------
    folds : sequence of PairMoments
        One accumulator per fold (the same shift is not required).
    ridge : float

    Returns
    -------
    (float, ndarray of shape (d1,))
    """
    folds = list(folds)
    if len(folds) < 2:
        raise InputError(f"cross-validation needs at least 2 folds; got {len(folds)}")
    d2 = folds[0].d2
    xs = [f.x.centered() for f in folds]
    ys = [f.y.centered() for f in folds]
    n_f = np.array([s[0] for s in xs], dtype=np.float64)
    n_all = n_f.sum()
    mx_all = sum(n * s[1] for n, s in zip(n_f, xs)) / n_all
    my_all = sum(n * s[1] for n, s in zip(n_f, ys)) / n_all
    dx = [s[1] - mx_all for s in xs]
    dy = [s[1] - my_all for s in ys]
    teacher = _teacher_folds(folds, xs, n_f, dx)  # shared by every student: computed once
    v = teacher["directions"]
    # Only diag(V^T R V) is needed (V square orthonormal: its sum is tr R), so every product
    # is taken along the teacher's directions: the folds' cross scatters rotated once,
    # P_i = S_yx,i V (d2 x d1), and the regression solved for W V, never for W.
    rotated = [f.blocks()[2].T @ v for f in folds]
    vdx = [d @ v for d in dx]
    syy_about = [s[2] + n * np.outer(d, d) for n, s, d in zip(n_f, ys, dy)]
    syx_about = [p + n * np.outer(d, e) for n, p, d, e in zip(n_f, rotated, dy, vdx)]
    syy_all, syx_all = sum(syy_about), sum(syx_about)
    residual = teacher["held_out_about_train_along"].copy()
    for i in range(len(folds)):
        # the other folds' scatter about their own mean, by the parallel-axis theorem
        n_r = n_all - n_f[i]
        vex = teacher["train_mean_offset"][i] @ v  # the training mean's offset, along V
        ey = (n_all * my_all - n_f[i] * ys[i][1]) / n_r - my_all
        syy = syy_all - syy_about[i] - n_r * np.outer(ey, ey)
        syt = syx_all - syx_about[i]  # S_yt V
        syt -= np.outer(n_r * ey, vex)
        penalty = ridge * np.trace(syy) / d2
        if not penalty > 0:  # a constant student predicts nothing beyond the mean
            continue
        # numpy's solve: scipy's LAPACK would contend with numpy's threads
        syy.flat[:: d2 + 1] += penalty
        b = np.linalg.solve(syy, syt)  # W V, (d2, d1)
        delta_x, delta_y = vdx[i] - vex, dy[i] - ey  # the fold's mean minus the training's
        b_dy = delta_y @ b
        # diag(V^T S_ty W V) and diag((W V)^T S_yy (W V)) over the held-out fold, S_ty and
        # S_yy about the training means
        cross = np.einsum("ij,ij->j", rotated[i], b) + n_f[i] * delta_x * b_dy
        quadratic = np.einsum("ij,ij->j", b, ys[i][2] @ b) + n_f[i] * b_dy * b_dy
        residual += quadratic - 2.0 * cross
    total = np.trace(teacher["held_out"])
    predictivity = 1.0 - residual.sum() / total if total > 0 else float("nan")
    along_tt = teacher["held_out_along"]
    with np.errstate(invalid="ignore", divide="ignore"):
        spectrum = np.where(along_tt > 0, 1.0 - residual / along_tt, np.nan)
    return float(predictivity), spectrum


def _teacher_folds(folds, xs, n_f, dx) -> dict:
    """The teacher's part of the cross-validation, shared by every student it is compared
    with (cached on the teacher's first fold): its principal directions over all folds, each
    fold's training-mean offset, and the held-out scatters summed over the folds, along the
    directions."""
    def compute():
        n_all = n_f.sum()
        pooled = sum(s[2] + n * np.outer(d, d) for n, s, d in zip(n_f, xs, dx))
        offsets, about_train = [], 0.0
        for i, (n, s, d) in enumerate(zip(n_f, xs, dx)):
            offset = -n * d / (n_all - n)  # the other folds' mean minus the overall mean
            offsets.append(offset)
            delta = d - offset
            about_train = about_train + s[2] + n * np.outer(delta, delta)
        directions = eigh_desc(pooled)[1]
        held_out = sum(s[2] for s in xs)
        return {"directions": directions, "train_mean_offset": offsets,
                "held_out_about_train_along": along(directions, about_train),
                "held_out": held_out, "held_out_along": along(directions, held_out)}

    return folds[0].x.cached(("teacher folds", tuple(id(f.x) for f in folds)), compute)


class CrossValidation(tuple):
    """The ``PairMoments`` of contiguous folds of the samples, with the ridge fit done once."""

    def fit(self, ridge: float = RIDGE) -> tuple[float, np.ndarray]:
        """``ridge_retention(self, ridge=ridge)``, cached; refused below 2 samples a fold."""
        cache = self.__dict__.setdefault("_fits", {})
        if ridge not in cache:
            n = sum(f.count for f in self)
            if n < 2 * len(self):
                raise InputError(f"cross-validation over {len(self)} folds needs at least "
                                 f"{2 * len(self)} samples; got {n}")
            cache[ridge] = ridge_retention(self, ridge=ridge)
        return cache[ridge]


register(Metric(
    name="linear_predictivity", long_name="cross-validated linear predictivity", units="1",
    interval=REQUESTED,
    takes=TEACHER_STUDENT, statistic="folds", anchor="cross-validated-linear-predictivity",
    compute=lambda folds, ridge: folds.fit(ridge)[0], function=ridge_retention,
    params={"ridge": RIDGE}, tables={"alignment": "CV R^2"},
    definition=f"{N_FOLDS}-fold ridge R^2 of the teacher from the student, pooled over teacher "
               f"dimensions (penalty {RIDGE} tr(Syy)/d2)"))
register(Metric(
    name="retention", long_name="teacher variance retained per teacher principal direction",
    units="1", interval=REQUESTED, takes=TEACHER_STUDENT, statistic="folds", dims=("component",),
    anchor="cross-validated-linear-predictivity", compute=lambda folds, ridge: folds.fit(ridge)[1],
    params={"ridge": RIDGE},
    definition=f"1 - v_j^T R v_j / v_j^T S_tt v_j, R the held-out residual scatter of "
               f"{N_FOLDS}-fold ridge regression of the teacher on the student; docs/metrics.md"))
