"""Weak scaling of sharded sampling (scorefast.distributed): a fixed number of particles per
process, on 1 and 2 processes (``--processes``), gloo on the CPU or NCCL on GPUs (one GPU per
process). Cases, each through ``distributed.run_sharded`` with the noise contract's particle ids:

* two_mode ULA: the fused chain (gmm_chain) on the two-mode 2D mixture;
* two_mode MALA, stepwise: the generic MALA loop (score and log-density callables, the fused
  step), one Python step at a time;
* statistics: per-mode fractions, mean and covariance all-reduced over the processes.

    python bench/bench_distributed.py [--quick] [--device cuda] [--processes 1,2]

Each process runs one thread on the CPU (so W processes use W cores). Times are wall times of
the whole group, barrier to barrier (the slowest rank's), medians over repeats; efficiency is
the 1-process time over the W-process time (1.0: perfect weak scaling). Prints one table and
writes JSON with the machine named to bench/results/ of the source checkout (``--out`` elsewhere).
"""

import json
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from scorefast import distributed, samplers, targets
from scorefast.benchmarks import harness


def cases(quick: bool) -> list[dict]:
    """Per-process particles and steps of each case (``quick``: 10x fewer of both)."""
    f = 10 if quick else 1
    return [
        dict(name="two_mode ULA (gmm_chain)", method="ula", n_local=100_000 // f, steps=1000 // f, a=0.01),
        dict(name="two_mode MALA (stepwise)", method="mala", n_local=10_000 // f, steps=200 // f, a=0.1),
        dict(name="statistics (all-reduce)", method="stats", n_local=100_000 // f, steps=0, a=0.0),
    ]


def _run_case(case: dict, device: torch.device, repeats: int) -> dict:
    """Median wall time over ``repeats`` (after one warm-up) of one case on this group."""
    mix = targets.two_mode_2d(device=device)
    world = distributed.world_size()
    g = torch.Generator(device=device).manual_seed(0)
    x0 = 4.0 * torch.randn(case["n_local"] * world, 2, generator=g, device=device)
    if case["method"] == "ula":
        fn = lambda: distributed.run_sharded(  # noqa: E731
            samplers.langevin, mix, x=x0, steps=case["steps"], step_size=case["a"], seed=1
        )
    elif case["method"] == "mala":
        fn = lambda: distributed.run_sharded(  # noqa: E731
            samplers.mala,
            lambda x: mix.score(x),  # callables, not the mixture: the generic stepwise loop
            lambda x: mix.log_prob(x),
            x=x0,
            steps=case["steps"],
            step_size=case["a"],
            seed=1,
        )
    else:
        shard = x0[distributed.shard_range(x0.shape[0])]
        fn = lambda: (distributed.mode_fractions(shard, mix), distributed.mean_and_covariance(shard))  # noqa: E731
    times = []
    for i in range(repeats + 1):
        distributed.barrier()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        distributed.barrier()
        if i:  # the first run warms up
            times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    total = case["n_local"] * world
    row = dict(
        case=case["name"],
        processes=world,
        particles_per_process=case["n_local"],
        particles=total,
        steps=case["steps"],
        seconds=seconds,
        repeats=repeats,
    )
    if case["steps"]:
        row["particle_steps_per_second"] = total * case["steps"] / seconds
    else:
        row["particles_per_second"] = total / seconds
    return row


def _worker(rank: int, world: int, device: str, store: str, quick: bool, repeats: int, out: str) -> None:
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", rank)
        torch.cuda.set_device(dev)
    else:
        torch.set_num_threads(1)
    dist.init_process_group(distributed.backend_for(dev), init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        rows = [_run_case(case, dev, repeats) for case in cases(quick)]
        if distributed.is_main():
            with open(out, "w") as f:
                json.dump(rows, f)
    finally:
        dist.destroy_process_group()


def run(processes: list[int], device: torch.device, quick: bool, repeats: int) -> dict:
    """Every case on each number of processes, with the weak-scaling efficiency against 1 process."""
    rows, load = [], os.getloadavg()[0]  # a shared machine's other work shows in the times
    with tempfile.TemporaryDirectory() as tmp:
        for world in processes:
            out = os.path.join(tmp, f"{world}.json")
            store = os.path.join(tmp, f"store{world}")
            mp.spawn(_worker, args=(world, str(device), store, quick, repeats, out), nprocs=world, join=True)
            with open(out) as f:
                rows += json.load(f)
    base = {r["case"]: r["seconds"] for r in rows if r["processes"] == 1}
    for r in rows:
        if r["case"] in base:
            r["efficiency"] = base[r["case"]] / r["seconds"]
    return {
        "op": "distributed",
        **harness.run_info(device),
        "backend": distributed.backend_for(device),
        "threads_per_process": 1 if device.type == "cpu" else None,
        "quick": quick,
        "load_average_1min_before": load,
        "results": rows,
    }


def format_table(result: dict) -> str:
    columns = [
        harness.Column("case", 26, lambda r: r["case"], "<"),
        harness.Column("procs", 5, lambda r: str(r["processes"])),
        harness.Column("N/proc", 8, lambda r: str(r["particles_per_process"])),
        harness.Column("steps", 6, lambda r: str(r["steps"])),
        harness.Column("ms", 9, lambda r: f"{r['seconds'] * 1e3:.3g}"),
        harness.Column(
            "per second", 10, lambda r: f"{r.get('particle_steps_per_second', r.get('particles_per_second')):.3g}"
        ),
        harness.Column("efficiency", 10, lambda r: f"{r['efficiency']:.2f}" if "efficiency" in r else ""),
    ]
    title = f"weak scaling, {result['backend']}, {result['machine']} (per second: particle-steps, or particles)"
    return harness.format_table(title, columns, result["results"])


def main(argv=None) -> int:
    parser = harness.argument_parser(__doc__, backends=False, quick_help="10x fewer particles and steps")
    parser.add_argument("--processes", default="1,2", help="comma-separated numbers of processes")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (after one warm-up)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    try:
        processes = [int(p) for p in args.processes.split(",")]
    except ValueError:
        parser.error(f"--processes takes a comma-separated list of positive ints, got {args.processes!r}")
    if not processes or min(processes) < 1:
        parser.error(f"--processes takes a comma-separated list of positive ints, got {args.processes!r}")
    if device.type == "cuda" and max(processes) > torch.cuda.device_count():
        parser.error(f"--processes {max(processes)} needs as many GPUs; {torch.cuda.device_count()} visible")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    path = harness.result_path("distributed", device, args.out, parser.error)
    result = run(processes, device, args.quick, args.repeats)
    harness.report(result, format_table(result), path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
