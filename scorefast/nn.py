"""Drop-in training pieces: a small noise-conditional score network and a DSM loss module."""

from __future__ import annotations

import math

import torch
from torch import nn

from .dsm import dsm_loss, dsm_perturb
from .ops._common import acc_dtype


def geometric_sigmas(sigma_max: float, sigma_min: float, num_levels: int) -> torch.Tensor:
    """sigma_max > ... > sigma_min, geometrically spaced (NCSN's schedule), float64 (L,)."""
    if not (sigma_max > sigma_min > 0) or num_levels < 2:
        raise ValueError("need sigma_max > sigma_min > 0 and num_levels >= 2")
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), num_levels, dtype=torch.float64))


class NoiseConditionalScoreNet(nn.Module):
    """MLP score model s(x, sigma) for low-dimensional data.

    log(sigma) goes through a Fourier embedding, is concatenated with x, and the MLP output is
    divided by sigma, so the network only learns the sigma-free part of the score (NCSN v2).

    Args:
        dim: D, the data dimension.
        hidden: width of the hidden layers (default 128).
        layers: number of hidden layers (default 3).
        embedding: size of the sigma embedding (default 16, even).

    forward(x (N, D), sigma (N,) or float) -> (N, D).
    """

    def __init__(self, dim: int, hidden: int = 128, layers: int = 3, embedding: int = 16):
        super().__init__()
        if embedding % 2:
            raise ValueError(f"embedding must be even, got {embedding}")
        self.dim = dim
        self.register_buffer("freqs", torch.linspace(0.25, 4.0, embedding // 2))
        blocks = []
        width = dim + embedding
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        blocks.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.dim() == 0:
            sigma = sigma.expand(x.shape[0])
        phase = torch.log(sigma)[:, None] * self.freqs[None, :]
        h = torch.cat((x, torch.sin(phase), torch.cos(phase)), dim=1)
        return self.net(h) / sigma[:, None]


class DSMLoss(nn.Module):
    """Denoising score matching over a set of noise levels, with the fused ops.

    Each call draws one level per sample (uniformly, from a private generator), perturbs x
    with dsm_perturb, evaluates ``model(x_tilde, sigma)`` and returns dsm_loss; the noise is
    regenerated from (seed, step) in the loss's forward and backward, never stored.

    Args:
        sigmas: (L,) noise levels (e.g. geometric_sigmas(...)).
        weighting_power: p in sigma^p (2: NCSN).
        parametrization: 'score' or 'eps'.
        seed: seed of the noise and of the level draws; call with a new ``step`` each iteration.
        backend: scorefast backend of the fused ops.

    forward(model, x (B, ...), step, *, sample_offset=0, global_batch=None, reduction='mean'):
    ``x`` may be the slice ``[sample_offset, sample_offset + B)`` of a global batch of
    ``global_batch`` samples (data-parallel ranks, micro-batches): sample ``b`` then gets the
    level and the noise of global sample ``sample_offset + b``, so the slices' per-sample losses
    are those of the whole batch. The defaults (the whole batch) are the plain call.
    ``reduction`` as dsm_loss ('none': per-sample losses (B,), to weight across slices).
    """

    def __init__(
        self, sigmas, weighting_power: float = 2.0, parametrization: str = "score", seed: int = 0, backend: str = "auto"
    ):
        super().__init__()
        self.register_buffer("sigmas", torch.as_tensor(sigmas, dtype=torch.float64))
        self.weighting_power = weighting_power
        self.parametrization = parametrization
        self.seed = seed
        self.backend = backend

    def draw_sigmas(self, batch: int, step: int, device, dtype) -> torch.Tensor:
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + step) % 2**63)
        idx = torch.randint(0, len(self.sigmas), (batch,), generator=g)
        return self.sigmas.cpu()[idx].to(device=device, dtype=dtype)

    def forward(
        self,
        model,
        x: torch.Tensor,
        step: int,
        *,
        sample_offset: int = 0,
        global_batch: int | None = None,
        reduction: str = "mean",
    ) -> torch.Tensor:
        acc = acc_dtype(x.dtype)
        B = x.shape[0]
        if global_batch is None:
            if sample_offset != 0:
                # The levels are the first draws of the step's generator: a slice needs the
                # global batch's draws, so their number must be given.
                raise ValueError(f"global_batch is required with sample_offset ({sample_offset}) != 0")
            sigma = self.draw_sigmas(B, step, x.device, acc)
        else:
            if isinstance(sample_offset, bool) or not isinstance(sample_offset, int) or sample_offset < 0:
                raise ValueError(f"sample_offset must be an int >= 0, got {sample_offset!r}")
            if isinstance(global_batch, bool) or not isinstance(global_batch, int) or global_batch < 1:
                raise ValueError(f"global_batch must be an int >= 1, got {global_batch!r}")
            if sample_offset + B > global_batch:
                raise ValueError(
                    f"x (samples [{sample_offset}, {sample_offset + B})) must lie within global_batch = {global_batch}"
                )
            sigma = self.draw_sigmas(global_batch, step, x.device, acc)[sample_offset : sample_offset + B]
        kw = dict(seed=self.seed, step=step, particle_offset=sample_offset, backend=self.backend)
        x_tilde = dsm_perturb(x, sigma, **kw)
        pred = model(x_tilde, sigma.to(x.dtype))
        return dsm_loss(
            pred,
            x,
            sigma,
            weighting_power=self.weighting_power,
            parametrization=self.parametrization,
            reduction=reduction,
            **kw,
        )
