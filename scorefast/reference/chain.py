"""Reference of gmm_chain: T single steps with the reference score and Langevin update."""

from __future__ import annotations

import math

import torch

from .gmm import gmm_score_ref
from .langevin import langevin_step_ref
from .noise import normal_ref, philox_words_ref, uniform_ref


def gmm_chain_ref(
    x: torch.Tensor,
    mixture,
    step_sizes,
    sigmas,
    *,
    mala: bool = False,
    seed: int = 0,
    step_offset: int = 0,
    particle_offset: int = 0,
    trajectory_every: int = 0,
):
    """(x after T steps, accepted (N,) int64, trajectory or None); x (N, D) is not modified.

    Step t uses a = step_sizes[t], the score of the mixture noised by sigmas[t] (None or 0:
    none), and the contract's z at step step_offset + t; MALA's uniform is word 0 of group
    ceil(D/4). The state is rounded to x's dtype after every step.
    """
    N, D = x.shape
    means, logw, cov = mixture.means.to(x.device), mixture.log_weights.to(x.device), mixture.cov.to(x.device)
    score_of = lambda y, s: gmm_score_ref(y, means, logw, mixture.kind, cov, s)  # noqa: E731
    x = x.clone()
    accepted = torch.zeros(N, dtype=torch.int64, device=x.device)
    frames = []
    s_x, lp_x = score_of(x, None) if mala else (None, None)
    for t, a in enumerate(float(v) for v in step_sizes):
        step = step_offset + t
        sig = None if sigmas is None or float(sigmas[t]) == 0 else float(sigmas[t])
        if not mala:
            s = score_of(x, sig)[0]
            x = langevin_step_ref(
                x,
                s.to(x.dtype),
                step_size=a,
                noise_scale=math.sqrt(2 * a),
                seed=seed,
                step=step,
                particle_offset=particle_offset,
            )
        else:
            z = normal_ref(N, D, seed, step, particle_offset, x.device).double()
            y = (x.double() + a * s_x + math.sqrt(2 * a) * z).to(x.dtype)
            s_y, lp_y = score_of(y, None)
            back = ((x.double() - y.double() - a * s_y) ** 2).sum(1)
            log_alpha = lp_y - lp_x - back / (4 * a) + 0.5 * (z**2).sum(1)
            q = (D + 3) // 4
            u = uniform_ref(philox_words_ref(N, q + 1, seed, step, particle_offset, x.device)[:, q, 0]).double()
            acc = torch.log(u) < log_alpha
            accepted += acc
            x = torch.where(acc[:, None], y, x)
            s_x = torch.where(acc[:, None], s_y, s_x)
            lp_x = torch.where(acc, lp_y, lp_x)
        if trajectory_every and (t + 1) % trajectory_every == 0:
            frames.append(x.clone())
    traj = torch.stack(frames) if frames else None
    return x, accepted, traj
