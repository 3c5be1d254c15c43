"""Where float32 math of the Gaussian-mixture kernels could overflow, decided cheaply.

The kernels compute in float32 for float32 and 16-bit storage. Far from the modes (about 1e19
standard deviations) a quadratic term (x - mu)^T P (x - mu) passes float32's largest value
even where the score and log-density are finite; its inf then turns into NaN. The points where
that can happen are recomputed in float64 by the callers (``scorefast.gmm``, ``scorefast.chain``).

The bound. With R = max_d |x_d| + max |mu| (every coordinate of x - mu_k is at most R) and h at
least the largest eigenvalue of any component's precision, every float32 intermediate of the
kernels is at most

    B = K D^2 max(1, h) max(1, R)^2:

x - mu_k (R), the sum of squares before an isotropic precision scales it (D R^2), the quadratic
term (D h R^2, or D^2 h R^2 through an explicit precision matrix), the factor products
(sqrt(D h) R), and the score's sums over K components (each at most D^1.5 h R, h mu_k and h x
included). A point is at risk where B exceeds float32's largest value over SAFETY (64: the
float32 rounding of the parameters, the sums' order); per-point noise levels are at risk
where sigma^2 is (the kernels square sigma in float32). Rows that hold inf or NaN are never at
risk: float64 gives them the same inf or NaN.

Two tests, cheapest first:
- ``log_probs_in_range`` reads the kernel's own log-densities (N values, not N x D). A finite
  log p bounds the quadratic term of the component that holds the most weight, hence the
  distance of x from that component's mean, hence R for every point: when the resulting B is
  in range, nothing overflowed and the results stand. (An overflow never gives a finite
  log-joint: an inf quadratic term gives -inf, an inf - inf gives NaN.)
- ``rows_at_risk`` bounds B point by point from x (O(N D)), for the rare calls the first test
  does not clear and for chains before they start.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import NamedTuple

import torch

FLOAT32_MAX = torch.finfo(torch.float32).max
SAFETY = 64.0
SAFE = FLOAT32_MAX / SAFETY  # the largest bound B taken as safe


class MixtureRange(NamedTuple):
    """Magnitudes of a mixture in float32 kernel form (``GaussianMixture.kernel_params``)."""

    num_components: int  # K
    max_mean: float  # max |mu_kd|
    max_precision: float  # h
    scale: float  # K D^2 max(1, h): B = scale * max(1, R)^2
    max_log_const: float  # >= every component's log w_k - D/2 log 2 pi - log det / 2
    largest_variance: float  # >= the largest eigenvalue of any component's covariance


# Keyed by the id of the parameters' log_const tensor (a fresh tensor for every parameter set,
# which the mixture caches); the weak reference tells a live key from a reused id.
_CACHE: dict[int, tuple[weakref.ref, MixtureRange]] = {}
_CACHE_SIZE = 64


def mixture_range(params: dict, per_point: bool, largest_variance: Callable[[], float]) -> MixtureRange:
    """The magnitudes of the kernel parameters ``params`` (cached per parameter set).

    ``per_point``: the parameters leave sigma^2 to the kernel (then ``var`` holds the variances,
    or the covariances' eigenvalues, before it). ``largest_variance``: () -> a float at least the
    largest eigenvalue of any component's covariance, noise folded in as in ``params``; called
    only when the parameters are new.
    """
    key = params["log_const"]
    hit = _CACHE.get(id(key))
    if hit is not None and hit[0]() is key:
        return hit[1]
    means, var, inv_var, factor = (params[n] for n in ("means", "var", "inv_var", "factor"))
    K, D = means.shape
    h = float(inv_var.double().amax())
    if factor is not None:  # ||F_k||_2^2 <= ||F_k||_F^2
        h *= float(factor.double().square().sum((1, 2)).amax())
    log_const = params["log_const"].double()
    if per_point:  # the kernel subtracts log det(C_k + sigma^2 I) / 2 <= log det(C_k) / 2
        log_det = torch.log(var.double()).sum(1) * (D // var.shape[1])
        log_const = log_const - 0.5 * log_det
    r = MixtureRange(
        num_components=K,
        max_mean=float(means.double().abs().amax()),
        max_precision=h,
        scale=K * D * D * max(1.0, h),
        max_log_const=float(log_const.amax()),
        largest_variance=float(largest_variance()),
    )
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.clear()
    _CACHE[id(key)] = (weakref.ref(key), r)
    return r


def _in_range(bound: float) -> bool:
    return bound <= SAFE  # False for NaN


def log_probs_in_range(log_prob: torch.Tensor, mr: MixtureRange, max_sigma2: float = 0.0) -> bool:
    """True when the kernel's log-densities ``log_prob`` (N,) prove every point in range.

    For each point, the component j of largest log-joint l_j = c_j - q_j / 2 has
    l_j >= log p - log K, so its quadratic term q_j <= Q = 2 (max c - min log p + log K) and
    ||x - mu_j||^2 <= Q (largest variance + largest sigma^2): R <= 2 max |mu| + sqrt of that.
    ``max_sigma2``: the largest per-point sigma^2 (0 without).
    """
    if log_prob.numel() == 0:
        return True
    lowest = float(log_prob.amin())
    if not (math.isfinite(lowest) and _in_range(max_sigma2)):
        return False
    # 1% and 1 over: the float32 rounding of the kernel's l_j and log p
    q = 2.0 * (mr.max_log_const - lowest + math.log(mr.num_components)) * 1.01 + 1.0
    reach = 2.0 * mr.max_mean + math.sqrt(max(q, 0.0) * (mr.largest_variance + max_sigma2))
    if not math.isfinite(reach):  # (max() would drop a NaN)
        return False
    reach = max(1.0, reach)
    return _in_range(mr.scale * reach * reach)


def rows_at_risk(
    x: torch.Tensor, mr: MixtureRange, sigma2: torch.Tensor | None = None, growth: float = 1.0
) -> torch.Tensor:
    """Bool (N,): the points of x (N, D) whose float32 math could overflow.

    sigma2: per-point sigma^2 (N,) in float64, or None. growth: a factor on B (a chain's steps
    multiply the score by the step size).
    """
    top = x.detach().abs().amax(1).double()
    reach = (top + mr.max_mean).clamp(min=1.0)
    finite = torch.isfinite(top)
    risk = reach * reach * (mr.scale * growth) > SAFE
    if sigma2 is not None:
        risk = risk | (sigma2 > SAFE)
    return risk & finite


def chain_at_risk(x: torch.Tensor, params: dict, max_step_size: float, max_sigma2: float) -> bool:
    """Whether a float32 chain from x (N, D) could overflow: a start point at risk, or a noise
    level whose sigma^2 passes float32's range. params: the mixture's float32 per-point kernel
    form; max_step_size, max_sigma2: the largest step size and sigma^2 of the schedule. The
    steps multiply the score by the step size a, and MALA's proposal densities take
    |a s|^2 / a, about a h times the quadratic term: B grows by max(1, a) max(1, a h)."""
    if not checks_apply(x):
        return False
    if not _in_range(max_sigma2):
        return True
    mr = mixture_range(params, True, lambda: float(params["var"].double().amax()))
    growth = max(1.0, max_step_size) * max(1.0, max_step_size * mr.max_precision)
    return bool(rows_at_risk(x, mr, growth=growth).any())


def checks_apply(x: torch.Tensor) -> bool:
    """Whether to look at all: float32 math, eager, not while a CUDA graph is captured (the
    decision reads a value back to the host)."""
    if x.dtype == torch.float64 or torch.compiler.is_compiling():
        return False
    return not stream_capturing(x)


def stream_capturing(x: torch.Tensor) -> bool:
    """Whether x's device is capturing a CUDA graph (where no value may be read back)."""
    return x.device.type == "cuda" and torch.cuda.is_current_stream_capturing()
