"""The benchmark harness: one timing loop, the machine's copy bandwidth, one table
formatter, and where and how results are written.

Every table row is measured in one run on one machine: the PyTorch baselines,
``torch.compile`` of them and each scorefast backend that runs natively there. The case
modules (langevin, gmm, dsm, chain) say what is timed; this module says how.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

import scorefast
from scorefast import backend_registry


class NoResultsDir(RuntimeError):
    """No default results directory: scorefast is not imported from a source checkout."""


# --- machine -------------------------------------------------------------------------------


def machine_name(device: torch.device) -> str:
    """A human-readable name of the device: GPU name, or CPU model, its family and model numbers
    where /proc/cpuinfo has them (virtual machines often report a bare "AMD EPYC" for several
    generations) and the core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model") and key not in fields:
                    fields[key] = value.strip()
                if not line.strip() and fields:
                    break  # the first processor's fields
    except OSError:
        pass
    model = fields.get("model name", model)
    generation = ""
    if "cpu family" in fields and "model" in fields:
        generation = f"family {fields['cpu family']} model {fields['model']}, "
    return f"{model} ({generation}{os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def run_info(device: torch.device) -> dict:
    """The fields every result has after ``op``: machine, device, torch, threads and the UTC date."""
    return {
        "machine": machine_name(device),
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


# --- timing --------------------------------------------------------------------------------


def add_speedups(times: dict) -> None:
    """Each provider's ``speedup_vs_eager`` and, with a torch.compile row, ``speedup_vs_compile``
    (ratios of median times measured in the same run)."""
    for t in times.values():
        t["speedup_vs_eager"] = times["eager"]["median"] / t["median"]
        if "torch.compile" in times:
            t["speedup_vs_compile"] = times["torch.compile"]["median"] / t["median"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn, device: torch.device, *, min_time: float = 0.2, min_reps: int = 3, max_reps: int = 1000) -> dict:
    """Median, 20% and 80% quantiles of the wall time of ``fn()`` in seconds, after a warm-up
    of at least 3 calls and min_time / 2 seconds: the first touches of fresh memory (first-use
    page faults, caches, compilation) are not the steady state a sampling loop runs in.

    Returns {"median", "p20", "p80", "min": seconds, "reps": timed calls}. Timed calls continue
    until min_time seconds and min_reps calls, at most max_reps; CUDA calls are timed with
    events. A call slower than 2 s is warmed up and timed once (it is not noise-bound).
    """
    warm_start = time.perf_counter()
    for i in range(max(3, max_reps)):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        now = time.perf_counter()
        if now - t0 > 2.0:
            min_reps = max_reps = 1
            break
        if i >= 2 and now - warm_start >= min_time / 2:
            break
    times = []
    total = 0.0
    while (total < min_time or len(times) < min_reps) and len(times) < max_reps:
        dt = _timed_call(fn, device)
        times.append(dt)
        total += dt
    return _summary(times)


def _timed_call(fn, device: torch.device) -> float:
    """Seconds one call of ``fn`` takes (CUDA: timed with events)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _summary(times: list[float]) -> dict:
    times = sorted(times)
    q = lambda f: times[min(len(times) - 1, int(f * len(times)))]  # noqa: E731
    return {"median": statistics.median(times), "p20": q(0.2), "p80": q(0.8), "min": times[0], "reps": len(times)}


def time_fns_interleaved(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    *,
    min_time: float = 0.2,
    min_reps: int = 3,
    block_time: float = 0.0,
) -> dict[str, dict]:
    """``time_fn`` of several functions at once, their calls interleaved: each round calls every
    function once, so the slow spells of a shared, busy host fall on all of them alike and their
    ratios hold (timed one after another, a spell can land on one function only).

    ``block_time``: each round calls each function again until its calls in the round took that
    many seconds, every call timed. A fast function called right after one that sweeps memory
    finds its data out of cache and its fresh outputs unmapped (gmm_score at (1e4, 64, 64):
    2.2 ms right after the direct PyTorch form, 0.65 ms in a block of calls); in a block, its
    later calls run as in a sampling loop.

    Warm-up: 3 rounds of one call each. Rounds continue until every function has min_time
    seconds and min_reps calls (a call slower than 2 s: one round). Returns {name: time_fn's
    dict}.
    """
    for _ in range(3):
        for fn in fns.values():
            fn()
            _sync(device)
    times = {name: [] for name in fns}
    while True:
        for name, fn in fns.items():
            spent = 0.0
            while True:
                dt = _timed_call(fn, device)
                times[name].append(dt)
                spent += dt
                if spent >= block_time:
                    break
        if max(max(t) for t in times.values()) > 2.0:
            break
        if all(sum(t) >= min_time and len(t) >= min_reps for t in times.values()):
            break
    return {name: _summary(t) for name, t in times.items()}


def copy_bandwidth(device: torch.device, numel: int = 2**26) -> float:
    """Measured bytes/s of ``dst.copy_(src)`` for float32 (read + write), the memory limit."""
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    t = time_fn(lambda: dst.copy_(src), device, min_time=0.5)["median"]
    return 2 * numel * 4 / t


def allow_recompiles(limit: int) -> None:
    """Let torch.compile keep at least ``limit`` graphs per function: every benchmark shape
    compiles its own (dynamic=False), and past the limit dynamo would fall back to eager and
    the compiled column would time the wrong thing."""
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(limit, torch._dynamo.config.cache_size_limit)
    if hasattr(torch._dynamo.config, "recompile_limit"):
        torch._dynamo.config.recompile_limit = max(limit, torch._dynamo.config.recompile_limit)


# --- providers -----------------------------------------------------------------------------


def timed_backends(device: torch.device, op: str, requested: Sequence[str] | None = None) -> list[str]:
    """The scorefast backends timed for ``op`` (a ``torch.ops`` name, e.g. "gmm_chain_") on
    ``device``: ``requested`` as given, else every available backend but the reference that
    has a kernel for ``op`` and runs natively on the device (the Triton interpreter and the
    CUDA emulator are for testing, not timing), in ``backend_registry.NAMES`` order."""
    if requested is not None:
        return list(requested)
    names = []
    for name in backend_registry.NAMES:
        s = backend_registry.status(name)
        if name == "reference" or not s.available or device.type not in s.devices:
            continue
        if backend_registry.is_emulated(name, device.type) or not backend_registry.has_op(name, op):
            continue
        names.append(name)
    return names


def parse_backends(text: str) -> list[str] | None:
    """The --backends option: "auto-all" (None: every backend that runs here) or a comma-separated list."""
    return None if text == "auto-all" else text.split(",")


# --- tables --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One table column: ``header``, the ``cell`` text of a result row, both aligned
    (``align`` "<" or ">") to ``width`` characters; longer text is not cut."""

    header: str
    width: int
    cell: Callable[[dict], str]
    align: str = ">"


def format_table(title: str, columns: Sequence[Column], rows: Iterable[dict]) -> str:
    """The title line, a header line and one line per row, columns separated by one space."""
    lines = [title, " ".join(f"{c.header:{c.align}{c.width}}" for c in columns)]
    lines += [" ".join(f"{c.cell(row):{c.align}{c.width}}" for c in columns) for row in rows]
    return "\n".join(lines)


# --- results -------------------------------------------------------------------------------


def source_root() -> str | None:
    """The source checkout scorefast is imported from (the directory holding the scorefast
    package, bench/ and pyproject.toml), or None for an installed package."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(scorefast.__file__)))
    if os.path.isdir(os.path.join(root, "bench")) and os.path.isfile(os.path.join(root, "pyproject.toml")):
        return root
    return None


def results_dir() -> str:
    """bench/results of the source checkout, whatever the working directory; raises
    NoResultsDir for an installed package."""
    root = source_root()
    if root is None:
        package = os.path.dirname(os.path.abspath(scorefast.__file__))
        raise NoResultsDir(
            f"no default results directory: scorefast ({package}) is not in a source checkout "
            "(bench/ and pyproject.toml beside the package); pass --out PATH for the JSON results"
        )
    return os.path.join(root, "bench", "results")


def default_result_path(op: str, machine: str) -> str:
    """bench/results/<op>-<machine slug>.json in the source checkout (see results_dir)."""
    slug = "".join(c if c.isalnum() else "-" for c in machine.lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    return os.path.join(results_dir(), f"{op}-{slug[:80]}.json")


def result_path(op: str, device: torch.device, out: str | None = None, error=None) -> str:
    """Where a run of ``op`` on ``device`` writes its JSON: ``out`` if given, else the default
    path. Resolved before the run, so a missing --out fails at once: outside a source checkout
    ``error(message)`` is called (e.g. an argparse parser's ``error``, which exits), or
    NoResultsDir raised without it."""
    if out:
        return out
    try:
        return default_result_path(op, machine_name(device))
    except NoResultsDir as exc:
        if error is None:
            raise
        error(str(exc))
        raise


def write_json(result: dict, path: str) -> None:
    """Write ``result`` as indented JSON, creating the directory."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)


def report(result: dict, table: str, path: str) -> None:
    """Print the table, write the JSON and print where it went."""
    print(table)
    write_json(result, path)
    print(f"results: {path}")


def argument_parser(
    description: str, *, backends: bool = True, quick_help: str = "smaller cases and fewer repeats"
) -> argparse.ArgumentParser:
    """The options of the bench/ scripts, as ``scorefast bench`` spells them: --quick,
    --device, --backends (unless ``backends`` is False), --no-compile and --out."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--device", default="cpu", help="device to benchmark")
    if backends:
        p.add_argument(
            "--backends", default="auto-all", help="comma-separated backends, or auto-all for every available one"
        )
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile of the reference")
    p.add_argument(
        "--out", default=None, help="JSON path (default: bench/results/<op>-<machine>.json in the source checkout)"
    )
    return p
