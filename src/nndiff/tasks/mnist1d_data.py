"""MNIST-1D signals (Greydanus 2020) generated the same, bit for bit, on every install.

The procedure is the dataset's: ten 12-point digit templates, each padded with 36-60 zeros,
stretched to 72 points, scaled by up to ±20%, shifted circularly by up to 47 points, its background
filled with Gaussian-smoothed noise (sigma 2), iid noise added, sheared, and subsampled to 40 points;
the whole set is then standardized. Generating it here instead of with the `mnist1d` package keeps
the data independent of numpy's and scipy's versions: random numbers come from numpy's legacy
`RandomState`, whose streams are frozen, and every other step is plain IEEE arithmetic in a fixed
order (no library interpolation, convolution or reduction whose rounding could change), so
`FINGERPRINT` below holds everywhere; the loader checks it.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

# the digit templates (values from the dataset's definition), before whitening
TEMPLATES = (
    (5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5),
    (5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5),
    (5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5),
    (5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5),
    (5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5),
    (5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5),
    (5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5),
    (5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5),
    (5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5),
    (5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5),
)
TEMPLATE_LEN, PAD = 12, (36, 60)
STRETCHED = TEMPLATE_LEN + PAD[1]  # 72 points before subsampling
LENGTH = 40
SCALE, SHIFT, CORR_NOISE, IID_NOISE, SHEAR, SMOOTHING = 0.4, 48, 0.25, 0.02, 0.75, 2.0
# SHA-256 of the float32 signals and int64 labels of generate(35_000, 42), the built-in tasks' data
FINGERPRINT = "15140791b3f3ed092a195f53558cc0cc5d1756f0821b1f01d1b12dd8b02939de"


def _fsum_mean(values: np.ndarray) -> float:
    return math.fsum(values.ravel().tolist()) / values.size  # correctly rounded: no summation order


def templates() -> np.ndarray:
    """[10, 12]: each template whitened, starting at 0, at a sixth of unit scale."""
    out = []
    for t in TEMPLATES:
        mean = math.fsum(t) / len(t)
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in t) / len(t))
        row = [(v - mean) / std for v in t]
        out.append([(v - row[0]) / 6.0 for v in row])
    return np.asarray(out, dtype=np.float64)


def _resample(rows: np.ndarray, lengths: np.ndarray, points: int) -> np.ndarray:
    """Linear interpolation of each row's first lengths[i] values onto `points` evenly spaced points."""
    j = np.arange(points, dtype=np.float64)
    pos = j[None, :] / (points - 1) * (lengths[:, None] - 1).astype(np.float64)
    left = np.minimum(np.floor(pos).astype(np.int64), rows.shape[1] - 2)
    w = pos - left
    take = np.take_along_axis
    return take(rows, left, 1) * (1.0 - w) + take(rows, left + 1, 1) * w


def _smooth(noise: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along the last axis (reflected edges), taps summed in a fixed order."""
    radius = int(4 * sigma + 0.5)
    weights = [math.exp(-0.5 * (i / sigma) ** 2) for i in range(-radius, radius + 1)]
    total = math.fsum(weights)
    padded = np.concatenate([noise[:, radius - 1 :: -1], noise, noise[:, : -radius - 1 : -1]], axis=1)
    out = np.zeros_like(noise)
    n = noise.shape[1]
    for i, w in enumerate(weights):
        out += (w / total) * padded[:, i : i + n]
    return out


def generate(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n signals [n, 40] (float32, standardized) and labels [n] (int64, balanced), from `seed`."""
    rs = np.random.RandomState(seed)
    labels = np.arange(n, dtype=np.int64) % 10
    pads = rs.randint(PAD[0], PAD[1] + 1, size=n)
    scales = 1.0 + SCALE * (rs.rand(n) - 0.5)
    shifts = rs.randint(0, SHIFT, size=n)
    corr = CORR_NOISE * _smooth(rs.randn(n, STRETCHED), SMOOTHING)
    iid = IID_NOISE * rs.randn(n, STRETCHED)
    shears = SHEAR * (rs.rand(n) - 0.5)
    order = rs.permutation(n)

    padded = np.zeros((n, STRETCHED + 1))  # one more zero so interpolation may read past the end
    padded[:, :TEMPLATE_LEN] = templates()[labels]
    lengths = TEMPLATE_LEN + pads
    x = _resample(padded, lengths, STRETCHED) * scales[:, None]
    # where the stretched template lies (in its own coordinates, before the last template point)
    j = np.arange(STRETCHED, dtype=np.float64)
    inside = j[None, :] / (STRETCHED - 1) * (lengths[:, None] - 1) < TEMPLATE_LEN - 1
    cols = (np.arange(STRETCHED)[None, :] - shifts[:, None]) % STRETCHED  # circular shift
    x, inside = np.take_along_axis(x, cols, 1), np.take_along_axis(inside, cols, 1)
    x = np.where(inside, x, corr) + iid
    x = x - shears[:, None] * (j[None, :] / (STRETCHED - 1) - 0.5)
    x = _resample(np.concatenate([x, x[:, -1:]], axis=1), np.full(n, STRETCHED), LENGTH)
    x, labels = x[order], labels[order]
    mean = _fsum_mean(x)
    std = math.sqrt(_fsum_mean((x - mean) ** 2))
    return ((x - mean) / std).astype(np.float32), labels


def fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return digest.hexdigest()
