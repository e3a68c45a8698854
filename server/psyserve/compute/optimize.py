"""Acquisition optimisation: the numpy L-BFGS-B multistart for closed-form acquisitions, BoTorch's
optimize_acqf for the rest, and sequential greedy batches (generate_points).

Must not build models or acquisitions itself (the factory does) or know about jobs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from botorch.acquisition import AcquisitionFunction
from botorch.optim import optimize_acqf
from botorch.optim.batched_lbfgs_b import fmin_l_bfgs_b_batched
from botorch.optim.initializers import initialize_q_batch
from torch import Tensor

from psyserve.compute.acquisition import LatentAcquisition
from psyserve.compute.contract import (
    PAIRWISE,
    GeneratorSpec,
    canonical_acqf,
    opt_float,
    opt_int,
    opt_str,
)
from psyserve.compute.factory import build_acquisition
from psyserve.compute.models import FittedModel
from psyserve.compute.numerics import DTYPE, sobol_draw

#: L-BFGS relative-decrease tolerance for acquisition optimisation (scipy's default is 2.2e-9;
#: acquisition values are O(0.1 - 1) and points are not needed to 1e-9 of the range).
ACQF_FTOL = 1e-6


def _optimize(
    acqf: AcquisitionFunction,
    d: int,
    q: int,
    fixed: Mapping[int, float],
    restarts: int,
    raw_samples: int,
    maxiter: int,
    timeout: float | None,
    seed: int,
    init_batch_limit: int | None = None,
    ftol: float | None = None,
) -> Tensor:
    r"""Maximise ``acqf`` over ``[0, 1]^d`` with ``fixed`` dims held; returns ``q x d``."""
    if len(fixed) >= d:
        x = torch.tensor([fixed[i] for i in range(d)], dtype=DTYPE)
        return x.expand(q, d).clone()
    bounds = torch.stack([torch.zeros(d, dtype=DTYPE), torch.ones(d, dtype=DTYPE)])
    options: dict[str, Any] = {"maxiter": int(maxiter), "seed": int(seed) % (2**31), "batch_limit": int(restarts)}
    if init_batch_limit is not None:
        options["init_batch_limit"] = int(init_batch_limit)
    if ftol is not None:
        options["factr"] = float(ftol) / 2.220446049250313e-16  # scipy L-BFGS-B: ftol = factr * eps
    cand, _ = optimize_acqf(
        acq_function=acqf,
        bounds=bounds,
        q=q,
        num_restarts=int(restarts),
        raw_samples=int(raw_samples),
        options=options,
        fixed_features=dict(fixed) if fixed else None,
        timeout_sec=timeout,
        retry_on_optimization_warning=False,
    )
    cand = cand.detach().reshape(q, d).clamp(0.0, 1.0)
    for i, v in fixed.items():
        cand[:, i] = v
    return cand


def _optimize_moments(
    acqf: LatentAcquisition,
    d: int,
    fixed: Mapping[int, float],
    restarts: int,
    raw_samples: int,
    maxiter: int,
    timeout: float | None,
    seed: int,
    ftol: float,
) -> Tensor | None:
    r"""Maximise a single-point latent acquisition with numpy values and closed-form gradients.

    The same multi-start scheme as ``optimize_acqf`` (scrambled Sobol raw samples, BoTorch's
    ``initialize_q_batch`` Boltzmann selection of ``restarts`` starts, BoTorch's batched
    L-BFGS-B), but every evaluation is ``acqf.value_grad_np`` (``LatentGP.moments_np`` /
    ``lookahead_np`` and the acquisition's derivatives in the posterior moments): no autograd,
    no tensor round trips, several times faster per point. ``None`` when the acquisition or
    the posterior has no such form (the caller then uses ``optimize_acqf``).
    """
    if not acqf.numpy_ready():
        return None
    free = [i for i in range(d) if i not in fixed]
    base = np.zeros(d)
    for i, v in fixed.items():
        base[i] = v

    def full(x: np.ndarray) -> np.ndarray:
        X = np.tile(base, (x.shape[0], 1))
        X[:, free] = x
        return X

    def value(X: np.ndarray) -> np.ndarray:  # in chunks: look-ahead terms are b x reference set
        return np.concatenate([acqf.value_grad_np(X[i : i + 128], grad=False)[0] for i in range(0, X.shape[0], 128)])

    deadline = None if timeout is None else time.monotonic() + timeout

    def negative(x: np.ndarray, batch_indices: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        if deadline is not None and time.monotonic() > deadline:
            raise _Timeout
        a, grad = acqf.value_grad_np(full(x.reshape(-1, len(free))))
        assert grad is not None
        return -a, -grad[:, free]

    raw = sobol_draw(len(free), max(raw_samples, restarts), seed)
    raw_values = torch.as_tensor(value(full(raw.numpy())))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) % (2**31))
        starts, _ = initialize_q_batch(raw.unsqueeze(-2), raw_values, n=min(restarts, raw.shape[0]), eta=2.0)
    x0 = starts.squeeze(-2).numpy().copy()
    try:
        xs, fs, _ = fmin_l_bfgs_b_batched(
            negative,
            x0,
            bounds=[(0.0, 1.0)] * len(free),
            factr=None,
            ftol=ftol,
            maxiter=int(maxiter),
            pass_batch_indices=True,
        )
    except _Timeout:  # max_gen_time: the best raw sample (or start) so far
        xs, fs = x0, -value(full(x0))
    best = np.clip(full(np.asarray(xs)[int(np.argmin(fs))].reshape(1, -1)), 0.0, 1.0)
    return torch.as_tensor(best, dtype=DTYPE)


class _Timeout(Exception):
    pass


def _sobol_points(d: int, n: int, seed: int, fixed: Mapping[int, float]) -> Tensor:
    pts = sobol_draw(d, n, seed)
    for i, v in fixed.items():
        pts[:, i] = v
    return pts


def _grid_points(
    acqf: AcquisitionFunction,
    fitted: FittedModel,
    method: str,
    samps: int,
    num_points: int,
    fixed: Mapping[int, float],
    seed: int,
) -> np.ndarray:
    r"""AEPsych's grid generators: the acquisition on ``samps`` scrambled Sobol points (pairs for
    pairwise models); "grid" takes the ``num_points`` best, "thompson" draws ``num_points`` of them
    (with replacement) with probability proportional to ``value - min(value)``."""
    d = fitted.dim
    q = 2 if fitted.kind == PAIRWISE else 1
    n = max(int(samps), num_points)
    grid = _sobol_points(d, n * q, seed, fixed).reshape(n, q, d)
    with torch.no_grad():
        values = torch.cat([acqf(chunk) for chunk in grid.split(256)]).reshape(-1).numpy().astype(np.float64)
    values = np.where(np.isfinite(values), values, -np.inf)
    if method == "grid":
        idx = np.argsort(-values, kind="stable")[:num_points]
    else:
        w = values - values[np.isfinite(values)].min() if np.isfinite(values).any() else np.zeros_like(values)
        w = np.where(np.isfinite(w), w, 0.0)
        p = w / w.sum() if w.sum() > 0 else np.full(n, 1.0 / n)
        idx = np.random.default_rng([int(seed) % (2**32), 4242]).choice(n, size=num_points, p=p)
    out = grid[torch.as_tensor(idx)]
    return (out if q == 2 else out.squeeze(1)).numpy().astype(np.float64)


def _intensity_aware(
    acqf: AcquisitionFunction,
    fitted: FittedModel,
    generator: GeneratorSpec,
    num_points: int,
    fixed: Mapping[int, float],
    seed: int,
    pending: Tensor | None = None,
) -> np.ndarray:
    r"""AEPsych's IntensityAwareSemiPGenerator: the acquisition is maximised over the context dimensions
    with the intensity held at 0, then the intensity is set to the threshold (the ``target`` response
    probability, default 0.75) at that context, clipped to ``[0, 1]``. A fixed intensity is kept as
    given (AEPsych refuses fixed features here; fixed context dimensions are honoured)."""
    from psyserve.compute.semip import ProductLatent

    latent = fitted.latent
    if not isinstance(latent, ProductLatent):
        raise ValueError(f"IntensityAwareSemiPGenerator needs a semi-parametric model, not {fitted.kind}")
    stim = latent.stim_dim
    opts = generator.options
    target = float(opt_float(opts, "target", 0.75) or 0.75)
    inner = GeneratorSpec(generator.acqf, {k: v for k, v in opts.items() if k != "method"})
    pts = generate_points(fitted, inner, num_points, {**fixed, stim: 0.0}, seed, acqf=acqf)
    if stim not in fixed:
        with torch.no_grad():
            thr, _ = latent.threshold(torch.as_tensor(pts, dtype=DTYPE), target)
        pts[:, stim] = thr.clamp(0.0, 1.0).numpy()
    else:
        pts[:, stim] = fixed[stim]
    return pts


def _discrete_combinations(options: Mapping[str, Any], d: int, fixed: Mapping[int, float]) -> list[dict[int, float]]:
    r"""MixedOptimizeAcqfGenerator: every combination of the discrete dimensions' unit values (option
    ``discrete``: JSON ``{dim: [unit values]}``), dimensions held by ``fixed`` left out."""
    import itertools
    import json

    table = json.loads(str(options.get("discrete", "") or "{}"))
    dims = sorted(int(k) for k in table if int(k) not in fixed)
    for k in dims:
        if not 0 <= k < d:
            raise ValueError(f"discrete dimension {k} out of range for dim {d}")
    values = [[float(v) for v in table[str(k)]] for k in dims]
    return [dict(zip(dims, combo, strict=True)) for combo in itertools.product(*values)] or [{}]


def generate_points(
    fitted: FittedModel,
    generator: GeneratorSpec,
    num_points: int,
    fixed: Mapping[int, float],
    seed: int,
    acqf: AcquisitionFunction | None = None,
    pending: Tensor | None = None,
) -> np.ndarray:
    r"""Propose points by maximising the acquisition ``generator.acqf``.

    ``generator.options["method"]``: "optimize" (default), "epsilon_greedy" (each point is a
    uniformly random one with probability ``epsilon``, drawn from the job's seed), "grid" / "thompson"
    (``_grid_points``: AEPsych's AcqfGridSearchGenerator / AcqfThompsonSamplerGenerator),
    "semip_intensity" (``_intensity_aware``: AEPsych's IntensityAwareSemiPGenerator), "mixed" (AEPsych's
    MixedOptimizeAcqfGenerator: the continuous dimensions optimised for every combination of the
    discrete ones in option ``discrete``, the best combination kept).

    ``num_points > 1`` is sequential greedy: each new point is optimised with the
    previous ones pending (and ``pending``, ``p x d``, points chosen by other generators of the same
    ask, from the start). Without any data (prior-only model) scrambled Sobol points are returned.

    Returns:
        ``num_points x d`` (pairwise: ``num_points x 2 x d``) float64 array in ``[0, 1]``; a function of
        its arguments and ``seed`` alone: torch's global RNG (BoTorch's Boltzmann choice of restart
        points draws from it) is seeded here and the caller's state restored afterwards.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) % (2**63))
        return _generate_points(fitted, generator, num_points, fixed, seed, acqf, pending)


def _generate_points(
    fitted: FittedModel,
    generator: GeneratorSpec,
    num_points: int,
    fixed: Mapping[int, float],
    seed: int,
    acqf: AcquisitionFunction | None,
    pending: Tensor | None,
) -> np.ndarray:
    d = fitted.dim
    pairwise = fitted.kind == PAIRWISE
    q = 2 if pairwise else 1
    if fitted.model is None:
        pts = _sobol_points(d, num_points * q, seed, fixed)
        return pts.reshape(num_points, q, d).squeeze(1).numpy() if not pairwise else pts.reshape(num_points, 2, d).numpy()
    opts = generator.options
    name = canonical_acqf(generator.acqf)
    if acqf is None:
        acqf = build_acquisition(name, fitted, generator, seed)
    method = opt_str(opts, "method", "optimize")
    if method == "semip_intensity":
        return _intensity_aware(acqf, fitted, generator, num_points, fixed, seed)
    if method in ("grid", "thompson"):
        return _grid_points(acqf, fitted, method, opt_int(opts, "samps", 1024), num_points, fixed, seed)
    if method not in ("optimize", "epsilon_greedy", "mixed"):
        raise ValueError(f"unknown generation method {method!r}")
    combos = _discrete_combinations(opts, d, fixed) if method == "mixed" else [{}]
    epsilon = float(opt_float(opts, "epsilon", 0.1) or 0.0) if method == "epsilon_greedy" else 0.0
    explore = np.random.default_rng([int(seed) % (2**32), 31337]).random(num_points) < epsilon
    restarts = max(1, opt_int(opts, "restarts", 10))
    samps = max(restarts, opt_int(opts, "samps", 1000))
    maxiter = max(1, opt_int(opts, "maxiter", 100))
    max_t = opt_float(opts, "max_gen_time", None)
    timeout = None if max_t is None or max_t <= 0 else max_t / num_points
    # raw samples in one batch; the look-ahead acquisitions hold b x reference-set matrices
    ibl = 100 if name in ("EAVC", "GlobalMI", "GlobalSUR", "ApproxGlobalSUR") else samps
    chosen: list[Tensor] = []
    before = [] if pending is None or pending.shape[0] == 0 else [pending.to(DTYPE).reshape(-1, d)]
    for i in range(num_points):
        if chosen or before:
            acqf.set_X_pending(torch.cat(before + chosen, dim=0))
        if explore[i]:  # epsilon-greedy: a uniformly random point instead of the acquisition's
            rng = np.random.default_rng([int(seed) % (2**32), 7, i])
            cand = torch.as_tensor(rng.random((q, d)), dtype=DTYPE)
            for k, v in fixed.items():
                cand[:, k] = v
            chosen.append(cand)
            continue
        ftol = opt_float(opts, "ftol", ACQF_FTOL) or ACQF_FTOL
        best: tuple[float, Tensor] | None = None
        for combo in combos:  # mixed: the continuous dims optimised for every discrete combination (BoTorch's optimize_acqf_mixed)
            held = {**fixed, **combo}
            fast = None
            if isinstance(acqf, LatentAcquisition) and len(held) < d:
                fast = _optimize_moments(acqf, d, held, restarts, samps, maxiter, timeout, seed + 1009 * i, ftol)
            cand = (
                fast
                if fast is not None
                else _optimize(acqf, d, q, held, restarts, samps, maxiter, timeout, seed + 1009 * i, ibl, ftol)
            )
            if len(combos) == 1:
                best = (0.0, cand)
                break
            with torch.no_grad():
                value = float(acqf(cand.unsqueeze(0)).reshape(-1)[0])
            if best is None or value > best[0]:
                best = (value, cand)
        assert best is not None
        chosen.append(best[1])
    pts = torch.stack(chosen, dim=0)  # num_points x q x d
    out = pts if pairwise else pts.squeeze(1)
    return out.numpy().astype(np.float64)
