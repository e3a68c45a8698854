"""Scrambled Sobol points that equal PyTorch's ``SobolEngine(d, scramble=True, seed=s)``, in numpy.

Owns the quasi-random sequence of `SobolGenerator` phases. AEPsych's and Ax's Sobol generators
draw from torch's engine, so with this sequence a config's ``seed`` gives the same initial trials
in psyserve as in AEPsych. The strategy layer is torch-free (DESIGN.md), hence the port: the same
construction as torch's (Joe-Kuo direction numbers, 30 bits, a random linear matrix scramble and
digital shift drawn from a Mersenne Twister seeded with ``seed``, Gray-code order, the shift as the
first point), written from torch's documented behaviour and checked against torch itself in
tests/test_quasirandom.py. Values are exact multiples of 2^-30; torch rounds some through float32,
so the two agree to about 3e-8. Knows nothing of configs, strategies or parameter spaces.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import qmc

MAXBIT = 30  # bits per coordinate, as torch's engine
_MT_N = 624  # the Mersenne Twister's state length


def _direction_numbers(d: int) -> np.ndarray:
    """The unscrambled engine's direction numbers v[dim, j] << (MAXBIT - 1 - j): SciPy's, from the
    same Joe-Kuo table as torch's (SciPy keeps them as ``_sv``; checked here and against torch in
    the tests, because the attribute is SciPy's own)."""
    v = np.asarray(getattr(qmc.Sobol(d, scramble=False, bits=MAXBIT), "_sv", None), dtype=np.int64)
    if v.shape != (d, MAXBIT) or not (v[:, 0] == 1 << (MAXBIT - 1)).all():
        raise RuntimeError("this SciPy's Sobol engine keeps its direction numbers differently; psyserve.quasirandom needs updating")
    return v


def _mt19937_bits(seed: int, n: int) -> np.ndarray:
    """n outputs of the 32-bit Mersenne Twister seeded by the reference ``init_genrand(seed)``
    (torch's ``Generator.manual_seed``), each reduced mod 2 as ``torch.randint(2, ...)`` does."""
    key = np.empty(_MT_N, dtype=np.uint64)
    key[0] = seed & 0xFFFFFFFF
    for i in range(1, _MT_N):
        prev = int(key[i - 1])
        key[i] = (1812433253 * (prev ^ (prev >> 30)) + i) & 0xFFFFFFFF
    generator = np.random.MT19937()
    generator.state = {"bit_generator": "MT19937", "state": {"key": key.astype(np.uint32), "pos": _MT_N}}
    return (generator.random_raw(n) % 2).astype(np.int64)


def _parity(x: np.ndarray) -> np.ndarray:
    for s in (32, 16, 8, 4, 2, 1):
        x = x ^ (x >> s)
    return x & 1


class TorchSobol:
    """Draws in order like `scipy.stats.qmc.Sobol` (``random``, ``fast_forward``), with torch's points."""

    def __init__(self, d: int, seed: int) -> None:
        if d < 1:
            raise ValueError("a Sobol sequence needs at least one dimension")
        bits = _mt19937_bits(int(seed), d * MAXBIT + d * MAXBIT * MAXBIT)
        # the digital shift: bit j of dimension i at 2^j
        self._shift = (bits[: d * MAXBIT].reshape(d, MAXBIT) << np.arange(MAXBIT)).sum(axis=1)
        # the scramble: a random lower-triangular binary matrix per dimension, unit diagonal; row p
        # as an integer with column k at bit MAXBIT-1-k; scrambled v[j] has bit MAXBIT-1-p = <row p, v[j]> mod 2
        ltm = np.tril(bits[d * MAXBIT :].reshape(d, MAXBIT, MAXBIT))
        idx = np.arange(MAXBIT)
        ltm[:, idx, idx] = 1
        rows = (ltm << (MAXBIT - 1 - idx)).sum(axis=2)
        v = _direction_numbers(d)
        self._v = (_parity(rows[:, None, :] & v[:, :, None]) << (MAXBIT - 1 - idx)).sum(axis=2)
        self._position = 0
        self._quasi = self._shift.copy()  # the next point, as integers

    def _point(self, k: int) -> np.ndarray:
        return np.rint(self.points(k, 1)[0] * 2.0**MAXBIT).astype(np.int64)

    def points(self, start: int, n: int) -> np.ndarray:
        """Points start .. start + n - 1 of the sequence (n x d, in [0, 1)): point k is the shift
        XOR the scrambled direction numbers of the bits set in k's Gray code."""
        k = np.arange(start, start + n, dtype=np.int64)
        gray = k ^ (k >> 1)
        mask = (gray[:, None] >> np.arange(MAXBIT)) & 1  # n x MAXBIT
        out = np.repeat(self._shift[None, :], n, axis=0)
        for j in range(MAXBIT):
            out ^= mask[:, j : j + 1] * self._v[:, j][None, :]
        return out / 2.0**MAXBIT

    def random(self, n: int) -> np.ndarray:
        """The next n points (Gray-code steps from the last one: one XOR per point)."""
        out = np.empty((n, len(self._shift)), dtype=np.int64)
        quasi = self._quasi
        for i in range(n):
            out[i] = quasi
            k = self._position + i + 1  # point k = point k - 1 XOR v[lowest set bit of k]
            quasi = quasi ^ self._v[:, (k & -k).bit_length() - 1]
        self._quasi = quasi
        self._position += n
        return out / 2.0**MAXBIT

    def fast_forward(self, n: int) -> None:
        self._position += n
        self._quasi = self._point(self._position)
