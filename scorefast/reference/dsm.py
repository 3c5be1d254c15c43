"""Reference of the denoising score matching ops: the definition the kernels are tested against.

For data x [B, ...] viewed as [B, D], per-sample noise levels sigma [B] and the contract's
normals z = normal_like(x, seed, step) (scorefast.reference.noise):

    dsm_perturb:  x_tilde = x + sigma_b z
    dsm_loss:     l_b = 1/2 sigma_b^p ||s_b + z_b / sigma_b||^2      (score form, NCSN: p = 2)
                  l_b = ||eps_b - z_b||^2                            (eps form, DDPM)
                  reduced by mean (over the batch), sum, or none ([B]).
"""

from __future__ import annotations

import torch

from .noise import normal_ref


def _per_sample(sigma, B, dtype, device):
    s = torch.as_tensor(sigma, dtype=dtype, device=device)
    return s.expand(B) if s.dim() == 0 else s


def dsm_noise_ref(x: torch.Tensor, seed: int, step: int = 0, particle_offset: int = 0) -> torch.Tensor:
    """z for x viewed as [B, D], float32 [B, D]."""
    B = x.shape[0]
    D = x.numel() // B if B else 0
    return normal_ref(B, D, seed, step, particle_offset, x.device)


def dsm_perturb_ref(
    x: torch.Tensor, sigma, seed: int, step: int = 0, particle_offset: int = 0, compute_dtype=None
) -> torch.Tensor:
    """x + sigma_b z, in x's dtype and shape (math in float32, float64 for float64 x)."""
    cd = compute_dtype or (torch.float64 if x.dtype == torch.float64 else torch.float32)
    B = x.shape[0]
    z = dsm_noise_ref(x, seed, step, particle_offset).to(cd)
    s = _per_sample(sigma, B, cd, x.device)[:, None]
    return (x.reshape(B, -1).to(cd) + s * z).to(x.dtype).reshape(x.shape)


def dsm_loss_ref(
    pred: torch.Tensor,
    sigma,
    seed: int,
    step: int = 0,
    particle_offset: int = 0,
    *,
    power: float = 2.0,
    eps_form: bool = False,
    reduction: str = "mean",
    compute_dtype=None,
) -> torch.Tensor:
    """The DSM loss of predictions ``pred`` (score s or noise eps, shaped like x).

    Differentiable in ``pred`` by autograd (the reference gradient). Per-sample losses are
    float32 (float64 for float64 pred) before the reduction.
    """
    cd = compute_dtype or (torch.float64 if pred.dtype == torch.float64 else torch.float32)
    B = pred.shape[0]
    z = dsm_noise_ref(pred, seed, step, particle_offset).to(cd)
    p = pred.reshape(B, -1).to(cd)
    if eps_form:
        per = ((p - z) ** 2).sum(1)
    else:
        s = _per_sample(sigma, B, cd, pred.device)
        per = 0.5 * s**power * ((p + z / s[:, None]) ** 2).sum(1)
    if reduction == "mean":
        return per.mean()
    if reduction == "sum":
        return per.sum()
    return per
