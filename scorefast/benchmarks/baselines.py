"""The PyTorch code the scorefast ops are measured against: what users write without them.

Shared by the case modules (gmm_matmul is both the gmm_score baseline and the score of the
eager sampler loops). The mixture forms take it in the kernel form of the op
(``GaussianMixture.kernel_params``).
"""

from __future__ import annotations

import torch


def eager_langevin(x, s, a, b):
    """The eager PyTorch step every user writes: x + a*s + b*randn_like(x)."""
    return x + a * s + b * torch.randn_like(x)


def gmm_direct(x, means, inv_var, factor, log_const):
    """Score and log p with an (N, K, D) intermediate (what most code writes).

    x (N, D); means (K, D); inv_var (K, 1 or D) or factor (K, D, D) for full covariances;
    log_const (K,). Returns (score (N, D), log p (N,)).
    """
    diff = x[:, None, :] - means[None]  # (N, K, D)
    if factor is not None:
        t = torch.einsum("nkd,kde->nke", diff, factor)
        quad = (t * t).sum(-1)
        sk = -torch.einsum("kde,nke->nkd", factor, t)
    else:
        h = inv_var[None]  # (1, K, 1 or D)
        quad = (h * diff * diff).sum(-1)
        sk = -h * diff
    lj = log_const[None] - 0.5 * quad
    log_p = torch.logsumexp(lj, 1)
    r = torch.exp(lj - log_p[:, None])
    return (r[:, :, None] * sk).sum(1), log_p


def gmm_matmul(x, means, inv_var, factor, log_const):
    """Score and log p by matmuls, the best PyTorch form: squared distances by the expansion
    |x|^2 - 2 x.mu + |mu|^2 (weighted for diagonal covariances; whitened by each component's
    factor for full ones), logsumexp, and the score as matmuls of the responsibilities. No
    (N, K, D) tensor for isotropic/diagonal mixtures. Arguments and result as gmm_direct.
    """
    if factor is not None:  # whitened coordinates, per component (K, N, D)
        xw = torch.einsum("nd,kde->kne", x, factor)
        mw = torch.einsum("kd,kde->ke", means, factor)
        t = xw - mw[:, None, :]
        quad = (t * t).sum(-1).T
        lj = log_const[None] - 0.5 * quad
        log_p = torch.logsumexp(lj, 1)
        r = torch.exp(lj - log_p[:, None])
        sk = torch.einsum("kde,kne->knd", factor, t)
        return -torch.einsum("nk,knd->nd", r, sk), log_p
    if inv_var.shape[1] == 1:
        h = inv_var[:, 0]  # (K,)
        quad = ((x * x).sum(1, keepdim=True) - 2 * x @ means.T + (means * means).sum(1)) * h
        lj = log_const[None] - 0.5 * quad
        log_p = torch.logsumexp(lj, 1)
        w = torch.exp(lj - log_p[:, None]) * h
        return w @ means - w.sum(1, keepdim=True) * x, log_p
    hm = inv_var * means  # (K, D)
    quad = (x * x) @ inv_var.T - 2 * x @ hm.T + (hm * means).sum(1)
    lj = log_const[None] - 0.5 * quad
    log_p = torch.logsumexp(lj, 1)
    r = torch.exp(lj - log_p[:, None])
    return r @ hm - x * (r @ inv_var), log_p


def eager_dsm(x, pred, sigma):
    """The DSM step users write, z from randn_like and kept for the backward.

    x, pred (B, D); sigma (B,). Returns (x_tilde = x + sigma z, the mean NCSN loss).
    """
    z = torch.randn_like(x)
    x_tilde = x + sigma[:, None] * z
    loss = 0.5 * (sigma**2 * ((pred + z / sigma[:, None]) ** 2).sum(1)).mean()
    return x_tilde, loss
