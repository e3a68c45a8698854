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
        self._shift_ints = [int(x) for x in self._shift]
        self._v_ints = [[int(x) for x in self._v[:, j]] for j in range(MAXBIT)]
        self._position = 0  # the next point's index

    def points(self, start: int, n: int) -> np.ndarray:
        """Points start .. start + n - 1 of the sequence (n x d, in [0, 1)). Point k is the shift XOR
        the scrambled direction numbers of the bits set in k's Gray code; each next point XORs in
        v[lowest set bit of k] (Gray-code order), accumulated over the block in one call."""
        gray = start ^ (start >> 1)
        first = list(self._shift_ints)  # Python ints: one ask's point costs a few microseconds
        for j in range(gray.bit_length()):
            if gray >> j & 1:
                first = [a ^ b for a, b in zip(first, self._v_ints[j], strict=True)]
        if n == 1:
            return np.array([first], dtype=np.float64) / 2.0**MAXBIT
        k = np.arange(start + 1, start + n, dtype=np.int64)
        low = np.rint(np.log2(k & -k)).astype(np.int64)  # k & -k is a power of two
        steps = np.vstack([np.array([first], dtype=np.int64), self._v[:, low].T])
        return np.bitwise_xor.accumulate(steps, axis=0) / 2.0**MAXBIT

    def random(self, n: int) -> np.ndarray:
        u = self.points(self._position, n)
        self._position += n
        return u

    def fast_forward(self, n: int) -> None:
        self._position += n
