"""gmm_score benchmark: scorefast against the two PyTorch ways of writing it, and
``torch.compile`` of each, measured in one run on one machine.

* direct: the N x K x D difference tensor (what most code writes);
* matmul: the best PyTorch form: squared distances by matmul expansion
  (|x|^2 - 2 x.mu + |mu|^2, weighted for diagonal covariances; whitened by each component's
  factor for full ones), logsumexp, and the score as matmuls of the responsibilities.

Both take the mixture in the same kernel form as the op (``GaussianMixture.kernel_params``),
in float32.
"""
from __future__ import annotations

import datetime

import torch

from . import backend_registry
from .benchmark import machine_name, time_fn
from .gmm import gmm_score
from .targets import random_mixture

SIZES = [(100_000, 2, 2), (100_000, 25, 2), (10_000, 64, 64), (4096, 16, 784)]
KINDS = ("isotropic", "diagonal", "full")


def gmm_direct(x, means, inv_var, factor, log_const):
    """Score and log p with an (N, K, D) intermediate."""
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
    """Score and log p by matmuls: no (N, K, D) tensor for isotropic/diagonal mixtures."""
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


def run_gmm_bench(sizes=SIZES, kinds=KINDS, device=torch.device("cpu"), backends=None,
                  compile_reference: bool = True, quick: bool = False) -> dict:
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(256, torch._dynamo.config.cache_size_limit)
    if hasattr(torch._dynamo.config, "recompile_limit"):
        torch._dynamo.config.recompile_limit = max(256, torch._dynamo.config.recompile_limit)
    if backends is None:
        backends = [n for n in backend_registry.NAMES
                    if n != "reference" and backend_registry.status(n).available
                    and device.type in backend_registry.status(n).devices
                    and backend_registry.has_op(n, "gmm_score")
                    and not backend_registry.is_emulated(n, device.type)]
    min_time = 0.05 if quick else 0.3
    rows = []
    for kind in kinds:
        for N, K, D in sizes:
            mix = random_mixture(K, D, seed=0, kind=kind, device=device)
            x = mix.sample(N, seed=1).float().to(device)
            p = mix.kernel_params(torch.float32, device, None, per_point=False)
            args = (x, p["means"], p["inv_var"], p["factor"], p["log_const"])
            providers = {"direct": lambda: gmm_direct(*args), "matmul": lambda: gmm_matmul(*args)}
            if compile_reference:
                cd = torch.compile(gmm_direct, dynamic=False)
                cm = torch.compile(gmm_matmul, dynamic=False)
                providers["direct+compile"] = lambda: cd(*args)
                providers["matmul+compile"] = lambda: cm(*args)
            for name in backends:
                providers[name] = lambda name=name: gmm_score(x, mix, backend=name)
            times = {}
            for prov, fn in providers.items():
                try:
                    times[prov] = time_fn(fn, device, min_time=min_time)
                except (RuntimeError, MemoryError) as exc:  # e.g. an N x K x D x D tensor too big
                    times[prov] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}
            torch_best = min((t["median"] for p_, t in times.items() if p_ not in backends and "median" in t),
                             default=float("nan"))
            for prov, t in times.items():
                if "median" in t:
                    t["points_per_s"] = N / t["median"]
                    t["speedup_vs_best_torch"] = torch_best / t["median"]
            rows.append({"kind": kind, "N": N, "K": K, "D": D, "times": times, "best_torch_s": torch_best})
    return {
        "op": "gmm_score",
        "machine": machine_name(device),
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dtype": "float32",
        "providers": list(rows[0]["times"]) if rows else [],
        "rows": rows,
    }


def format_table(result: dict) -> str:
    provs = result["providers"]
    lines = [f"gmm_score on {result['machine']}, torch {result['torch']} (ms; x = speed-up over the best PyTorch form)"]
    lines.append(f"{'kind':<10} {'N':>7} {'K':>4} {'D':>4} " + " ".join(f"{p:>15}" for p in provs))
    for row in result["rows"]:
        cells = []
        for p in provs:
            t = row["times"].get(p, {})
            if "median" not in t:
                cells.append(f"{'-':>15}")
            elif p in ("direct", "matmul", "direct+compile", "matmul+compile"):
                cells.append(f"{t['median'] * 1e3:15.3f}")
            else:
                cells.append(f"{t['median'] * 1e3:8.3f} {t['speedup_vs_best_torch']:5.1f}x")
        lines.append(f"{row['kind']:<10} {row['N']:>7} {row['K']:>4} {row['D']:>4} " + " ".join(cells))
    return "\n".join(lines)
