"""``scorefast ddpm``: train a small epsilon-prediction model on a 2-D preset with the fused VP
loss, then sample it with the fused DDPM scheduler and with diffusers' own, on the same noise.

Training: x_t = sqrt(abar_t) x + sqrt(1 - abar_t) z (``dsm_vp_perturb``) and the loss
||eps_theta(x_t, t) - z||^2 (``dsm_vp_loss``), z regenerated from the counter in both and never
stored. Sampling: DDPM ancestral steps from x_T ~ N(0, I), once with
``scorefast.integrations.diffusers.DDPMScheduler`` and once with ``diffusers.DDPMScheduler``,
both drawing their noise from generators seeded alike, so the two sample sets are equal up to
float rounding (the run prints the largest difference). Needs diffusers.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from . import cli_args as argtypes

DATA_SCALE = 4.0  # the presets span about [-4, 4]; the model sees data / DATA_SCALE


class EpsMLP(nn.Module):
    """eps_theta(x_t, t) for 2-D data: an MLP on x_t and a sinusoidal embedding of t."""

    def __init__(self, timesteps: int, hidden: int = 128, dim: int = 2, frequencies: int = 16):
        super().__init__()
        self.timesteps = timesteps
        freqs = torch.exp(torch.linspace(0.0, math.log(1000.0), frequencies))
        self.register_buffer("freqs", freqs)
        self.net = nn.Sequential(
            nn.Linear(dim + 2 * frequencies, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, dim),
        )

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0]) / self.timesteps
        angles = t[:, None] * self.freqs.to(x.dtype)
        return self.net(torch.cat([x, angles.sin(), angles.cos()], dim=1))


def train(target, *, steps: int, batch: int, timesteps: int, lr: float, seed: int, progress=None):
    """An EpsMLP trained with the fused VP loss; returns (model, scheduler config, final loss)."""
    import diffusers

    from .dsm_vp import dsm_vp_loss, dsm_vp_perturb, vp_coefficients

    torch.manual_seed(seed)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=timesteps, clip_sample=False)
    model = EpsMLP(timesteps)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    data = target.sample(steps * batch, seed=seed).float() / DATA_SCALE
    loss = torch.tensor(float("nan"))
    for it in range(steps):
        x = data[it * batch : (it + 1) * batch]
        t = torch.randint(0, timesteps, (batch,), generator=g)
        alpha, sigma = vp_coefficients(t, scheduler.alphas_cumprod, dtype=x.dtype)
        x_t = dsm_vp_perturb(x, alpha, sigma, seed=seed, step=it)
        loss = dsm_vp_loss(model(x_t, t), x, alpha, sigma, seed=seed, step=it, parametrization="eps")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None:
            progress(it, float(loss.detach()))
    return model.eval(), scheduler.config, float(loss.detach())


@torch.no_grad()
def sample(model, scheduler, particles: int, seed: int) -> torch.Tensor:
    """DDPM ancestral sampling from x_T ~ N(0, I) with ``scheduler`` (fused or diffusers'),
    its noise from a generator seeded with ``seed``; returns samples in data units."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(particles, 2, generator=g)
    scheduler.set_timesteps(scheduler.config.num_train_timesteps)
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t), t, x, generator=g).prev_sample
    return x * DATA_SCALE


def add_parser(sub):
    from .targets import PRESETS

    p = sub.add_parser(
        "ddpm",
        help="train a 2-D epsilon model with the fused VP loss; sample it with fused and diffusers DDPM",
        description=__doc__,
    )
    p.add_argument("--target", choices=sorted(PRESETS), default="two_mode", help="2-D mixture preset to learn")
    p.add_argument("--train-steps", type=argtypes.int_in(1, 10**7), default=1500, help="Adam steps")
    p.add_argument("--batch", type=argtypes.int_in(1, 10**6), default=256, help="training batch")
    p.add_argument("--timesteps", type=argtypes.int_in(2, 10**5), default=100, help="DDPM timesteps T")
    p.add_argument("--lr", type=argtypes.positive_float, default=3e-3, help="Adam learning rate (cosine decay)")
    p.add_argument("--particles", type=argtypes.int_in(1, 10**7), default=5000, help="samples drawn by each scheduler")
    p.add_argument("--seed", type=argtypes.int_in(0, 2**63 - 1), default=0, help="seed of data, noise and init")
    p.add_argument("--out", default="scorefast_out/ddpm.png", help="plot of both sample sets (.png added if missing)")
    p.add_argument("--no-plot", action="store_true", help="skip the plot")
    p.add_argument("--json", default=None, help="write the statistics as JSON here")
    return p


def run(args, parser_error) -> dict:
    """Train and sample as the flags say; returns the target, both sample sets and the run's facts."""
    try:
        import diffusers
    except ImportError:
        parser_error("scorefast ddpm needs diffusers: pip install diffusers")
    from .integrations.diffusers import DDPMScheduler
    from .targets import PRESETS

    target = PRESETS[args.target]()
    start = time.perf_counter()
    model, config, loss = train(
        target, steps=args.train_steps, batch=args.batch, timesteps=args.timesteps, lr=args.lr, seed=args.seed
    )
    trained = time.perf_counter() - start
    ours = sample(model, DDPMScheduler.from_config(config), args.particles, args.seed + 1)
    theirs = sample(model, diffusers.DDPMScheduler.from_config(config), args.particles, args.seed + 1)
    facts = dict(
        target=args.target,
        train_steps=args.train_steps,
        final_loss=loss,
        train_seconds=trained,
        max_difference_fused_vs_diffusers=float((ours - theirs).abs().max()),
    )
    return dict(target=target, fused=ours, diffusers=theirs, facts=facts)


def write_pair(ours: torch.Tensor, theirs: torch.Tensor, target, path: str) -> str:
    """Side-by-side scatter of the fused and diffusers samples over the target's modes."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = path if path.lower().endswith(".png") else path + ".png"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharex=True, sharey=True)
    for ax, pts, title in ((axes[0], ours, "scorefast fused DDPM"), (axes[1], theirs, "diffusers DDPM")):
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4)
        m = target.means.cpu()
        ax.scatter(m[:, 0], m[:, 1], marker="x", color="red", s=40)
        ax.set_title(title)
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
