"""Train an energy-based model on a 2D mixture by contrastive divergence, with negatives from
SGLD and a replay buffer (every SGLD update is scorefast's fused step).

    python examples/ebm_2d.py [--steps 2000] [--out scorefast_out/ebm.png]

Loss: E(x_data) - E(x_negative) + alpha (E(x_data)^2 + E(x_negative)^2) (the small
regulariser keeps energies near 0). Data are scaled into [-1, 1], where the buffer lives.
"""

from __future__ import annotations

import argparse
import os

import torch
from torch import nn

from scorefast import targets
from scorefast.samplers import SGLDReplayBuffer


def energy_net(hidden: int = 64) -> nn.Module:
    return nn.Sequential(
        nn.Linear(2, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1), nn.Flatten(0)
    )


def train(
    steps: int = 2000,
    batch: int = 256,
    lr: float = 1e-3,
    alpha: float = 0.1,
    seed: int = 0,
    sgld_steps: int = 30,
    step_size: float = 1.0,
    noise_scale: float = 0.01,
):
    torch.manual_seed(seed)
    mix = targets.two_mode_2d()
    scale = 5.0  # modes at (+-2, 0) with unit variance fit in [-1, 1] after / 5
    data = (mix.sample(20000, seed=seed) / scale).float().clamp(-1, 1)
    model = energy_net()
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.0, 0.999))
    buffer = SGLDReplayBuffer(
        (2,), size=5000, steps=sgld_steps, step_size=step_size, noise_scale=noise_scale, max_grad_norm=None, seed=seed
    )
    g = torch.Generator().manual_seed(seed + 1)
    losses = []
    for _ in range(steps):
        pos = data[torch.randint(0, data.shape[0], (batch,), generator=g)]
        neg = buffer.sample(model, batch)
        e_pos, e_neg = model(pos), model(neg)
        loss = e_pos.mean() - e_neg.mean() + alpha * (e_pos.pow(2).mean() + e_neg.pow(2).mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return model, buffer, data, losses


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2000, help="training iterations")
    ap.add_argument("--seed", type=int, default=0, help="seed")
    ap.add_argument("--out", default=os.path.join("scorefast_out", "ebm.png"), help="PNG of the buffer")
    args = ap.parse_args(argv)
    model, buffer, data, losses = train(args.steps, seed=args.seed)
    neg = buffer.sample(model, 2000)
    for name, v in (("data", data[:5000]), ("SGLD negatives", neg), ("uniform", 2 * torch.rand(5000, 2) - 1)):
        print(f"{name:<15} std(x2) {v[:, 1].std().item():.3f}  mean|x1| {v[:, 0].abs().mean().item():.3f}")
    print(f"final loss {sum(losses[-50:]) / 50:.4f}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    b = buffer.buffer[:3000].numpy()
    ax.scatter(b[:, 0], b[:, 1], s=2, alpha=0.4, label="replay buffer")
    ax.scatter(data[:3000, 0], data[:3000, 1], s=2, alpha=0.2, label="data")
    ax.legend()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
