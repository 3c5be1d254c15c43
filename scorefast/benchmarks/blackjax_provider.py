"""BlackJAX, the JAX sampling library, on the samplers benchmark's chains: an optional provider.

It runs when ``jax`` and ``blackjax`` import (neither is a dependency of scorefast); otherwise
``unavailable_reason`` says why and the benchmark records the reason instead of a time. Each
chain is the case's own: the same mixture as a float32 JAX log-density, the same N chains
(``jax.vmap`` of the BlackJAX kernel over chains), the same T steps of step size a, the same
start x0, the whole chain one ``jax.lax.scan`` compiled ahead of time (the compile is not
timed).

* MALA: ``blackjax.mala``. Its proposal is x + a grad log p(x) + sqrt(2a) z and its
  acceptance uses the transition energy |x - y - a grad log p(y)|^2 / (4a), scorefast's
  convention, so its step_size is the case's a.
* ULA: ``blackjax.sgld`` given the exact gradient as its gradient estimator. Its update is
  x + a g + sqrt(2 temperature a) z with temperature 1 by default, which with g = grad log p
  is scorefast's ULA step x + a s + sqrt(2a) z.
* Annealed Langevin: BlackJAX has none; the case is skipped with that reason.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import torch

NAME = "BlackJAX"

_ALGORITHMS = {
    "mala": "blackjax.mala",
    "ula": "blackjax.sgld (exact gradient: ULA)",
}
_SKIPPED_METHODS = {"annealed": "no annealed Langevin in BlackJAX"}


def _import():
    """(jax, blackjax); raises ImportError with the reason when either is missing."""
    # On a GPU, JAX would take 75 % of its memory at import, leaving too little to torch.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    try:
        import jax
    except ImportError as exc:
        raise ImportError("JAX is not installed") from exc
    try:
        import blackjax
    except ImportError as exc:
        raise ImportError("BlackJAX is not installed") from exc
    return jax, blackjax


def _jax_backend(device: torch.device) -> str:
    return "cpu" if device.type == "cpu" else "gpu"


def unavailable_reason(device: torch.device = torch.device("cpu")) -> str | None:
    """Why the provider cannot run on ``device`` ("JAX is not installed", "BlackJAX is not
    installed", no JAX backend for the device), or None when it can."""
    try:
        jax, _ = _import()
    except ImportError as exc:
        return str(exc)
    except Exception as exc:  # a broken install (e.g. jax and jaxlib of different versions)
        return f"JAX could not be imported: {type(exc).__name__}: {exc}"
    backend = _jax_backend(device)
    try:
        jax.devices(backend)
    except RuntimeError:
        return f"JAX has no {backend} backend here (device {device})"
    return None


def versions() -> dict:
    """{"jax": version, "blackjax": version} of the installed packages (the provider must be available)."""
    jax, blackjax = _import()
    return {"jax": jax.__version__, "blackjax": blackjax.__version__}


def case_skip_reason(case: dict) -> str | None:
    """Why BlackJAX does not run a case of ``chain.cases`` (its method), or None."""
    return _SKIPPED_METHODS.get(case["method"])


def algorithm(case: dict) -> str:
    """The BlackJAX algorithm that runs a case (method "ula" or "mala")."""
    return _ALGORITHMS[case["method"]]


def mixture_arrays(mix) -> dict:
    """The mixture's parameters for the JAX log-density, float32 numpy, computed in float64:
    means (K, D); log_const (K,) = log w_k - D/2 log(2 pi) - 1/2 log det C_k; and inv_var (K,)
    (isotropic), inv_var (K, D) (diagonal) or inv_chol (K, D, D) = L_k^-1 with C_k = L_k L_k^T
    (full), so that (x - mu_k)^T C_k^-1 (x - mu_k) = |L_k^-1 (x - mu_k)|^2."""
    K, D = mix.means.shape
    cov = mix.cov.detach().cpu().double()
    out = {"kind": mix.kind, "means": mix.means.detach().cpu().double()}
    if mix.kind == "full":
        L = torch.linalg.cholesky(cov)
        eye = torch.eye(D, dtype=torch.float64).expand(K, D, D)
        out["inv_chol"] = torch.linalg.solve_triangular(L, eye, upper=False)
        log_det = 2.0 * torch.log(torch.diagonal(L, dim1=1, dim2=2)).sum(1)
    elif mix.kind == "diagonal":
        out["inv_var"] = 1.0 / cov
        log_det = torch.log(cov).sum(1)
    else:
        out["inv_var"] = 1.0 / cov
        log_det = D * torch.log(cov)
    log_w = mix.log_weights.detach().cpu().double()
    out["log_const"] = log_w - 0.5 * D * math.log(2 * math.pi) - 0.5 * log_det
    return {k: v if isinstance(v, str) else v.float().numpy() for k, v in out.items()}


def log_density(mix):
    """The mixture's log-density log p(x) = logsumexp_k(log w_k + log N(x; mu_k, C_k)) as a JAX
    function of one point x (D,) float32 -> () float32 (vmap it over points)."""
    jax, _ = _import()
    jnp = jax.numpy
    p = mixture_arrays(mix)
    means, log_const = jnp.asarray(p["means"]), jnp.asarray(p["log_const"])
    if p["kind"] == "full":
        inv_chol = jnp.asarray(p["inv_chol"])

        def quad(d):  # d (K, D)
            y = jnp.einsum("kij,kj->ki", inv_chol, d)
            return jnp.sum(y * y, axis=1)

    elif p["kind"] == "diagonal":
        inv_var = jnp.asarray(p["inv_var"])
        quad = lambda d: jnp.sum(d * d * inv_var, axis=1)
    else:
        inv_var = jnp.asarray(p["inv_var"])
        quad = lambda d: jnp.sum(d * d, axis=1) * inv_var

    def logp(x):
        return jax.nn.logsumexp(log_const - 0.5 * quad(x[None, :] - means))

    return logp


class Chain:
    """One case's BlackJAX chain from x0, compiled on construction.

    Args:
        case: a case of ``chain.cases`` with method "ula" or "mala" (target, N, steps, a).
        x0: the start (N, D) float32 torch tensor (copied to the JAX device).
        device: the torch device of the benchmark; the chain runs on JAX's backend for it.
        seed: the JAX PRNG key's seed (default 1, as the scorefast chains).

    ``run()`` runs the whole chain and waits for it (what is timed); ``acceptance`` is the
    mean MALA acceptance of the last run (None for ULA); ``compile_s`` the compile time.
    """

    def __init__(self, case: dict, x0: torch.Tensor, device: torch.device = torch.device("cpu"), seed: int = 1):
        jax, blackjax = _import()
        jnp = jax.numpy
        self.algorithm = algorithm(case)
        self.method, self.N, self.steps, a = case["method"], case["N"], case["steps"], float(case["a"])
        if x0.shape != (self.N, case["target"].dim):
            raise ValueError(f"x0 must have shape ({self.N}, {case['target'].dim}), got {list(x0.shape)}")
        logp = log_density(case["target"])
        N = self.N

        if self.method == "mala":
            mala = blackjax.mala(logp, a)

            def run(key, x):
                def body(carry, _):
                    key, states, accepted = carry
                    key, sub = jax.random.split(key)
                    states, info = jax.vmap(mala.step)(jax.random.split(sub, N), states)
                    return (key, states, accepted + jnp.sum(info.is_accepted, dtype=jnp.int32)), None

                init = (key, jax.vmap(mala.init)(x), jnp.zeros((), jnp.int32))
                (_, states, accepted), _ = jax.lax.scan(body, init, None, length=self.steps)
                return states.position, accepted

        else:
            grad = jax.grad(logp)
            sgld = blackjax.sgld(lambda position, minibatch: grad(position))  # no data: the exact gradient

            def run(key, x):
                def body(carry, _):
                    key, x = carry
                    key, sub = jax.random.split(key)
                    x = jax.vmap(lambda k, p: sgld.step(k, p, (), a))(jax.random.split(sub, N), x)
                    return (key, x), None

                (_, x), _ = jax.lax.scan(body, (key, x), None, length=self.steps)
                return x, jnp.zeros((), jnp.int32)

        dev = jax.devices(_jax_backend(device))[0]
        self._x0 = jax.device_put(np.ascontiguousarray(x0.detach().float().cpu().numpy()), dev)
        self._key = jax.device_put(jax.random.PRNGKey(seed), dev)
        t0 = time.perf_counter()
        self._compiled = jax.jit(run).lower(self._key, self._x0).compile()
        self.compile_s = time.perf_counter() - t0
        self._last = None

    def run(self):
        """Run the chain; returns the final state (N, D) as a JAX array, computed."""
        x, accepted = self._compiled(self._key, self._x0)
        x.block_until_ready()
        self._last = (x, accepted)
        return x

    @property
    def acceptance(self) -> float | None:
        """Mean MALA acceptance over chains and steps of the last run (None for ULA or before a run)."""
        if self.method != "mala" or self._last is None:
            return None
        return int(self._last[1]) / (self.N * self.steps)
