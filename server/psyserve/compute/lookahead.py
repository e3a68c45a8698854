"""Look-ahead level-set acquisitions: EAVC, GlobalMI and GlobalSUR on a reference set, LocalMI and
LocalSUR at the candidate itself (torch forward; numpy values with closed-form input gradients for
EAVC and GlobalMI on the plain probit link). Each looks ahead at the level set ``{f > t}`` or, with
``posterior`` (AEPsych's ``lookahead_type = posterior``), at the response ``y_r`` itself.

Must not build models, optimise or know about jobs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.special
import torch
from botorch.utils.transforms import t_batch_mode_transform
from torch import Tensor

from psyserve.compute.acquisition import LatentAcquisition
from psyserve.compute.bvn import _binary_entropy, _entropy_np, bvn_excess, bvn_excess_np, norm_cdf
from psyserve.compute.latent import LatentGP
from psyserve.compute.numerics import DTYPE, norm_pdf


class _LookAhead(LatentAcquisition):
    r"""Shared look-ahead terms on a reference set ``R`` (``r x d``) for level ``target`` (latent).

    For a candidate ``x`` with binary outcome ``y`` (``P(y=1) = Phi(a)``,
    ``a = mu / sqrt(1 + v)``) and reference point ``r`` with level-set probability
    ``p_r = Phi(b_r)``, ``b_r = (mu_r - t) / sd_r``, the joint is exactly
    ``P(y=1, f_r > t) = Phi2(a, b_r; rho_r)`` with ``rho_r = cov(x, r) / (sqrt(1 + v) sd_r)``.
    """

    def __init__(
        self,
        model: Any,
        latent: LatentGP,
        pending_noise: float,
        reference: Tensor,
        target: float,
        floor: float = 0.0,
        posterior: bool = False,
    ) -> None:
        super().__init__(model, latent, pending_noise)
        self.reference = reference.to(DTYPE)
        self.target = float(target)
        #: look ahead at the response at ``r`` (``y_r = 1`` iff ``f_r + e_r > 0``, probit) instead of
        #: the level set: the same terms with ``t = 0`` and ``sd_r = sqrt(1 + v_r)``, the joint
        #: ``P(y=1, y_r=1) = Phi2(a, b_r; c_r / (sqrt(1 + v) sqrt(1 + v_r)))`` (exact)
        self.posterior = bool(posterior)
        if self.posterior and floor:
            raise ValueError("the posterior look-ahead is exact for the plain probit link only, not with a floor")
        #: n-AFC guess rate of a FloorProbitObjective: ``P(y=1 | f) = floor + (1 - floor) Phi(f)``, so
        #: ``P(y=1) = floor + (1 - floor) Phi(a)`` and the joint's excess over independence is
        #: ``(1 - floor) (Phi2 - Phi Phi)`` (autograd path only)
        self.floor = float(floor)
        self._on_posterior_change()

    def _on_posterior_change(self) -> None:
        with torch.no_grad():
            mu_r, var_r = self.post.mean_variance(self.reference)
        if self.posterior:
            self.sd_r = torch.sqrt(1.0 + var_r)
            self.b_r = mu_r / self.sd_r
        else:
            self.sd_r = var_r.sqrt()
            self.b_r = (mu_r - self.target) / self.sd_r
        self.p_r = norm_cdf(self.b_r)
        post = self.post
        self._ref_np = post.reference_np(self.reference.numpy()) if post.analytic_grad else None

    def numpy_ready(self) -> bool:
        return self._ref_np is not None and self.floor == 0.0 and type(self)._of_terms is not _LookAhead._of_terms

    def _of_terms(self, a: np.ndarray, P1: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""The acquisition from ``a`` (``b``), ``P(y=1) = Phi(a)`` and ``T`` (``b x r``): value and
        its derivatives in ``a`` and ``T``."""
        raise NotImplementedError

    def value_grad_np(self, X: np.ndarray, grad: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        r"""``LatentAcquisition.value_grad_np`` through the look-ahead terms: ``a = mu / sqrt(1 + v)``,
        ``rho_r = c_r / (sqrt(1 + v) sd_r)``, ``T_r = bvn_excess(a, b_r, rho_r)``."""
        assert self._ref_np is not None
        la = self.post.lookahead_np(X, self._ref_np, grad)
        mu, var, d_mu, d_var, c, d_c = la.mean, la.var, la.d_mean, la.d_var, la.cov, la.d_cov
        sd_r, b_r = self.sd_r.numpy(), self.b_r.numpy()
        s2 = 1.0 + var
        s = np.sqrt(s2)
        a = mu / s
        rho = c / (s[:, None] * sd_r)
        T, T_a, T_rho = bvn_excess_np(a[:, None], b_r, rho, grad=grad)
        value, g_a, g_T = self._of_terms(a, scipy.special.ndtr(a), T)
        if not grad:
            return value, None
        assert d_mu is not None and d_var is not None and d_c is not None and T_a is not None and T_rho is not None
        total_a = g_a + (g_T * T_a).sum(-1)  # d value / d a
        gt_rho = g_T * T_rho  # d value / d rho_r
        v_mu = total_a / s
        v_var = -total_a * a / (2.0 * s2) - (gt_rho * rho).sum(-1) / (2.0 * s2)
        v_c = gt_rho / (s[:, None] * sd_r)
        return value, v_mu[:, None] * d_mu + v_var[:, None] * d_var + np.einsum("br,brd->bd", v_c, d_c)

    def _terms(self, X: Tensor) -> tuple[Tensor, Tensor]:
        r"""``X``: ``b x 1 x d`` -> ``P(y=1)`` (``b x 1``) and ``Phi2 - Phi Phi`` (``b x r``)."""
        mu, var = self.post.mean_variance(X)
        s = torch.sqrt(1.0 + var)
        a = mu / s
        c = self.post.covariance(X, self.reference).squeeze(-2)
        rho = c / (s * self.sd_r)
        T = bvn_excess(a, self.b_r, rho)
        if self.floor:
            return self.floor + (1.0 - self.floor) * norm_cdf(a), (1.0 - self.floor) * T
        return norm_cdf(a), T

    def _posteriors(self, X: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        r"""Level-set probabilities before (``b x r``), after ``y = 1`` / ``y = 0``, and ``P(y=1)`` (``b x 1``)."""
        P1, T = self._terms(X)
        P1 = P1.clamp(1e-9, 1.0 - 1e-9)
        p = self.p_r.expand_as(T)
        return p, (p + T / P1).clamp(0.0, 1.0), (p - T / (1.0 - P1)).clamp(0.0, 1.0), P1


class EAVC(_LookAhead):
    r"""Expected absolute volume change of the level set ``{f > t}`` over the reference set.

    ``E_y |V(y) - V|`` with ``V = mean_r P(f_r > t)``; by the martingale property this is
    ``2 |mean_r (Phi2(a, b_r; rho_r) - Phi(a) Phi(b_r))|``.
    """

    @t_batch_mode_transform(expected_q=1)  # type: ignore[arg-type]  # subclass-typed self
    def forward(self, X: Tensor) -> Tensor:
        r"""``b x 1 x d`` -> ``b``."""
        _, T = self._terms(X)
        return 2.0 * T.mean(-1).abs()

    def _of_terms(self, a: np.ndarray, P1: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = T.mean(-1)
        return 2.0 * np.abs(m), np.zeros_like(a), np.broadcast_to((2.0 * np.sign(m) / T.shape[-1])[:, None], T.shape)


class GlobalMI(_LookAhead):
    r"""Global mutual information between the outcome at ``x`` and the level-set indicators.

    ``mean_r [h(p_r) - P1 h(p_r|y=1) - (1 - P1) h(p_r|y=0)]`` with binary entropy ``h``.
    """

    @t_batch_mode_transform(expected_q=1)  # type: ignore[arg-type]  # subclass-typed self
    def forward(self, X: Tensor) -> Tensor:
        r"""``b x 1 x d`` -> ``b``."""
        P1, T = self._terms(X)
        P1 = P1.clamp(1e-9, 1.0 - 1e-9)
        p1 = self.p_r + T / P1
        p0 = self.p_r - T / (1.0 - P1)
        mi = _binary_entropy(self.p_r) - P1 * _binary_entropy(p1) - (1.0 - P1) * _binary_entropy(p0)
        return mi.mean(-1)

    def _of_terms(self, a: np.ndarray, P1: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""With ``h'(p) = log((1 - p) / p)`` (zero where ``p`` is clamped)."""
        inside = (P1 > 1e-9) & (P1 < 1.0 - 1e-9)
        P = np.clip(P1, 1e-9, 1.0 - 1e-9)[:, None]
        p_r = self.p_r.numpy()
        p1 = p_r + T / P
        p0 = p_r - T / (1.0 - P)
        h_r = _entropy_np(p_r)[0]
        (h1, dh1), (h0, dh0) = _entropy_np(p1), _entropy_np(p0)
        r = T.shape[-1]
        value = (h_r - P * h1 - (1.0 - P) * h0).mean(-1)
        g_T = (dh0 - dh1) / r
        g_P = (-h1 + dh1 * T / P + h0 + dh0 * T / (1.0 - P)).mean(-1)
        return value, np.where(inside, g_P * norm_pdf(a), 0.0), g_T


def _class_error(p: Tensor) -> Tensor:
    return torch.minimum(p, 1.0 - p)


class GlobalSUR(_LookAhead):
    r"""Global stepwise uncertainty reduction: the expected fall of the level-set misclassification
    probability ``min(p_r, 1 - p_r)`` over the reference set after observing ``y`` at ``x``:
    ``mean_r [e(p_r) - P1 e(p_r|y=1) - (1 - P1) e(p_r|y=0)]``. Also ApproxGlobalSUR's quantity (AEPsych
    approximates the look-ahead posterior; here it is exact for the latent Gaussian)."""

    @t_batch_mode_transform(expected_q=1)  # type: ignore[arg-type]  # subclass-typed self
    def forward(self, X: Tensor) -> Tensor:
        r"""``b x 1 x d`` -> ``b``."""
        p, p1, p0, P1 = self._posteriors(X)
        return (_class_error(p) - P1 * _class_error(p1) - (1.0 - P1) * _class_error(p0)).mean(-1)


class _Local(_LookAhead):
    r"""The look-ahead at the candidate itself: the level-set indicator of ``f(x)`` and the outcome
    ``y`` at ``x``; ``P(y=1, f(x) > t) = Phi2(a, b; rho)`` with ``b = (mu - t) / sd``,
    ``rho = sd / sqrt(1 + v)``."""

    def __init__(
        self, model: Any, latent: LatentGP, pending_noise: float, target: float, floor: float = 0.0, posterior: bool = False
    ) -> None:
        reference = torch.full((1, latent_dim(latent)), 0.5, dtype=DTYPE)
        super().__init__(model, latent, pending_noise, reference, target, floor, posterior)

    def numpy_ready(self) -> bool:
        return False

    def _local(self, X: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        mu, var = self.post.mean_variance(X)  # b x 1
        sd = var.clamp_min(1e-18).sqrt()
        s = torch.sqrt(1.0 + var)
        if self.posterior:  # a second response at x: the same a, correlation v / (1 + v)
            a = mu / s
            b, rho = a, (var / (1.0 + var)).clamp(max=1.0 - 1e-9)
        else:
            a, b, rho = mu / s, (mu - self.target) / sd, (sd / s).clamp(max=1.0 - 1e-9)
        T = bvn_excess(a, b, rho)
        P1 = norm_cdf(a)
        if self.floor:
            P1, T = self.floor + (1.0 - self.floor) * P1, (1.0 - self.floor) * T
        P1 = P1.clamp(1e-9, 1.0 - 1e-9)
        p = norm_cdf(b)
        return p, (p + T / P1).clamp(0.0, 1.0), (p - T / (1.0 - P1)).clamp(0.0, 1.0), P1


class LocalSUR(_Local):
    r"""Local SUR: ``e(p_x) - P1 e(p_x|y=1) - (1 - P1) e(p_x|y=0)``, ``e(p) = min(p, 1 - p)``."""

    @t_batch_mode_transform(expected_q=1)  # type: ignore[arg-type]  # subclass-typed self
    def forward(self, X: Tensor) -> Tensor:
        p, p1, p0, P1 = self._local(X)
        return (_class_error(p) - P1 * _class_error(p1) - (1.0 - P1) * _class_error(p0)).squeeze(-1)


class LocalMI(_Local):
    r"""Local mutual information between ``y`` at ``x`` and the level-set indicator of ``f(x)``."""

    @t_batch_mode_transform(expected_q=1)  # type: ignore[arg-type]  # subclass-typed self
    def forward(self, X: Tensor) -> Tensor:
        p, p1, p0, P1 = self._local(X)
        return (_binary_entropy(p) - P1 * _binary_entropy(p1) - (1.0 - P1) * _binary_entropy(p0)).squeeze(-1)


def latent_dim(latent: LatentGP) -> int:
    return int(latent.Z.shape[-1])
