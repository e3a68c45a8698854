"""Numerics of the Ax-style optimisation jobs: BoTorch's SingleTaskGP per metric in a ModelListGP
(MixedSingleTaskGP with unordered choices), qLogNEI / qLogNEHVI with outcome constraints (analytic
LogEI / LogConstrainedEI, the closed-form LogEHVI or qLogEHVI on the cached posterior when observations
are noiseless), optimize_acqf under linear constraints. Imports torch/BoTorch; imports only the contract
in compute/optimization.py and compute/optimization_{ehvi,fit,posterior}.py; no server state or I/O."""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import torch
from botorch.acquisition import AcquisitionFunction
from botorch.sampling.base import MCSampler
from scipy.stats import qmc

from psyserve.compute.optimization import (
    MetricData,
    OptimizationGenerateJob,
    OptimizationGenerateResult,
    OptimizationProblem,
    OptimizationState,
)
from psyserve.compute.optimization_ehvi import analytic_ehvi, log_ehvi
from psyserve.compute.optimization_fit import fast_fit, fits_fast
from psyserve.compute.optimization_posterior import cached_model

DTYPE = torch.double
MIN_RELATIVE_NOISE = 1e-6  # a known SEM of 0 becomes this fraction of the metric's variance


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(int(seed) % (2**63))
        yield


def no_kernel_compilation() -> None:
    """BoTorch's qLogEHVI / qLogNEHVI JIT-compile a C++ kernel on first use: minutes of g++ inside
    an ask, and a lock file that a killed process leaves behind blocks every later process forever.
    A server worker never compiles: BoTorch's pure-PyTorch path (same values) is used instead."""
    from botorch.acquisition.multi_objective import logei

    if getattr(logei, "_C", None) is None:
        logei._load_attempted = True  # BoTorch's own "already tried" sentinel


# ---------------------------------------------------------------------- models
def _metric_rows(data: MetricData, j: int) -> np.ndarray:
    return np.isfinite(data.Y[:, j])


def _fit(
    problem: OptimizationProblem, data: MetricData, warm: OptimizationState | None, maxiter: int
) -> tuple[list, OptimizationState]:
    """One SingleTaskGP per metric (fixed noise where every observation has a SEM, inferred otherwise)."""
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import MixedSingleTaskGP, SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    models: list = []
    states: list[dict[str, list]] = []
    for j in range(len(problem.metrics)):
        rows = _metric_rows(data, j)
        X = torch.tensor(data.X[rows], dtype=DTYPE)
        y = torch.tensor(data.Y[rows, j : j + 1], dtype=DTYPE)
        yvar_np = data.Yvar[rows, j : j + 1]
        train_Yvar = None
        if len(yvar_np) and np.all(np.isfinite(yvar_np)):
            floor = MIN_RELATIVE_NOISE * max(float(np.var(data.Y[rows, j])), 1e-12)
            train_Yvar = torch.tensor(np.maximum(yvar_np, floor), dtype=DTYPE)
        if problem.categorical:  # unordered choices: a categorical kernel on their dimensions
            model = MixedSingleTaskGP(
                X, y, cat_dims=[dim for dim, _ in problem.categorical], train_Yvar=train_Yvar, outcome_transform=Standardize(m=1)
            )
        else:
            model = SingleTaskGP(X, y, train_Yvar=train_Yvar, outcome_transform=Standardize(m=1))
        fixed_noise = train_Yvar is not None
        warm_loaded = False
        if warm is not None and j < len(warm.hyperparameters):
            saved = warm.hyperparameters[j]
            if bool(saved.get("__fixed_noise__", [0])[0]) == fixed_noise:
                with contextlib.suppress(Exception):
                    model.load_state_dict(
                        {k: torch.tensor(v, dtype=DTYPE) for k, v in saved.items() if not k.startswith("__")}, strict=False
                    )
                    warm_loaded = True
        try:
            if fits_fast(model):  # the same likelihood, from the warm and BoTorch's default start
                fast_fit(model, maxiter, warm=warm_loaded)
            else:
                fit_gpytorch_mll(
                    ExactMarginalLogLikelihood(model.likelihood, model), optimizer_kwargs={"options": {"maxiter": maxiter}}
                )
        except Exception:  # a failed fit keeps the (prior or warm) hyper-parameters
            pass
        model.eval()
        models.append(model)
        state = {
            k: v.detach().tolist() for k, v in model.state_dict().items() if "outcome_transform" not in k and v.numel() < 10_000
        }
        state["__fixed_noise__"] = [1.0 if fixed_noise else 0.0]
        states.append(state)
    return models, OptimizationState(states, len(data.X))


def _constraint_callables(problem: OptimizationProblem) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """BoTorch outcome constraints: feasible where the callable is <= 0."""
    return [_outcome_constraint(c.index, c.bound, c.upper) for c in problem.outcome_constraints]


def _outcome_constraint(index: int, bound: float, upper: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    def slack(Z: torch.Tensor) -> torch.Tensor:
        return Z[..., index] - bound if upper else bound - Z[..., index]

    return slack


def _objective(index: int, sign: float) -> Callable[..., torch.Tensor]:
    def value(Z: torch.Tensor, X: torch.Tensor | None = None) -> torch.Tensor:
        return sign * Z[..., index]

    return value


# ---------------------------------------------------------------------- points
def _quasi_random(problem: OptimizationProblem, n: int, seed: int, fixed: dict[int, float]) -> np.ndarray:
    """n scrambled-Sobol points satisfying the linear constraints (by rejection)."""
    engine = qmc.Sobol(d=problem.dim, scramble=True, seed=seed)
    found: list[np.ndarray] = []
    for _ in range(64):
        U = engine.random(256)
        for i, v in fixed.items():
            U[:, i] = v
        found.extend(U[problem.feasible_unit(U)])
        if len(found) >= n:
            return np.array(found[:n])
    raise ValueError("the parameter constraints leave too little of the space to sample (no feasible point in 16,384 draws)")


def _repair(U: np.ndarray, problem: OptimizationProblem, fixed: dict[int, float], seed: int) -> np.ndarray:
    """Clip to the cube, pin fixed dimensions and project rows that break a linear constraint by
    round-off back inside; rows still infeasible are replaced by quasi-random feasible points."""
    U = np.clip(np.asarray(U, dtype=float), 0.0, 1.0)
    free = np.ones(problem.dim, dtype=bool)
    for i, v in fixed.items():
        U[:, i] = v
        free[i] = False
    for _ in range(50):
        clean = True
        for c in problem.linear_constraints:
            a = np.asarray(c.coefficients) * free
            excess = U @ np.asarray(c.coefficients) - (c.bound - 1e-12 * max(1.0, abs(c.bound)))
            bad = excess > 0
            if bad.any() and a @ a > 0:
                clean = False
                U[bad] -= (excess[bad] / (a @ a))[:, None] * a
                U = np.clip(U, 0.0, 1.0)
        if clean:
            break
    bad_rows = ~problem.feasible_unit(U)
    if bad_rows.any():
        U[bad_rows] = _quasi_random(problem, int(bad_rows.sum()), seed, fixed)
    return U


def _signed_objectives(problem: OptimizationProblem, values: np.ndarray) -> np.ndarray:
    """k x n_objectives, larger is better."""
    return np.stack([(-1.0 if o.minimize else 1.0) * values[:, o.index] for o in problem.objectives], axis=-1)


def _feasible(problem: OptimizationProblem, values: np.ndarray) -> np.ndarray:
    ok = np.all(np.isfinite(values[:, [o.index for o in problem.objectives]]), axis=1)
    for c in problem.outcome_constraints:
        column = values[:, c.index]
        ok &= np.isfinite(column) & ((column <= c.bound) if c.upper else (column >= c.bound))
    return ok


def _reference_point(problem: OptimizationProblem, values: np.ndarray) -> np.ndarray:
    """Signed thresholds where given; otherwise BoTorch's inferred reference point from the
    observed (feasible, else all) Pareto front."""
    from botorch.utils.multi_objective.hypervolume import infer_reference_point
    from botorch.utils.multi_objective.pareto import is_non_dominated

    signed = _signed_objectives(problem, values)
    usable = np.all(np.isfinite(signed), axis=1)
    feasible = _feasible(problem, values) & usable
    pool = signed[feasible] if feasible.any() else signed[usable]
    if len(pool):
        Y = torch.tensor(pool, dtype=DTYPE)
        inferred = infer_reference_point(Y[is_non_dominated(Y)]).numpy()
    else:
        inferred = np.zeros(len(problem.objectives))
    ref = inferred.copy()
    for k, o in enumerate(problem.objectives):
        if o.threshold is not None:
            ref[k] = (-1.0 if o.minimize else 1.0) * o.threshold
    return np.asarray(ref, dtype=float)


def _bilog_constrained(problem: OptimizationProblem, data: MetricData) -> MetricData:
    """Ax 1.3's BilogY: each outcome-constraint metric (not an objective) is modelled as
    ``b + sign(y - b) log(1 + |y - b|)`` around its bound ``b`` (monotone, ``f(b) = b``, so the
    constraint and its feasibility probability are unchanged; the region near the bound is
    stretched). SEMs follow by matching the 95% interval's width, as Ax does; unknown stay unknown."""
    objectives = {o.index for o in problem.objectives}
    bounds = {c.index: c.bound for c in problem.outcome_constraints if c.index not in objectives}
    if not bounds:
        return data
    Y, Yvar = data.Y.copy(), data.Yvar.copy()
    fac = 1.959963984540054  # the standard normal's 97.5% quantile

    def bilog(y: np.ndarray, b: float) -> np.ndarray:
        return b + np.sign(y - b) * np.log1p(np.abs(y - b))

    for j, b in bounds.items():
        y, var = data.Y[:, j], data.Yvar[:, j]
        Y[:, j] = bilog(y, b)
        d = fac * np.sqrt(np.where(np.isfinite(var), var, 0.0))
        Yvar[:, j] = np.where(np.isfinite(var), ((bilog(y + d, b) - bilog(y - d, b)) / (2 * fac)) ** 2, var)
    return MetricData(data.X, Y, Yvar)


def generate_points(job: OptimizationGenerateJob) -> OptimizationGenerateResult:
    problem, data, n = job.problem, job.data, int(job.num_points)
    fixed = {int(k): float(v) for k, v in job.fixed.items()}
    seed = int(job.seed)
    counts = [int(_metric_rows(data, j).sum()) for j in range(len(problem.metrics))]
    if len(data.X) == 0 or min(counts) == 0:
        return OptimizationGenerateResult(_quasi_random(problem, n, seed, fixed), job.warm_state, 0.0, 0.0)
    from botorch.acquisition.logei import qLogNoisyExpectedImprovement
    from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
    from botorch.acquisition.multi_objective.objective import WeightedMCMultiOutputObjective
    from botorch.acquisition.objective import GenericMCObjective
    from botorch.models import ModelListGP
    from botorch.optim import optimize_acqf
    from botorch.sampling.normal import SobolQMCNormalSampler

    options = job.options
    if len(problem.objectives) > 1:
        no_kernel_compilation()
    with _seeded(seed):
        t0 = time.perf_counter()
        modelled = _bilog_constrained(problem, data) if int(options.get("bilog", 1)) else data  # Ax 1.3 does too
        models, state = _fit(problem, modelled, job.warm_state, int(options.get("fit_maxiter", 200)))
        fit_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        model = ModelListGP(*models)
        X_baseline = torch.tensor(np.unique(data.X, axis=0), dtype=DTYPE)
        sampler = SobolQMCNormalSampler(sample_shape=torch.Size([int(options.get("mc_samples", 64))]), seed=seed)
        constraints = _constraint_callables(problem) or None
        pending = torch.tensor(job.pending, dtype=DTYPE) if job.pending is not None and len(job.pending) else None
        acqf: AcquisitionFunction
        if (
            len(problem.objectives) > 1
            and (
                ehvi := _noiseless_ehvi(problem, data, models, pending, n, sampler, constraints, str(options.get("acqf", "auto")))
            )
            is not None
        ):
            acqf = ehvi
        elif len(problem.objectives) > 1:
            weights = torch.tensor([-1.0 if o.minimize else 1.0 for o in problem.objectives], dtype=DTYPE)
            objective = WeightedMCMultiOutputObjective(weights=weights, outcomes=[o.index for o in problem.objectives])
            acqf = qLogNoisyExpectedHypervolumeImprovement(
                model=model,
                ref_point=_reference_point(problem, data.Y).tolist(),
                X_baseline=X_baseline,
                sampler=sampler,
                objective=objective,
                constraints=constraints,
                X_pending=pending,
                prune_baseline=True,
                cache_root=bool(options.get("cache_root", 1)),
            )
        elif (analytic := _analytic_acquisition(problem, data, models, pending, n, str(options.get("acqf", "auto")))) is not None:
            acqf = analytic
        else:
            o = problem.objectives[0]
            sign = -1.0 if o.minimize else 1.0
            acqf = qLogNoisyExpectedImprovement(
                model=model,
                X_baseline=X_baseline,
                sampler=sampler,
                objective=GenericMCObjective(_objective(o.index, sign)),
                constraints=constraints,
                X_pending=pending,
                prune_baseline=True,
                cache_root=bool(options.get("cache_root", 1)),
            )
        d = problem.dim
        bounds = torch.stack([torch.zeros(d, dtype=DTYPE), torch.ones(d, dtype=DTYPE)])
        inequality = []
        for c in problem.linear_constraints:
            coef = np.asarray(c.coefficients, dtype=float)
            if np.maximum(coef, 0.0).sum() <= c.bound:
                continue  # holds everywhere in the cube: no need to slow the optimiser with it
            idx = np.flatnonzero(coef)
            # BoTorch: sum(coefficients * x[indices]) >= rhs
            inequality.append((torch.tensor(idx, dtype=torch.long), torch.tensor(-coef[idx], dtype=DTYPE), float(-c.bound)))
        restarts, raw = int(options.get("restarts", 5)), int(options.get("samps", 256))
        maxiter = int(options.get("maxiter", 200))
        if problem.categorical:
            candidates = _optimize_categorical(acqf, problem, bounds, inequality, fixed, n, restarts, raw, maxiter, seed)
        elif not inequality:
            candidates, _ = optimize_acqf(
                acqf,
                bounds=bounds,
                q=n,
                num_restarts=restarts,
                raw_samples=raw,
                fixed_features=fixed or None,
                options={"batch_limit": restarts, "init_batch_limit": raw, "maxiter": maxiter},
                sequential=n > 1,
            )
        else:
            candidates = _optimize_constrained(acqf, problem, bounds, inequality, fixed, n, restarts, raw, maxiter, seed)
        points = _repair(candidates.detach().numpy().reshape(n, d), problem, fixed, seed)
        generate_seconds = time.perf_counter() - t1
    return OptimizationGenerateResult(points, state, fit_seconds, generate_seconds)


def _noiseless_ehvi(
    problem: OptimizationProblem,
    data: MetricData,
    models: list,
    pending: torch.Tensor | None,
    n: int,
    sampler: MCSampler,
    constraints: list | None,
    choice: str,
) -> AcquisitionFunction | None:
    """The acquisition for several objectives where qLogNEHVI's target is known in closed form: one
    point, nothing pending, every modelled observation noiseless (SEM 0), so the observed front is
    the true one. choice "auto": `optimization_ehvi.LogEHVI` (log E[HVI] in closed form) without
    outcome constraints, qLogEHVI on the cached posterior with them; "qlogehvi": qLogEHVI on the
    cached posterior; "analytic_ehvi": BoTorch's analytic EHVI (not its log; opt-in). None: use
    qLogNEHVI on the GPs (also any other choice, e.g. "mc")."""
    if choice not in ("auto", "qlogehvi", "analytic_ehvi") or pending is not None or n != 1:
        return None
    if not (np.all(np.isfinite(data.Y)) and np.all(data.Yvar == 0.0)):
        return None
    if choice != "qlogehvi" and not problem.outcome_constraints:
        # in-process, same designs, BraninCurrin: see README (Performance) for the hypervolume pairs
        closed = (log_ehvi if choice == "auto" else analytic_ehvi)(problem, data, models, _reference_point(problem, data.Y))
        if closed is not None:
            return closed
    model = cached_model(models)
    if model is None:
        return None
    from botorch.acquisition.multi_objective.logei import qLogExpectedHypervolumeImprovement
    from botorch.acquisition.multi_objective.objective import WeightedMCMultiOutputObjective
    from botorch.utils.multi_objective.box_decompositions.non_dominated import FastNondominatedPartitioning

    ref = torch.tensor(_reference_point(problem, data.Y), dtype=DTYPE)
    feasible = _feasible(problem, data.Y)
    signed = torch.tensor(_signed_objectives(problem, data.Y[feasible]), dtype=DTYPE).reshape(-1, len(problem.objectives))
    weights = torch.tensor([-1.0 if o.minimize else 1.0 for o in problem.objectives], dtype=DTYPE)
    return qLogExpectedHypervolumeImprovement(
        model=model,
        ref_point=ref.tolist(),
        partitioning=FastNondominatedPartitioning(ref_point=ref, Y=signed),  # type: ignore[arg-type]  # BoTorch's own default
        sampler=sampler,
        objective=WeightedMCMultiOutputObjective(weights=weights, outcomes=[o.index for o in problem.objectives]),
        constraints=constraints,
    )


def _analytic_acquisition(
    problem: OptimizationProblem, data: MetricData, models: list, pending: torch.Tensor | None, n: int, choice: str
) -> AcquisitionFunction | None:
    """Analytic LogEI (LogConstrainedEI with outcome constraints) where it equals qLogNEI's target:
    one objective, one point, nothing pending, every modelled observation noiseless (SEM 0) and a
    feasible one observed (its value is the incumbent). choice "auto": on `optimization_posterior.CachedPosterior`;
    "analytic": on the GPyTorch models; anything else (or None returned): the MC acquisition."""
    if choice not in ("auto", "analytic") or len(problem.objectives) != 1 or pending is not None or n != 1:
        return None
    if not (np.all(np.isfinite(data.Y)) and np.all(data.Yvar == 0.0)):
        return None
    feasible = _feasible(problem, data.Y)
    if not feasible.any():
        return None
    from botorch.acquisition.analytic import LogConstrainedExpectedImprovement, LogExpectedImprovement
    from botorch.models import ModelListGP

    o = problem.objectives[0]
    observed = data.Y[feasible, o.index]
    best = float(observed.min() if o.minimize else observed.max())
    if not problem.outcome_constraints:
        single = [models[o.index]]
        model = (cached_model(single) if choice == "auto" else None) or single[0]
        return LogExpectedImprovement(model, best_f=best, maximize=not o.minimize)
    bounds: dict[int, tuple[float | None, float | None]] = {}
    for c in problem.outcome_constraints:
        lower, upper = bounds.get(c.index, (None, None))
        if c.upper:
            upper = c.bound if upper is None else min(upper, c.bound)
        else:
            lower = c.bound if lower is None else max(lower, c.bound)
        bounds[c.index] = (lower, upper)
    model = (cached_model(models) if choice == "auto" else None) or ModelListGP(*models)
    return LogConstrainedExpectedImprovement(
        model, best_f=best, objective_index=o.index, constraints=bounds, maximize=not o.minimize
    )


MAX_CATEGORY_COMBINATIONS = 32


def _category_combinations(problem: OptimizationProblem, fixed: dict[int, float], seed: int) -> list[dict[int, float]]:
    """Every combination of the unordered choices not pinned by `fixed` (unit-cube values); above
    MAX_CATEGORY_COMBINATIONS a seeded random subset of that many."""
    import itertools

    free = [(dim, k) for dim, k in problem.categorical if dim not in fixed]
    combos = [
        dict(zip([dim for dim, _ in free], values, strict=True))
        for values in itertools.product(*[[i / (k - 1) for i in range(k)] for _, k in free])
    ]
    if len(combos) > MAX_CATEGORY_COMBINATIONS:
        picked = np.random.default_rng(seed).choice(len(combos), MAX_CATEGORY_COMBINATIONS, replace=False)
        combos = [combos[i] for i in sorted(picked)]
    return combos


def _optimize_categorical(
    acqf: AcquisitionFunction,
    problem: OptimizationProblem,
    bounds: torch.Tensor,
    inequality: list,
    fixed: dict[int, float],
    n: int,
    restarts: int,
    raw: int,
    maxiter: int,
    seed: int,
) -> torch.Tensor:
    """With unordered choices the acquisition is flat between categories (the kernel sees only
    equality), so each combination of choices is optimised over the continuous dimensions with the
    choices pinned, and the best is kept; one point at a time (earlier points pending)."""
    from botorch.optim import optimize_acqf

    base_pending = getattr(acqf, "X_pending", None)
    chosen: list[torch.Tensor] = []
    for k in range(n):
        if chosen:
            extra = torch.cat(chosen, dim=0)
            acqf.set_X_pending(extra if base_pending is None else torch.cat([base_pending, extra], dim=0))
        best_value, best = -math.inf, None
        for combo in _category_combinations(problem, fixed, seed + 104729 * k):
            pinned = {**fixed, **combo}
            if len(pinned) == problem.dim:
                candidate = torch.tensor([[pinned[i] for i in range(problem.dim)]], dtype=DTYPE)
            elif inequality:
                candidate = _optimize_constrained(
                    acqf, problem, bounds, inequality, pinned, 1, restarts, raw, maxiter, seed + 7 * k
                )
            else:
                candidate, _ = optimize_acqf(
                    acqf,
                    bounds=bounds,
                    q=1,
                    num_restarts=restarts,
                    raw_samples=raw,
                    fixed_features=pinned,
                    options={"batch_limit": restarts, "init_batch_limit": raw, "maxiter": maxiter},
                )
            candidate = candidate.detach().reshape(1, -1)
            if not problem.feasible_unit(candidate.numpy(), tolerance=1e-6).all():
                continue
            with torch.no_grad():
                value = float(acqf(candidate.unsqueeze(0)).reshape(-1)[0])
            if best is None or value > best_value:
                best_value, best = value, candidate
        if best is None:  # no combination admits a feasible point: quasi-random feasible fallback
            best = torch.tensor(_quasi_random(problem, 1, seed + k, fixed), dtype=DTYPE)
        chosen.append(best)
    if n > 1:
        acqf.set_X_pending(base_pending)
    return torch.cat(chosen, dim=0)


def _optimize_constrained(
    acqf: AcquisitionFunction,
    problem: OptimizationProblem,
    bounds: torch.Tensor,
    inequality: list,
    fixed: dict[int, float],
    n: int,
    restarts: int,
    raw: int,
    maxiter: int,
    seed: int,
) -> torch.Tensor:
    """optimize_acqf with inequality constraints, one point at a time (earlier points pending),
    started from feasible scrambled-Sobol raw samples (rejection) picked by BoTorch's
    initialize_q_batch: cheaper than BoTorch's hit-and-run polytope sampler, same optimiser (SLSQP)."""
    from botorch.optim import optimize_acqf
    from botorch.optim.initializers import initialize_q_batch

    base_pending = getattr(acqf, "X_pending", None)
    chosen: list[torch.Tensor] = []
    for k in range(n):
        if chosen:
            extra = torch.cat(chosen, dim=0)
            acqf.set_X_pending(extra if base_pending is None else torch.cat([base_pending, extra], dim=0))
        X_raw = torch.tensor(_quasi_random(problem, raw, seed + 7919 * k, fixed), dtype=DTYPE).unsqueeze(1)
        with torch.no_grad():
            values = torch.cat([acqf(chunk) for chunk in X_raw.split(512)])
        picked = initialize_q_batch(X_raw, values, n=min(restarts, raw))
        start = picked[0] if isinstance(picked, tuple) else picked
        candidate, _ = optimize_acqf(
            acqf,
            bounds=bounds,
            q=1,
            num_restarts=start.shape[0],
            batch_initial_conditions=start,
            inequality_constraints=inequality,
            fixed_features=fixed or None,
            options={"batch_limit": 1, "maxiter": maxiter},
        )
        chosen.append(candidate.detach().reshape(1, -1))
    if n > 1:  # analytic acquisitions (one point only) have no X_pending to restore
        acqf.set_X_pending(base_pending)
    return torch.cat(chosen, dim=0)
