"""Expected hypervolume improvement in closed form for the Ax-style optimisation's noiseless fast path:
`LogEHVI` (the default for several objectives where it applies) and BoTorch's plain analytic EHVI
(opt-in), both on `optimization_posterior.cached_model`. Imports torch/BoTorch and the compute
contract and posterior modules only; no server state or I/O.

Why: qLogEHVI estimates ``log E[HVI(y)]`` from MC samples of the posterior; its cost is samples x
points x boxes of the decomposition, and the box count grows with the Pareto front (BraninCurrin:
~2.8 s of CPU per ask at 40 trials, most of it evaluating 1,024 raw samples and the L-BFGS steps).
For one point at a time with independent GPs per objective, ``E[HVI]`` has a closed form (a sum over
boxes of products of one-dimensional expectations), and its logarithm can be computed without
underflow: the same target as qLogEHVI without MC error, at boxes x points cost."""

from __future__ import annotations

import numpy as np
import torch
from botorch.acquisition import AcquisitionFunction
from botorch.acquisition.analytic import _log_ei_helper
from botorch.models.model import Model
from botorch.utils.safe_math import log1mexp
from botorch.utils.transforms import t_batch_mode_transform

from psyserve.compute.optimization import MetricData, OptimizationProblem
from psyserve.compute.optimization_posterior import cached_model

DTYPE = torch.double
MIN_VARIANCE = 1e-9  # BoTorch's analytic EHVI clamps the posterior variance here too


class LogEHVI(AcquisitionFunction):
    r"""``log E[HVI(y(x))]`` for one point, objectives maximised, independent Normal marginals.

    The region a new point can add to the hypervolume is the union of the boxes ``[l_i, u_i]`` of
    BoTorch's box decomposition of the non-dominated space; the improvement of a point ``y`` is
    ``sum_i prod_k max(0, min(y_k, u_ik) - l_ik)``. With ``y_k ~ N(mu_k, sigma_k^2)`` independent,

        E[max(0, min(y, u) - l)] = sigma (h((mu - l) / sigma) - h((mu - u) / sigma)),
        h(z) = phi(z) + z Phi(z),

    so ``log E[HVI] = logsumexp_i sum_k [log sigma_k + log h(a_ik) + log1mexp(log h(b_ik) - log h(a_ik))]``
    with ``a = (mu - l) / sigma``, ``b = (mu - u) / sigma``, and ``log h`` BoTorch's stable
    ``_log_ei_helper`` (the one LogEI uses): finite values and gradients far from the front too,
    where ``E[HVI]`` itself underflows to 0 and gives L-BFGS nothing to follow. Equal to
    BoTorch's analytic EHVI's logarithm where that is representable, and the limit of qLogEHVI
    (q = 1) as its MC samples grow and its smoothing temperatures shrink."""

    def __init__(self, model: Model, ref_point: torch.Tensor, pareto_Y: torch.Tensor) -> None:
        from botorch.utils.multi_objective.box_decompositions.non_dominated import FastNondominatedPartitioning

        super().__init__(model=model)
        partitioning = FastNondominatedPartitioning(ref_point=ref_point, Y=pareto_Y)
        lower, upper = partitioning.get_hypercell_bounds()
        keep = ((upper - lower) > 0).all(dim=-1)  # degenerate boxes add nothing (and a -inf log)
        self.lower: torch.Tensor = lower[keep]  # cells x m
        self.upper: torch.Tensor = upper[keep]  # cells x m, inf where a box is unbounded
        self.bounded: torch.Tensor = torch.isfinite(self.upper)

    @t_batch_mode_transform(expected_q=1)  # type: ignore[arg-type]  # BoTorch types it for the base class
    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """X: ``batch x 1 x d`` -> ``batch``."""
        posterior = self.model.posterior(X)
        mu = posterior.mean  # type: ignore[attr-defined]  # batch x 1 x m, broadcast against the boxes (cells x m)
        sigma = posterior.variance.clamp_min(MIN_VARIANCE).sqrt()  # type: ignore[attr-defined]
        a = (mu - self.lower) / sigma  # batch x cells x m
        log_h_a = _log_ei_helper(a)
        upper = torch.where(self.bounded, self.upper, self.lower + 1.0)  # finite stand-in, masked below
        log_h_b = _log_ei_helper((mu - upper) / sigma)
        # log(h(a) - h(b)) = log h(a) + log(1 - h(b) / h(a)); h(b) < h(a) as b < a, the clamp guards round-off
        log_gap = log_h_a + torch.where(self.bounded, log1mexp((log_h_b - log_h_a).clamp_max(-1e-300)), torch.zeros_like(log_h_a))
        per_box = (sigma.log() + log_gap).sum(dim=-1)  # batch x cells
        return torch.logsumexp(per_box, dim=-1)


def _signed_front(problem: OptimizationProblem, data: MetricData, reference: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    signs = np.array([-1.0 if o.minimize else 1.0 for o in problem.objectives])
    signed = data.Y[:, [o.index for o in problem.objectives]] * signs
    return torch.tensor(reference, dtype=DTYPE), torch.tensor(signed, dtype=DTYPE).reshape(-1, len(problem.objectives))


def log_ehvi(problem: OptimizationProblem, data: MetricData, models: list, reference: np.ndarray) -> AcquisitionFunction | None:
    """`LogEHVI` against the observed front (``reference``: the signed reference point), on the
    cached posterior of the objectives' GPs; None where the cached posterior does not apply.
    Callers check the conditions under which this is qLogNEHVI's target (noiseless observations,
    one point, nothing pending, no outcome constraints)."""
    signed_outputs = [(o.index, -1.0 if o.minimize else 1.0) for o in problem.objectives]
    model = cached_model(models, signed_outputs)
    if model is None:
        return None
    ref, signed = _signed_front(problem, data, reference)
    acqf = LogEHVI(model, ref, signed)
    return acqf if acqf.lower.shape[0] else None


def analytic_ehvi(
    problem: OptimizationProblem, data: MetricData, models: list, reference: np.ndarray
) -> AcquisitionFunction | None:
    """BoTorch's analytic EHVI (Yang et al. 2019; not its logarithm) on the cached posterior: opt-in
    only (``acqf = analytic_ehvi``), since its zero plateaus far from the front starve L-BFGS.
    None when the cached posterior does not apply or no observation beats the reference point."""
    from botorch.acquisition.multi_objective.analytic import ExpectedHypervolumeImprovement
    from botorch.utils.multi_objective.box_decompositions.non_dominated import FastNondominatedPartitioning

    signed_outputs = [(o.index, -1.0 if o.minimize else 1.0) for o in problem.objectives]
    model = cached_model(models, signed_outputs)
    if model is None:
        return None
    ref, signed = _signed_front(problem, data, reference)
    if not bool((signed > ref).all(dim=-1).any()):
        return None
    return ExpectedHypervolumeImprovement(
        model,
        ref_point=ref.tolist(),
        partitioning=FastNondominatedPartitioning(ref_point=ref, Y=signed),  # type: ignore[arg-type]  # BoTorch's own default
    )
