"""The ``scorefast`` command line: sample (the main job), train, bench, verify, backends.

scorefast sample            # Langevin on the two-mode 2D mixture, stats + PNG
scorefast train             # fused DSM training on a 2D mixture, then annealed Langevin
scorefast bench --quick     # langevin_step timings, table + JSON in bench/results/
scorefast verify            # every op on every backend here against its reference (the CI gate)
scorefast backends          # which backends run here, and why not
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import torch

from . import cli_args as argtypes
from . import cli_ddpm


def _add_sample(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="sample the two-mode 2D mixture with fused Langevin steps",
        description=(
            "Sample a 2D mixture (default: modes at (+-2, 0), unit variance, equal weights) with "
            "Langevin dynamics through the fused scorefast.langevin_step (ULA, annealed Langevin "
            "or MALA), print the fraction of particles per mode against the true weights, the "
            "mean and covariance next to the exact values, and write a PNG with the target's "
            "density contours."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--target",
        default="two_mode",
        choices=("two_mode", "ring8", "grid25", "anisotropic"),
        help="preset mixture to sample",
    )
    p.add_argument(
        "--sampler",
        default="ula",
        choices=("ula", "annealed", "mala"),
        help="unadjusted Langevin, annealed Langevin over noise levels, or Metropolis-adjusted",
    )
    p.add_argument("--levels", type=argtypes.int_in(2, 10**6), default=10, help="annealed: number of noise levels")
    p.add_argument(
        "--epsilon",
        type=argtypes.positive_float,
        default=1e-4,
        help="annealed: NCSN's base step epsilon (level i steps a_i = epsilon/2 * sigma_i^2 / sigma_L^2)",
    )
    p.add_argument(
        "--particles", type=argtypes.int_in(1, argtypes.MAX_COUNT), default=10000, help="number of particles (chains)"
    )
    p.add_argument("--steps", type=argtypes.int_in(1, argtypes.MAX_STEPS), default=1000, help="Langevin steps")
    p.add_argument("--step-size", type=argtypes.positive_float, default=0.02, help="a in x + a*score + sqrt(2a)*z")
    p.add_argument(
        "--init-scale", type=argtypes.positive_float, default=4.0, help="particles start from N(0, init_scale^2 I)"
    )
    p.add_argument("--seed", type=argtypes.seed, default=0, help="seed of the initial state and the Langevin noise")
    p.add_argument(
        "--backend", type=argtypes.backend, default="auto", help="auto, reference, cpp, cuda, triton or numba"
    )
    p.add_argument("--device", type=argtypes.device, default="cpu", help="torch device of the particles")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"), help="particle dtype")
    p.add_argument(
        "--out",
        type=argtypes.plot_file,
        default=os.path.join("scorefast_out", "sample.png"),
        help="image of the scatter plot",
    )
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument(
        "--json", type=argtypes.output_file, default=None, help="also write the summary statistics to this JSON file"
    )
    p.add_argument(
        "--checkpoint",
        type=argtypes.output_file,
        default=None,
        help="write the chain's state (particles, step, seed, settings, diagnostics) to this file "
        "every --checkpoint-every steps and at the end, atomically",
    )
    p.add_argument(
        "--checkpoint-every",
        type=argtypes.int_in(1, argtypes.MAX_STEPS),
        default=None,
        help="steps between checkpoints (default with --checkpoint: 1000)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from --checkpoint (run the same command line plus --resume): the particles "
        "equal the uninterrupted run's",
    )
    p.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")
    p.set_defaults(func=cmd_sample)


def _progress(iterable, enabled: bool | None, total: int, desc: str):
    from scorefast.samplers import progress_bar

    return progress_bar(iterable, total, enabled, desc, unit="step")


def _check_checkpoint_flags(args, parser_error, sharded: bool) -> None:
    """--checkpoint-every and --resume need --checkpoint; --resume needs the file."""
    if args.checkpoint is None:
        for flag, given in (("--checkpoint-every", args.checkpoint_every is not None), ("--resume", args.resume)):
            if given:
                parser_error(f"argument {flag}: needs --checkpoint PATH")
        return
    if sharded:
        parser_error("argument --checkpoint: not supported with several processes (torchrun)")
    if args.checkpoint_every is None:
        args.checkpoint_every = 1000
    if args.resume and not os.path.isfile(args.checkpoint):
        parser_error(f"argument --resume: the checkpoint {args.checkpoint!r} does not exist")


def _chain_diagnostics(args, total: int, burn_in: int):
    """The R-hat / ESS accumulator of a run of ``total`` steps: the first 64 particles after
    ``burn_in`` steps, at most 1024 draws each."""
    from scorefast.diagnostics import ChainDiagnostics

    return ChainDiagnostics(max_chains=64, max_coords=2, every=max(1, (total - burn_in) // 1024), burn_in=burn_in)


def cmd_sample(args, parser_error) -> int:
    from scorefast import distributed

    # Launched by torchrun: join its process group for the run (NCCL on GPUs, gloo on CPUs).
    with distributed.process_group(args.device):
        return _sample(args, parser_error)


def _sample(args, parser_error) -> int:
    from scorefast import distributed, samplers, targets
    from scorefast.checkpoint import CheckpointError
    from scorefast.diagnostics import summarize
    from scorefast.nn import geometric_sigmas

    device = distributed.local_device(args.device)  # under torchrun, cuda is cuda:LOCAL_RANK
    argtypes.check_backend(parser_error, args.backend, device, "langevin_step")
    dtype = getattr(torch, args.dtype)
    target = targets.PRESETS[args.target](device=device)

    g = torch.Generator(device=device).manual_seed(args.seed)
    x = args.init_scale * torch.randn(args.particles, 2, generator=g, device=device, dtype=dtype)
    # Sharded over processes: every rank draws the same start and runs its rows, with their
    # global ids as particle_offset, so the particles are the one-process run's bit for bit.
    rows, sharded = distributed.shard_range(args.particles), distributed.world_size() > 1
    if sharded:
        x = x[rows].clone()
        args.progress = args.progress if distributed.is_main() else False
    _check_checkpoint_flags(args, parser_error, sharded)
    resumable = dict(checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every or 0, resume=args.resume)
    start = time.perf_counter()
    extra = {}
    try:
        if args.sampler == "ula":
            chains = _chain_diagnostics(args, args.steps, burn_in=args.steps // 2)

            def score(y):  # a plain function: the stepwise loop of langevin_step_, not the fused chain
                return target.score(y)

            samplers.langevin(
                score,
                x,
                steps=args.steps,
                step_size=args.step_size,
                seed=args.seed,
                particle_offset=rows.start,
                progress=args.progress,
                backend=args.backend,
                chain_diagnostics=chains,
                **resumable,
            )
        elif args.sampler == "annealed":
            spread = float((target.means[:, None] - target.means[None]).norm(dim=-1).max())
            sigmas = geometric_sigmas(max(spread, 1.0), 0.01, args.levels)
            steps_per_level = max(1, args.steps // args.levels)
            total = steps_per_level * args.levels
            # diagnostics of the last level, the one that samples the target
            chains = _chain_diagnostics(args, total, burn_in=total - steps_per_level)
            samplers.annealed_langevin(
                target.score,
                x,
                sigmas,  # a mixture: the fused chain
                steps_per_level=steps_per_level,
                epsilon=args.epsilon,
                seed=args.seed,
                particle_offset=rows.start,
                progress=args.progress,
                backend=args.backend,
                chain_diagnostics=chains,
                **resumable,
            )
            extra["sigmas"] = [float(v) for v in sigmas]
        else:
            chains = _chain_diagnostics(args, args.steps, burn_in=args.steps // 2)
            _, diag = samplers.mala(
                target.score,
                target.log_prob,
                x,
                steps=args.steps,
                step_size=args.step_size,
                seed=args.seed,
                particle_offset=rows.start,
                progress=args.progress,
                backend=args.backend,
                chain_diagnostics=chains,
                **resumable,
            )
            rates = diag["acceptance_rate"]
            extra["acceptance_rate"] = distributed.mean_acceptance_rate(rates) if sharded else float(rates.mean())
    except CheckpointError as exc:  # the file given on the command line
        parser_error(f"argument --checkpoint: {exc}")
    record = chains.record()
    if sharded:  # every rank's first chains in rank order: the global first max_chains are at the front
        record = distributed.gather(record)
        record = None if record is None else record[: chains.max_chains]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start

    if sharded:  # statistics over every rank's particles; rank 0 reports them, the others stay quiet
        elapsed = distributed.all_reduce_max(elapsed)
        stats = summary_statistics(x, target, sharded=True)
        x = x if args.no_plot else distributed.gather(x)  # all particles on rank 0 for the plot
        if not distributed.is_main():
            return 0
    else:
        stats = summary_statistics(x, target)
    stats.update(
        target=args.target,
        sampler=args.sampler,
        particles=args.particles,
        steps=args.steps,
        step_size=args.step_size,
        seed=args.seed,
        backend=args.backend,
        seconds=elapsed,
        particle_steps_per_second=args.particles * args.steps / elapsed,
        **extra,
    )
    stats["chain_diagnostics"] = dict(summarize(record).as_dict(), burn_in=chains.burn_in, thin=chains.thin)
    print(format_summary(stats))
    print(format_chain_diagnostics(stats["chain_diagnostics"]))
    if "acceptance_rate" in extra:
        print(f"MALA acceptance rate {extra['acceptance_rate']:.3f}")
    if args.json:
        from scorefast.benchmarks.harness import write_json

        write_json(stats, args.json)
    if not args.no_plot:
        write_scatter(
            x, target, args.out, title=f"{args.sampler}, {args.target}, {args.particles} particles, {args.steps} steps"
        )
        print(f"plot: {args.out}")
    return 0


def format_chain_diagnostics(d: dict) -> str:
    """One line: the largest R-hat and the smallest bulk and tail ESS over the coordinates."""

    def num(v, spec):
        return "n/a" if v is None else format(v, spec)

    return (
        f"R-hat {num(d['rhat_max'], '.4f')} (max), bulk ESS {num(d['ess_bulk_min'], '.0f')}, tail ESS "
        f"{num(d['ess_tail_min'], '.0f')} (min) over {d['chains']} chains x {d['draws']} draws "
        f"(every {d['thin']} steps after step {d['burn_in']})"
    )


def summary_statistics(x: torch.Tensor, target, sharded: bool = False) -> dict:
    """Fraction of particles per mode (nearest by responsibility), mean and covariance vs exact.

    ``sharded``: x is this rank's rows of a torchrun run, and the statistics are of every rank's
    particles: counts summed exactly, mean and covariance from float64 sums (equal to one
    process's up to rounding)."""
    finite = torch.isfinite(x).all(dim=1)
    if sharded:
        from scorefast import distributed

        fractions = distributed.mode_fractions(x, target)
        mean, cov = distributed.mean_and_covariance(x[finite])
        non_finite = int(distributed.all_reduce_sum((~finite).sum()))
    else:
        xf = x[finite].double()
        k = target.responsibilities(xf).argmax(dim=1)
        fractions = torch.bincount(k, minlength=target.num_components).double() / max(1, xf.shape[0])
        mean = xf.mean(0)
        cov = torch.cov(xf.T) if xf.shape[0] > 1 else torch.full((2, 2), float("nan"))
        non_finite = int((~finite).sum())
    return {
        "mode_means": target.means.tolist(),
        "mode_fraction": fractions.tolist(),
        "mode_fraction_exact": target.weights.tolist(),
        "mean": mean.tolist(),
        "mean_exact": target.mean().tolist(),
        "covariance": cov.tolist(),
        "covariance_exact": target.covariance().tolist(),
        "non_finite_particles": non_finite,
    }


def format_summary(s: dict) -> str:
    def vec(v):
        return "[" + ", ".join(f"{a:+.3f}" for a in v) + "]"

    lines = ["mode            fraction   exact"]
    for m, f, e in zip(s["mode_means"], s["mode_fraction"], s["mode_fraction_exact"]):
        lines.append(f"{vec(m):<15} {f:8.3f}  {e:6.3f}")
    lines.append(f"mean        {vec(s['mean'])}   exact {vec(s['mean_exact'])}")
    for i, (row, row_e) in enumerate(zip(s["covariance"], s["covariance_exact"])):
        label = "covariance" if i == 0 else ""
        lines.append(f"{label:<11} {vec(row)}   exact {vec(row_e)}")
    if s["non_finite_particles"]:
        lines.append(f"non-finite particles: {s['non_finite_particles']}")
    if "seconds" in s:
        lines.append(f"time {s['seconds']:.2f} s, {s['particle_steps_per_second']:.3g} particle-steps/s")
    return "\n".join(lines)


def write_scatter(x: torch.Tensor, target, path: str, title: str = "") -> None:
    """Scatter of the first two coordinates over the target's density contours, with the
    fraction of particles per mode next to each mode's true weight."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = x.detach().double().cpu()
    pts = pts[torch.isfinite(pts).all(dim=1)]
    means = target.means.cpu()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    lo = torch.minimum(pts.min(0).values if len(pts) else means.min(0).values, means.min(0).values) - 1
    hi = torch.maximum(pts.max(0).values if len(pts) else means.max(0).values, means.max(0).values) + 1
    gx, gy = torch.linspace(float(lo[0]), float(hi[0]), 200), torch.linspace(float(lo[1]), float(hi[1]), 200)
    xx, yy = torch.meshgrid(gx, gy, indexing="xy")
    grid = torch.stack((xx.reshape(-1), yy.reshape(-1)), 1).double().to(target.means.device)
    dens = torch.exp(target.log_prob(grid, backend="reference")).reshape(200, 200).cpu()
    ax.contour(xx, yy, dens, levels=8, colors="gray", linewidths=0.6)
    show = pts[:20000]
    ax.scatter(show[:, 0], show[:, 1], s=2, alpha=0.3, label="samples")
    ax.scatter(means[:, 0], means[:, 1], marker="x", color="red", s=60, label="modes")
    if len(pts):
        k = target.responsibilities(pts.to(target.means.device)).argmax(1).cpu()
        found = torch.bincount(k, minlength=target.num_components).double() / len(pts)
        for m, f, w in zip(means, found, target.weights.cpu()):
            ax.annotate(
                f"{f:.2f} / {w:.2f}", (float(m[0]), float(m[1])), fontsize=7, xytext=(4, 4), textcoords="offset points"
            )
    ax.set_aspect("equal")
    ax.set_title(title + "\n(per mode: fraction found / true weight)", fontsize=9)
    ax.legend(loc="upper right")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a noise-conditional score network with the fused DSM loss, then sample it",
        description=(
            "Train a small noise-conditional score network on a preset 2D mixture with the fused "
            "denoising score matching loss over a geometric noise schedule, sample it with "
            "annealed Langevin through the fused step, print per-mode fractions against the "
            "true weights and write a PNG."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--target",
        default=None,
        choices=("two_mode", "ring8", "grid25", "anisotropic"),
        help="preset data distribution (default: two_mode, or the checkpoint's with --load)",
    )
    p.add_argument(
        "--steps",
        type=argtypes.int_in(0, argtypes.MAX_STEPS),
        default=3000,
        help="training iterations (0 with --load: sample only)",
    )
    p.add_argument(
        "--batch",
        type=argtypes.int_in(1, argtypes.MAX_COUNT),
        default=512,
        help="training batch size (the global batch: under torchrun the processes split it)",
    )
    p.add_argument("--lr", type=argtypes.positive_float, default=2e-3, help="Adam learning rate")
    p.add_argument("--levels", type=argtypes.int_in(2, 10**6), default=10, help="number of noise levels L")
    p.add_argument(
        "--sigma-max",
        type=argtypes.positive_float,
        default=None,
        help="largest noise level (default: the largest distance between data points)",
    )
    p.add_argument("--sigma-min", type=argtypes.positive_float, default=0.02, help="smallest noise level")
    p.add_argument("--hidden", type=argtypes.int_in(1, 2**16), default=128, help="hidden width of the score network")
    p.add_argument(
        "--parametrization",
        default="score",
        choices=("score", "eps"),
        help="the network predicts the score, or the noise (eps) with score = -eps/sigma",
    )
    p.add_argument(
        "--samples", type=argtypes.int_in(1, argtypes.MAX_COUNT), default=2000, help="particles sampled after training"
    )
    p.add_argument(
        "--steps-per-level", type=argtypes.int_in(1, 2**31), default=100, help="annealed Langevin steps per level"
    )
    p.add_argument("--epsilon", type=argtypes.positive_float, default=1e-4, help="annealed Langevin base step (NCSN's)")
    p.add_argument(
        "--seed", type=argtypes.int_in(0, 2**63 - 1), default=0, help="seed of data, noise and initialisation"
    )
    p.add_argument("--backend", type=argtypes.backend, default="auto", help="backend of the fused ops")
    p.add_argument(
        "--save",
        type=argtypes.output_file,
        default=None,
        help="write a checkpoint (model, optimizer, schedule, losses) here",
    )
    p.add_argument("--load", default=None, help="resume from this checkpoint")
    p.add_argument(
        "--out",
        type=argtypes.plot_file,
        default=os.path.join("scorefast_out", "train.png"),
        help="image of the samples",
    )
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--json", type=argtypes.output_file, default=None, help="also write the summary to this JSON file")
    p.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="show progress bars (default: when stderr is a terminal)",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress bars")
    p.set_defaults(func=cmd_train)


_TRAIN_CHECKPOINT = {
    "model": dict,
    "optimizer": dict,
    "sigmas": torch.Tensor,
    "config": dict,
    "step": int,
    "losses": list,
}


def _load_train_checkpoint(args, parser_error) -> dict:
    """The checkpoint of ``--load``, checked: read without running code, every entry present
    and consistent with the command line (exit 2 with the reason otherwise)."""
    from scorefast import checkpoint, targets

    try:
        state = checkpoint.load(args.load, kind="scorefast train", keys=_TRAIN_CHECKPOINT)
    except checkpoint.CheckpointError as exc:
        parser_error(f"--load: {exc}")
    cfg, sigmas = state["config"], state["sigmas"]
    if (
        cfg.get("target") not in targets.PRESETS
        or cfg.get("parametrization") not in ("score", "eps")
        or not isinstance(cfg.get("hidden"), int)
        or cfg["hidden"] < 1
    ):
        parser_error(f"--load: {args.load!r} has an invalid config {cfg!r}")
    if args.target is not None and args.target != cfg["target"]:
        parser_error(f"--load: the checkpoint was trained on --target {cfg['target']}, not {args.target}")
    if sigmas.dim() != 1 or sigmas.numel() < 1 or not bool(torch.isfinite(sigmas).all() and (sigmas > 0).all()):
        parser_error(f"--load: {args.load!r} has invalid noise levels (sigmas must be a positive 1-D tensor)")
    if state["step"] < 0:
        parser_error(f"--load: {args.load!r} has a negative step count")
    return state


def cmd_train(args, parser_error) -> int:
    from torch.nn.parallel import DistributedDataParallel

    from scorefast import checkpoint, targets
    from scorefast.distributed import _runtime
    from scorefast.distributed import training as data_parallel
    from scorefast.nn import DSMLoss, NoiseConditionalScoreNet, geometric_sigmas
    from scorefast.samplers import annealed_langevin

    if args.steps == 0 and not args.load:
        parser_error("argument --steps: expected at least 1 (0 only with --load: sample a trained network)")
    if args.sigma_max is not None and not args.sigma_max > args.sigma_min:
        parser_error(f"argument --sigma-max: must be > --sigma-min ({args.sigma_min}), got {args.sigma_max}")
    argtypes.check_backend(parser_error, args.backend, torch.device("cpu"), "dsm_loss")
    # Under torchrun the processes join one group (gloo: the network trains on the CPU) and split
    # each global batch of --batch samples; rank 0 alone prints, saves and samples.
    _runtime.init("cpu")
    is_main = _runtime.is_main()
    if args.batch < _runtime.world_size():
        parser_error(
            f"argument --batch: must be >= the number of processes ({_runtime.world_size()}), got {args.batch}"
        )
    torch.manual_seed(args.seed)  # the same initial parameters on every rank
    state = _load_train_checkpoint(args, parser_error) if args.load else None
    if args.target is None:
        args.target = state["config"]["target"] if state is not None else "two_mode"
    target = targets.PRESETS[args.target]()
    data = target.sample(20000, seed=args.seed).float()
    if state is not None:
        sigmas = state["sigmas"]
        cfg = state["config"]
    else:
        sigma_max = args.sigma_max
        if sigma_max is None:
            sigma_max = float(torch.cdist(data[:2000], data[:2000]).max())
            if not sigma_max > args.sigma_min:
                parser_error(
                    f"argument --sigma-min: must be < the data's spread ({sigma_max:.4g}), got {args.sigma_min}"
                )
        sigmas = geometric_sigmas(sigma_max, args.sigma_min, args.levels)
        cfg = {"target": args.target, "hidden": args.hidden, "parametrization": args.parametrization}
    model = NoiseConditionalScoreNet(2, hidden=cfg["hidden"])
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    start_step, losses = 0, []
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            parser_error(f"--load: {args.load!r} does not fit the score network ({str(exc).strip().splitlines()[0]})")
        start_step, losses = state["step"], list(state["losses"])
    eps_form = cfg["parametrization"] == "eps"
    loss_fn = DSMLoss(sigmas, parametrization=cfg["parametrization"], seed=args.seed, backend=args.backend)
    g = torch.Generator().manual_seed(args.seed + 1)
    net = DistributedDataParallel(model) if _runtime.is_initialized() else model
    progress = args.progress if is_main else False
    for it in _progress(range(start_step, start_step + args.steps), progress, args.steps, "train"):
        # Every rank draws the same global batch and trains on its slice of it.
        batch = data[torch.randint(0, data.shape[0], (args.batch,), generator=g)]
        losses.append(data_parallel.train_step(net, loss_fn, opt, batch, it))
    # DDP's reducer holds the group and would free it holding the GIL, which gloo's workers may
    # still need to release a finished collective's tensors: a deadlock at exit. Without the
    # wrapper the group's last holder is torch's own handle, whose destructor releases the GIL.
    del net
    _runtime.shutdown()
    if not is_main:
        return 0
    step = start_step + args.steps
    if args.save:
        checkpoint.save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "sigmas": sigmas,
                "config": cfg,
                "step": step,
                "losses": losses,
            },
            args.save,
        )

    def score(x, sigma):  # eps-prediction networks give the score as -eps / sigma
        out = model(x, sigma)
        return -out / sigma if eps_form else out

    x = float(sigmas[0]) * torch.randn(args.samples, 2, generator=g)
    with torch.no_grad():
        annealed_langevin(
            score,
            x,
            sigmas,
            steps_per_level=args.steps_per_level,
            epsilon=args.epsilon,
            seed=args.seed,
            progress=args.progress,
            backend=args.backend,
        )
    stats = summary_statistics(x, target)
    window = max(1, min(100, len(losses) // 10))
    stats.update(
        target=cfg["target"],
        training_steps=step,
        loss_first=float(sum(losses[:window]) / window) if losses else None,
        loss_last=float(sum(losses[-window:]) / window) if losses else None,
        sigmas=[float(s) for s in sigmas],
    )
    print(format_summary(stats))
    if losses:
        print(f"DSM loss: first {stats['loss_first']:.4f}, last {stats['loss_last']:.4f} (means over {window} steps)")
    if args.json:
        from scorefast.benchmarks.harness import write_json

        write_json(stats, args.json)
    if not args.no_plot:
        write_scatter(x, target, args.out, title=f"annealed Langevin from a DSM-trained network ({cfg['target']})")
        print(f"plot: {args.out}")
    return 0


def _add_backends(sub) -> None:
    p = sub.add_parser("backends", help="list the backends and whether they run here")
    p.set_defaults(func=cmd_backends)


def cmd_backends(args, parser_error) -> int:
    import scorefast

    print(f"{'backend':<10} {'ok':<4} {'devices':<10} note")
    for s in scorefast.backends().values():
        print(s)
    return 0


def _add_verify(sub) -> None:
    p = sub.add_parser(
        "verify",
        help="check every op on every backend here against its reference (the CI gate)",
        description=(
            "Run every op (noise, langevin_step, gmm_score, gmm_chain, dsm_perturb, dsm_loss, dsm_vp_perturb, "
            "dsm_vp_loss, reverse_step, snr_corrector_step) in each of its variants and dtypes on every "
            "backend that runs here, and compare it with the float64 "
            "reference within its error budget (Philox words bit for bit). Prints one line per check and "
            "a summary; exits 1 if any check fails. A backend that cannot run here is skipped with its "
            "reason unless --require names it. Without a CUDA GPU the Triton interpreter and the CUDA "
            "emulator are switched on (tiny sizes) unless --no-emulate."
        ),
    )
    p.add_argument(
        "--backends",
        default=None,
        help="comma-separated backends to check (default: all of reference, cpp, cuda, triton, numba)",
    )
    p.add_argument(
        "--ops",
        default=None,
        help="comma-separated ops to check (default: all of noise, langevin_step, gmm_score, gmm_chain, "
        "dsm_perturb, dsm_loss, dsm_vp_perturb, dsm_vp_loss, reverse_step, snr_corrector_step; samplers "
        "with --statistical)",
    )
    p.add_argument(
        "--dtypes",
        default=None,
        help="comma-separated dtypes to check (default: each op's of float32, float64, bfloat16, float16)",
    )
    p.add_argument(
        "--require", default="", help="comma-separated backends that must run here: their checks fail if they cannot"
    )
    p.add_argument(
        "--statistical",
        action="store_true",
        help="also check that gmm_chain and the samplers reach their targets (about a minute)",
    )
    p.add_argument(
        "--json",
        type=argtypes.output_file,
        default=None,
        help="write the results (header and one record per check) to this JSON file",
    )
    p.add_argument(
        "--junit",
        type=argtypes.output_file,
        default=None,
        help="write the results as JUnit XML (one testcase per check) to this file",
    )
    p.add_argument(
        "--no-emulate",
        action="store_true",
        help="without a CUDA GPU, do not switch on the Triton interpreter and the CUDA emulator",
    )
    p.add_argument(
        "--particles",
        type=argtypes.int_in(1, 2**20),
        default=257,
        help="particles (rows) in each check (default 257; 9 where emulated)",
    )
    p.add_argument(
        "--dim",
        type=argtypes.int_in(1, 2**16),
        default=67,
        help="elements per particle (default 67; 13 where emulated; mixtures use at most 5)",
    )
    p.set_defaults(func=cmd_verify)


_EMULATION_SWITCHES = ("TRITON_INTERPRET", "SCOREFAST_CUDA_EMULATOR")


def _verify_argv(args) -> list[str]:
    """The command line of ``scorefast verify`` that gives ``args``."""
    argv = ["verify", "--particles", str(args.particles), "--dim", str(args.dim)]
    for option in ("backends", "ops", "dtypes", "require", "json", "junit"):
        value = getattr(args, option)
        if value:
            argv += [f"--{option}", value]
    return argv + (["--statistical"] if args.statistical else [])


def _names(text: str | None, option: str, choices, parser_error) -> list[str] | None:
    """A comma list checked against ``choices`` (None for an absent option)."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in choices]
    if bad or not names:
        parser_error(f"--{option} takes a comma-separated list of {', '.join(choices)}; got {text!r}")
    return names


def cmd_verify(args, parser_error) -> int:
    from scorefast import backend_registry
    from scorefast.testing.checks import Size
    from scorefast.verify import OP_NAMES, verify
    from scorefast.verify.outputs import write_json, write_junit
    from scorefast.verify.plan import DTYPE_NAMES
    from scorefast.verify.report import ConsoleReporter, summary

    backends = _names(args.backends, "backends", backend_registry.NAMES, parser_error)
    ops = _names(args.ops, "ops", OP_NAMES, parser_error)
    dtypes = _names(args.dtypes, "dtypes", [d for d in DTYPE_NAMES if d != "int64"], parser_error)
    require = _names(args.require, "require", backend_registry.NAMES, parser_error) if args.require else []
    if ops == ["samplers"] and not args.statistical:
        parser_error("--ops samplers has statistical checks only: add --statistical")
    if not args.no_emulate and not torch.cuda.is_available():
        missing = {k: "1" for k in _EMULATION_SWITCHES if k not in os.environ}
        if "TRITON_INTERPRET" in missing and "triton" in sys.modules:
            # Triton reads TRITON_INTERPRET when its own library functions are defined, at import
            # (which torch already did): only a fresh process can interpret the Triton kernels.
            return subprocess.call(
                [sys.executable, "-m", "scorefast.cli", *_verify_argv(args)], env={**os.environ, **missing}
            )
        os.environ.update(missing)  # the cuda backend becomes the emulator (built on first use)
    report = verify(
        backends=backends,
        ops=ops,
        dtypes=None if dtypes is None else [DTYPE_NAMES[d] for d in dtypes],
        require=require,
        size=Size(args.particles, args.dim),
        statistical=args.statistical,
        reporter=ConsoleReporter(),
    )
    report.header["command"] = "scorefast " + " ".join(_verify_argv(args))
    print(summary(report.records, report.seconds))
    if args.json:
        write_json(args.json, report.header, report.records)
        print(f"json: {args.json}")
    if args.junit:
        write_junit(args.junit, report.header, report.records)
        print(f"junit: {args.junit}")
    return report.exit_status


def _add_bench(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="time langevin_step against eager PyTorch and torch.compile",
        description="Time langevin_step (noise in-kernel) on each backend against eager PyTorch "
        "x + a*s + b*randn_like(x) and torch.compile of it; print a table and "
        "write JSON with the machine named.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--op",
        default="langevin_step",
        choices=("langevin_step", "gmm_score", "dsm_loss", "samplers"),
        help="which op: langevin_step over sizes 2^min..2^max, or gmm_score over the "
        "(N, K, D) cases and covariance kinds",
    )
    p.add_argument("--min-log2", type=argtypes.int_in(0, 40), default=10, help="smallest size, log2 of elements")
    p.add_argument("--max-log2", type=argtypes.int_in(0, 40), default=26, help="largest size, log2 of elements")
    p.add_argument("--quick", action="store_true", help="sizes 2^10..2^20 and fewer repeats")
    p.add_argument(
        "--particle-size",
        type=argtypes.int_in(1, 2**30),
        default=1024,
        help="langevin_step: elements per particle (the tensor is (n / size, size))",
    )
    p.add_argument("--device", type=argtypes.device, default="cpu", help="device to benchmark")
    p.add_argument(
        "--backends", default="auto-all", help="comma-separated backends, or auto-all for every available one"
    )
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile of the reference")
    p.add_argument(
        "--out",
        type=argtypes.output_file,
        default=None,
        help="JSON path (default bench/results/langevin_step-<machine>.json)",
    )
    p.set_defaults(func=cmd_bench)


def cmd_bench(args, parser_error) -> int:
    from scorefast import backend_registry
    from scorefast.benchmarks import harness

    run = {
        "langevin_step": _bench_langevin,
        "gmm_score": _bench_gmm,
        "dsm_loss": _bench_dsm,
        "samplers": _bench_samplers,
    }[args.op]
    names = harness.parse_backends(args.backends)
    for name in names or ():
        if name not in backend_registry.NAMES:
            parser_error(
                f"argument --backends: expected auto-all or names of {', '.join(backend_registry.NAMES)}; got {name!r}"
            )
    return run(args, args.device, parser_error)


def _bench_langevin(args, device, parser_error) -> int:
    from scorefast.benchmarks import harness, langevin

    try:
        sizes = langevin.sizes(args.min_log2, args.max_log2, args.quick)
    except ValueError as exc:
        parser_error(str(exc))
    path = harness.result_path(langevin.result_name(args.particle_size), device, args.out, parser_error)
    result = langevin.run_langevin_bench(
        sizes,
        device,
        backends=harness.parse_backends(args.backends),
        compile_reference=not args.no_compile,
        quick=args.quick,
        particle_size=args.particle_size,
    )
    harness.report(result, langevin.format_table(result), path)
    return 0


def _bench_gmm(args, device, parser_error) -> int:
    from scorefast.benchmarks import gmm, harness

    path = harness.result_path("gmm_score", device, args.out, parser_error)
    result = gmm.run_gmm_bench(
        sizes=gmm.sizes(args.quick),
        device=device,
        backends=harness.parse_backends(args.backends),
        compile_reference=not args.no_compile,
        quick=args.quick,
    )
    harness.report(result, gmm.format_table(result), path)
    return 0


def _bench_dsm(args, device, parser_error) -> int:
    from scorefast.benchmarks import dsm, harness

    path = harness.result_path("dsm_loss", device, args.out, parser_error)
    result = dsm.run_dsm_bench(
        shapes=dsm.shapes(args.quick),
        device=device,
        backends=harness.parse_backends(args.backends),
        compile_reference=not args.no_compile,
        quick=args.quick,
    )
    harness.report(result, dsm.format_table(result), path)
    return 0


def _bench_samplers(args, device, parser_error) -> int:
    from scorefast.benchmarks import chain, harness

    path = harness.result_path("samplers", device, args.out, parser_error)
    result = chain.run_samplers_bench(quick=args.quick, compile_reference=not args.no_compile, device=device)
    harness.report(result, chain.format_table(result), path)
    return 0


def cmd_ddpm(args, parser_error) -> int:
    run = cli_ddpm.run(args, parser_error)
    facts = run["facts"]
    stats = summary_statistics(run["fused"].double(), run["target"])
    stats.update(facts)
    print(format_summary(stats))
    print(f"final loss {facts['final_loss']:.4f} after {facts['train_steps']} steps ({facts['train_seconds']:.1f} s)")
    difference = facts["max_difference_fused_vs_diffusers"]
    print(f"fused DDPM vs diffusers DDPM, same model and noise: max |difference| = {difference:.2e}")
    if args.json:
        from scorefast.benchmarks.harness import write_json

        write_json(stats, args.json)
    if not args.no_plot:
        print(f"plot: {cli_ddpm.write_pair(run['fused'], run['diffusers'], run['target'], args.out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scorefast",
        description="Fused, verifiable kernels for score-based generative models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_sample(sub)
    _add_train(sub)
    _add_bench(sub)
    _add_verify(sub)
    _add_backends(sub)
    cli_ddpm.add_parser(sub).set_defaults(func=cmd_ddpm)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args, parser.error)
    except BrokenPipeError:
        # The reader went away (`scorefast backends | head`): stop quietly, as Unix tools do.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except ValueError as exc:  # the library refused a combination of the flags
        parser.error(_one_line(exc, with_type=False))
    except (OSError, RuntimeError, MemoryError) as exc:  # the machine, not the command line
        print(f"scorefast {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException, with_type: bool = True) -> str:
    """The first line of an error's message (after its type, unless ``with_type`` is False)."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    return f"{type(exc).__name__}: {first}" if with_type else first


if __name__ == "__main__":
    sys.exit(main())
