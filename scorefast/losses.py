"""Score matching objectives.

* ``dsm_loss`` / ``dsm_perturb``: denoising score matching, fused (re-exported from scorefast.dsm).
* ``implicit_score_matching``: Hyvarinen's objective E[tr(grad_x s(x)) + 1/2 ||s(x)||^2], with
  the exact trace (D backward passes; small D) or the sliced / Hutchinson estimator
  E_v[v^T grad_x(v^T s(x))] with Rademacher or Gaussian projections v. References, not fused.
"""

from __future__ import annotations

import torch

from .dsm import dsm_loss, dsm_perturb

__all__ = ["dsm_loss", "dsm_perturb", "implicit_score_matching"]


def implicit_score_matching(
    score_fn,
    x: torch.Tensor,
    *,
    method: str = "exact",
    projections: str = "rademacher",
    num_projections: int = 1,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Hyvarinen's implicit score matching objective of ``score_fn`` at data x (N, D).

    Args:
        score_fn: callable x (N, D) -> s(x) (N, D), differentiable in x (and its parameters).
        method: 'exact' (the trace of the Jacobian, D extra backward passes) or 'sliced'
            (Hutchinson: v^T J v averaged over ``num_projections`` random v).
        projections: 'rademacher' (v in {-1, 1}^D) or 'gaussian' (v ~ N(0, I)) for 'sliced'.
        generator: torch.Generator for the projections (reproducible estimates).
        reduction: 'mean' over points, 'sum', or 'none' ((N,)).

    Returns:
        The objective; differentiable w.r.t. score_fn's parameters (create_graph is used).
    """
    if x.dim() != 2:
        raise ValueError(f"x must have shape (N, D), got {list(x.shape)}")
    if method not in ("exact", "sliced"):
        raise ValueError(f"method must be 'exact' or 'sliced', got {method!r}")
    if projections not in ("rademacher", "gaussian"):
        raise ValueError(f"projections must be 'rademacher' or 'gaussian', got {projections!r}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    x = x.detach().requires_grad_(True)
    s = score_fn(x)
    if s.shape != x.shape:
        raise ValueError(f"score_fn must return the shape of x {list(x.shape)}, got {list(s.shape)}")
    N, D = x.shape
    if method == "exact":
        trace = torch.zeros(N, dtype=s.dtype, device=s.device)
        for d in range(D):
            (g,) = torch.autograd.grad(s[:, d].sum(), x, create_graph=True)
            trace = trace + g[:, d]
    else:
        if num_projections < 1:
            raise ValueError(f"num_projections must be >= 1, got {num_projections}")
        trace = torch.zeros(N, dtype=s.dtype, device=s.device)
        for _ in range(num_projections):
            if projections == "rademacher":
                v = torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(s.dtype) * 2 - 1
            else:
                v = torch.randn(x.shape, generator=generator, device=x.device, dtype=s.dtype)
            (g,) = torch.autograd.grad((s * v).sum(), x, create_graph=True)
            trace = trace + (g * v).sum(1)
        trace = trace / num_projections
    per = trace + 0.5 * (s * s).sum(1)
    if reduction == "mean":
        return per.mean()
    if reduction == "sum":
        return per.sum()
    return per
