"""Train a small epsilon-prediction model on a 2-D mixture with the fused VP loss, then sample it
with scorefast's fused DDPM scheduler and with diffusers' DDPMScheduler on the same noise.

    python examples/ddpm_2d.py [--train-steps 1500] [--out scorefast_out/ddpm.png]

The training loop (scorefast/cli_ddpm.py: train) is the usual DDPM one, with the perturbation and
the loss fused: ``dsm_vp_perturb`` forms x_t = sqrt(abar_t) x + sqrt(1 - abar_t) z and
``dsm_vp_loss`` regenerates the same z from its counter, so z is never stored. Sampling swaps
``diffusers.DDPMScheduler`` for ``scorefast.integrations.diffusers.DDPMScheduler`` (same config,
same ``step``); given the same generator, both draw the same noise and give the same samples up to
float rounding. Needs diffusers and matplotlib. ``scorefast ddpm`` runs the same thing.
"""

from __future__ import annotations

import argparse

import diffusers

from scorefast import targets
from scorefast.cli_ddpm import sample, train, write_pair
from scorefast.integrations.diffusers import DDPMScheduler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=1500)
    parser.add_argument("--particles", type=int, default=5000)
    parser.add_argument("--out", default="scorefast_out/ddpm.png")
    args = parser.parse_args()

    target = targets.two_mode_2d()
    model, config, loss = train(target, steps=args.train_steps, batch=256, timesteps=100, lr=3e-3, seed=0)
    fused = sample(model, DDPMScheduler.from_config(config), args.particles, seed=1)
    eager = sample(model, diffusers.DDPMScheduler.from_config(config), args.particles, seed=1)
    print(f"final loss {loss:.4f}; fused vs diffusers max |difference| {float((fused - eager).abs().max()):.2e}")
    print(f"fused samples: mean {fused.mean(0).tolist()}, exact {target.mean().tolist()}")
    print(f"plot: {write_pair(fused, eager, target, args.out)}")


if __name__ == "__main__":
    main()
