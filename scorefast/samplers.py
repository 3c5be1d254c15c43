"""Langevin samplers for any score function, every update through the fused langevin_step.

* ``langevin``: unadjusted Langevin x <- x + a s(x) + sqrt(2a) z.
* ``annealed_langevin``: Song & Ermon (2019): levels sigma_1 > ... > sigma_L, T steps each with
  a_i = epsilon sigma_i^2 / (2 sigma_L^2) (NCSN's epsilon: x + (alpha_i/2) s + sqrt(alpha_i) z with
  alpha_i = epsilon sigma_i^2 / sigma_L^2) and the noise-conditional score s(x, sigma_i); optional
  final denoising step x + sigma_L^2 s(x, sigma_L).

The noise follows the contract: step t of the chain draws z(seed, t), so runs are
reproducible and independent of batch chunking. With ``cuda_graph=True`` (CUDA tensors)
each sampler captures its step, the score call plus the fused update, in a CUDA graph once
per group of identical steps and replays it (scorefast/step_graphs.py): the same chain, bit
for bit, with one launch per step instead of one per kernel.

Long runs: ``checkpoint``/``checkpoint_every``/``resume`` write the chain's state every k
steps and continue from it after a kill, bit for bit (scorefast.checkpoint.ChainCheckpoint);
``chain_diagnostics`` (scorefast.diagnostics.ChainDiagnostics) is fed the states after the
steps, in bounded memory, for R-hat and bulk/tail ESS.
"""

from __future__ import annotations

import math
import sys

import torch

from . import _checks
from . import backend_registry as backends
from .chain import gmm_chain
from .checkpoint import ChainCheckpoint
from .langevin import langevin_step, langevin_step_
from .noise import normal_like, philox_words, random_seed
from .ops.noise import uniform_ref
from .step_graphs import StepRunner, record
from .targets.mixture import GaussianMixture


def progress_bar(iterable, total: int, enabled: bool | None, desc: str, unit: str = "it"):
    """``iterable`` wrapped in a tqdm bar on stderr when ``enabled`` (None: when stderr is a terminal)."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr)


def _mixture_behind(score_fn):
    """The GaussianMixture that ``score_fn`` is (or whose ``score`` method it is), else None."""
    target = score_fn if isinstance(score_fn, GaussianMixture) else getattr(score_fn, "__self__", None)
    if isinstance(target, GaussianMixture) and getattr(score_fn, "__name__", "score") == "score":
        return target
    return None


def _ticker(total: int, progress, desc: str):
    """A callable advancing a progress bar over ``total`` steps by one."""
    it = iter(progress_bar(range(total), total, progress, desc))
    return lambda: next(it, None)


def _resumable(runner, x, method: str, settings: dict, total: int, seed, options: tuple, chain_diagnostics):
    """(ChainCheckpoint, seed) of a stepwise run of ``total`` steps; ``options`` is (checkpoint,
    checkpoint_every, resume). On resume x holds the checkpoint's particles, the runner skips the
    steps done and ``chain_diagnostics`` is restored."""
    checkpoint, checkpoint_every, resume = options
    ckpt = ChainCheckpoint(
        checkpoint,
        checkpoint_every,
        resume,
        sampler=method,
        x=x,
        total_steps=total,
        settings=dict(settings, seed=seed, step_offset=0),
    )
    seed = ckpt.seed(random_seed)
    if ckpt.step:
        x.copy_(ckpt.tensor("x", x))
        ckpt.restore_diagnostics(chain_diagnostics)
    runner.resume_at = ckpt.step
    return ckpt, seed


def _is_log_prob_of(log_prob_fn, mixture) -> bool:
    """Whether ``log_prob_fn`` is None or ``mixture.log_prob`` itself."""
    return log_prob_fn is None or (
        getattr(log_prob_fn, "__self__", None) is mixture and getattr(log_prob_fn, "__name__", "") == "log_prob"
    )


def _chain_runs_fused(mixture, x, backend: str, progress) -> bool:
    """Whether a gmm_chain kernel (not the reference) runs the whole chain on ``mixture`` (a
    GaussianMixture, or None: no) for x (N, D) with ``backend`` (not when a progress bar
    is asked for: the chain reports no steps)."""
    if mixture is None or progress or x.dim() != 2 or backend == "reference":
        return False
    if backend == "auto":
        return backends.resolve("auto", x.device, "gmm_chain_") != "reference"
    status = backends.status(backend)
    return status.available and x.device.type in status.devices and backends.has_op(backend, "gmm_chain_")


@torch.no_grad()
def langevin(
    score_fn,
    x: torch.Tensor,
    *,
    steps: int,
    step_size: float,
    seed: int | None = None,
    particle_offset: int = 0,
    progress: bool | None = None,
    cuda_graph: bool = False,
    backend: str = "auto",
    chain_diagnostics=None,
    checkpoint=None,
    checkpoint_every: int = 0,
    resume: bool = False,
) -> torch.Tensor:
    """Run ULA from x (N, ...) for ``steps`` steps; x is updated in place and returned.

    ``score_fn`` is any callable x -> s(x). A GaussianMixture (or its ``score`` method) runs
    the whole chain in the fused gmm_chain op instead (same noise, same result; one kernel,
    so ``cuda_graph`` has nothing to capture there). ``cuda_graph``: replay the step (score
    call and update) from a CUDA graph; needs CUDA tensors and a score function that does
    not synchronise with the host. ``particle_offset``: the global id of row 0 of x, for
    sharded runs (scorefast.distributed): row p draws the noise of particle particle_offset + p.

    ``chain_diagnostics``: a scorefast.diagnostics.ChainDiagnostics fed the states after the
    steps (R-hat and bulk/tail ESS from its ``summary()`` afterwards). ``checkpoint``,
    ``checkpoint_every``, ``resume``: write the chain's state to the file ``checkpoint`` after
    every ``checkpoint_every``-th step (0: only at the end) and at the end; ``resume=True``
    continues from it with the same arguments, x's values replaced by the checkpoint's, and
    gives the uninterrupted run's result bit for bit (see scorefast.checkpoint.ChainCheckpoint).
    """
    steps, step_size = _checks.check_constant_schedule(steps, step_size)
    runner = StepRunner(x, cuda_graph, backend)
    options = (checkpoint, checkpoint_every, resume)
    mixture = _mixture_behind(score_fn)
    if _chain_runs_fused(mixture, x, backend, progress):
        x.copy_(
            gmm_chain(
                x,
                mixture,
                method="ula",
                steps=steps,
                step_size=step_size,
                seed=seed,
                particle_offset=particle_offset,
                backend=backend,
                chain_diagnostics=chain_diagnostics,
                checkpoint=checkpoint,
                checkpoint_every=checkpoint_every,
                resume=resume,
            ).x
        )
        return x
    if mixture is not None:
        score_fn = mixture.score  # a mixture object itself is not callable
    settings = {"steps": steps, "step_size": step_size, "particle_offset": particle_offset}
    ckpt, seed = _resumable(runner, x, "ula", settings, steps, seed, options, chain_diagnostics)
    runner.after_step = ckpt.after_step(lambda: {"x": x}, chain_diagnostics, x)

    def step(t):
        langevin_step_(
            x, score_fn(x), step_size=step_size, seed=seed, step=t, particle_offset=particle_offset, backend=backend
        )

    runner.run(step, steps, _ticker(steps, progress, "langevin"))
    ckpt.finish(steps, {"x": x}, chain_diagnostics)
    return x


@torch.no_grad()
def annealed_langevin(
    score_fn,
    x: torch.Tensor,
    sigmas,
    *,
    steps_per_level: int = 100,
    epsilon: float = 2e-5,
    seed: int | None = None,
    particle_offset: int = 0,
    final_denoise: bool = True,
    progress: bool | None = None,
    cuda_graph: bool = False,
    backend: str = "auto",
    chain_diagnostics=None,
    checkpoint=None,
    checkpoint_every: int = 0,
    resume: bool = False,
) -> torch.Tensor:
    """Annealed Langevin from x (N, ...) with a noise-conditional score ``score_fn(x, sigma)``.

    A GaussianMixture (or its ``score`` method, whose score(x, sigma) is the noised
    mixture's) runs the whole schedule in the fused gmm_chain op instead: same noise, same
    result up to rounding, one kernel.

    Args:
        sigmas: (L,) decreasing noise levels.
        steps_per_level: T, steps at each level.
        epsilon: NCSN's base step (default 2e-5, as NCSN's): level i steps x + a_i s + sqrt(2 a_i) z
            with a_i = epsilon/2 * sigma_i^2 / sigma_L^2, i.e. NCSN's x + alpha_i/2 s + sqrt(alpha_i) z.
        final_denoise: finish with x + sigma_L^2 s(x, sigma_L) (Tweedie's denoiser).
        particle_offset: the global id of row 0 of x, for sharded runs (scorefast.distributed):
            row p draws the noise of particle particle_offset + p.
        cuda_graph: replay each level's step from a CUDA graph captured once per level
            (score_fn still gets sigma as a Python float).
        chain_diagnostics, checkpoint, checkpoint_every, resume: as for ``langevin``; steps
            count over all levels (step t is at level t // steps_per_level). The final
            checkpoint holds the state before the final denoising.

    x is updated in place and returned.
    """
    runner = StepRunner(x, cuda_graph, backend)
    sigmas = _checks.check_sigmas(sigmas)
    steps_per_level = _checks.check_int(steps_per_level, "steps_per_level", 1, 2**31)
    epsilon = _checks.check_real(epsilon, "epsilon", positive=True)
    options = (checkpoint, checkpoint_every, resume)
    mixture = _mixture_behind(score_fn)
    if _chain_runs_fused(mixture, x, backend, progress):
        x.copy_(
            gmm_chain(
                x,
                mixture,
                method="annealed",
                sigmas=sigmas,
                steps_per_level=steps_per_level,
                epsilon=epsilon,
                final_denoise=final_denoise,
                seed=seed,
                particle_offset=particle_offset,
                backend=backend,
                chain_diagnostics=chain_diagnostics,
                checkpoint=checkpoint,
                checkpoint_every=checkpoint_every,
                resume=resume,
            ).x
        )
        return x
    if mixture is not None:
        score_fn = mixture.score  # called as score(x, sigma)
    last = sigmas[-1]
    total = len(sigmas) * steps_per_level
    settings = {
        "sigmas": sigmas,
        "steps_per_level": steps_per_level,
        "epsilon": epsilon,
        "particle_offset": particle_offset,
    }
    ckpt, seed = _resumable(runner, x, "annealed", settings, total, seed, options, chain_diagnostics)

    def position(t):
        return {"level": t // steps_per_level}

    runner.after_step = ckpt.after_step(lambda: {"x": x}, chain_diagnostics, x, position)
    tick = _ticker(total, progress, "annealed langevin")
    for sigma in sigmas:
        a = epsilon / 2 * sigma**2 / last**2

        def step(t, sigma=sigma, a=a):
            langevin_step_(
                x, score_fn(x, sigma), step_size=a, seed=seed, step=t, particle_offset=particle_offset, backend=backend
            )

        runner.run(step, steps_per_level, tick)
    ckpt.finish(total, {"x": x}, chain_diagnostics, position(total))
    if final_denoise:
        x.add_(last**2 * score_fn(x, last))
    return x


class SGLDReplayBuffer:
    """SGLD negatives for energy-based models, with a replay buffer (Du & Mordatch, 2019).

    Each call takes ``n`` chains from the buffer (a fraction ``reinit_prob`` restarted from
    uniform noise in ``init_range``), runs ``steps`` SGLD steps on the energy,
    x <- clamp(x - a grad E(x) + b z) with a per-particle gradient-norm clip, writes them back
    and returns them. Every update is the fused langevin_step; the buffer lives on ``device``.

    Defaults follow the common image-EBM recipe: 60 steps, a = 10, b = 0.005, 5 % restarts,
    10000 buffered states, samples clamped to [-1, 1].

    Args:
        shape: shape of one sample, e.g. (2,) or (1, 28, 28).
        size: states kept in the buffer.
        reinit_prob: probability that a drawn chain restarts from uniform noise.
        steps, step_size, noise_scale: SGLD schedule (a, b).
        max_grad_norm: per-particle clip of the energy gradient (None: no clipping).
        init_range: (lo, hi) of the uniform restarts; also the clamp of every step.
        seed: seed of the buffer draws and the SGLD noise.
    """

    def __init__(
        self,
        shape,
        *,
        size: int = 10000,
        reinit_prob: float = 0.05,
        steps: int = 60,
        step_size: float = 10.0,
        noise_scale: float = 0.005,
        max_grad_norm: float | None = 0.03,
        init_range=(-1.0, 1.0),
        device="cpu",
        dtype=torch.float32,
        seed: int = 0,
    ):
        if not 0.0 <= reinit_prob <= 1.0:
            raise ValueError(f"reinit_prob must be in [0, 1], got {reinit_prob}")
        if size < 1 or steps < 0:
            raise ValueError("size must be >= 1 and steps >= 0")
        self.shape = tuple(shape)
        self.reinit_prob, self.steps = reinit_prob, steps
        self.step_size, self.noise_scale, self.max_grad_norm = step_size, noise_scale, max_grad_norm
        self.lo, self.hi = (float(v) for v in init_range)
        self.seed = seed
        self.calls = 0
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.buffer = self._uniform(size).to(device=device, dtype=dtype)

    def _uniform(self, n):
        return self.lo + (self.hi - self.lo) * torch.rand((n, *self.shape), generator=self.generator)

    def sample(self, energy_fn, n: int, backend: str = "auto") -> torch.Tensor:
        """n negatives after SGLD on ``energy_fn`` (x -> (n,) energies); the buffer is updated."""
        idx = torch.randint(0, self.buffer.shape[0], (n,), generator=self.generator)
        x = self.buffer[idx.to(self.buffer.device)].clone()
        restart = torch.rand(n, generator=self.generator) < self.reinit_prob
        if bool(restart.any()):
            x[restart.to(x.device)] = self._uniform(int(restart.sum())).to(x)
        for t in range(self.steps):
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(energy_fn(xg).sum(), xg)
            # every call and step gets its own counter: step = call * steps + t
            langevin_step_(
                x,
                -grad,
                step_size=self.step_size,
                noise_scale=self.noise_scale,
                max_score_norm=self.max_grad_norm,
                clamp=(self.lo, self.hi),
                seed=self.seed,
                step=(self.calls * max(1, self.steps) + t) % 2**32,
                backend=backend,
            )
        self.calls += 1
        self.buffer[idx.to(self.buffer.device)] = x.detach()
        return x.detach()

    def state_dict(self) -> dict:
        """The buffer's state (tensors and numbers only, so ``torch.load(weights_only=True)``
        reads it): the states, the call counter (the SGLD noise counter) and the draw generator.
        A buffer made with the same arguments and given this state continues bit for bit."""
        return {
            "buffer": self.buffer.detach().clone(),
            "calls": self.calls,
            "generator": self.generator.get_state(),
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s state; the shape and seed must match this buffer's."""
        missing = {"buffer", "calls", "generator", "seed"} - set(state)
        if missing:
            raise ValueError(f"state is missing {sorted(missing)} (not an SGLDReplayBuffer state_dict)")
        buffer = state["buffer"]
        if not isinstance(buffer, torch.Tensor) or tuple(buffer.shape[1:]) != self.shape:
            got = list(buffer.shape) if isinstance(buffer, torch.Tensor) else type(buffer).__name__
            raise ValueError(f"state['buffer'] must have shape (size, *{list(self.shape)}), got {got}")
        if state["seed"] != self.seed:
            raise ValueError(f"state was written with seed={state['seed']}, but this buffer has seed={self.seed}")
        self.buffer = buffer.to(device=self.buffer.device, dtype=self.buffer.dtype).clone()
        self.calls = int(state["calls"])
        self.generator.set_state(state["generator"])


def _acceptance_uniform(x: torch.Tensor, seed: int, step: int, particle_offset: int) -> torch.Tensor:
    """MALA's uniform for each particle at step t: word 0 of Philox group ceil(D/4) (the group
    after the particle's normals) of the noise contract, so it never reuses a normal's bits."""
    N = x.shape[0]
    D = x[0].numel() if N else 0
    Q = (D + 3) // 4
    words = philox_words(N, Q + 1, seed=seed, step=step, particle_offset=particle_offset, device=x.device)
    return uniform_ref(words[:, Q, 0])


class Diagnostics(dict):
    """Sampler diagnostics: acceptance_rate (per particle, MALA), nan_particles, diverged
    (|x| > divergence_threshold), score_norm (mean per-particle score norm at each step; None
    when the whole chain ran in the fused gmm_chain kernel); with a ChainDiagnostics given,
    rhat, ess_bulk and ess_tail (float64 (coords,) of its tracked coordinates, its summary())."""


def _finish_diagnostics(x, score_norms, threshold, accepted=None, steps=0, chain_diagnostics=None):
    flat = x.reshape(x.shape[0], -1)
    d = Diagnostics(
        nan_particles=int((~torch.isfinite(flat)).any(1).sum()),
        diverged=int((flat.abs() > threshold).any(1).sum()),
        score_norm=score_norms,
    )
    if accepted is not None:
        d["acceptance_rate"] = accepted.double() / max(1, steps)
    if chain_diagnostics is not None:
        summary = chain_diagnostics.summary()
        d.update(rhat=summary.rhat, ess_bulk=summary.ess_bulk, ess_tail=summary.ess_tail)
    return d


@torch.no_grad()
def mala(
    score_fn,
    log_prob_fn,
    x: torch.Tensor,
    *,
    steps: int,
    step_size: float,
    seed: int | None = None,
    particle_offset: int = 0,
    progress: bool | None = None,
    divergence_threshold: float = 1e6,
    cuda_graph: bool = False,
    backend: str = "auto",
    chain_diagnostics=None,
    checkpoint=None,
    checkpoint_every: int = 0,
    resume: bool = False,
):
    """Metropolis-adjusted Langevin from x (N, D): proposal y = x + a s(x) + sqrt(2a) z (the fused
    step with the contract's z), accepted with probability
    min(1, p(y) q(x | y) / (p(x) q(y | x))); a NaN or infinite ratio is a rejection.
    ``cuda_graph``: replay the step (proposal, both score calls, acceptance) from a CUDA graph.
    ``particle_offset``: the global id of row 0 of x, for sharded runs (scorefast.distributed):
    row p draws the proposal noise and acceptance uniform of particle particle_offset + p.

    ``score_fn`` and ``log_prob_fn`` are callables x -> s(x) and x -> log p(x) (N,). A
    GaussianMixture as ``score_fn`` (``log_prob_fn`` None), or its ``score`` and ``log_prob``
    methods, runs the whole chain in the fused gmm_chain op instead (same noise and
    uniforms, same result up to rounding); no per-step scores leave that kernel, so its
    diagnostics['score_norm'] is None. Pass lambdas to get the stepwise loop and its norms.

    ``chain_diagnostics``, ``checkpoint``, ``checkpoint_every``, ``resume``: as for
    ``langevin``; the checkpoint also holds the acceptance counts (and, stepwise, the current
    score, log density and score norms), and diagnostics gets rhat, ess_bulk and ess_tail.

    Returns (x, diagnostics) with x updated in place and diagnostics['acceptance_rate'] (N,).
    """

    steps, step_size = _checks.check_constant_schedule(steps, step_size)
    runner = StepRunner(x, cuda_graph, backend)
    options = (checkpoint, checkpoint_every, resume)
    mixture = _mixture_behind(score_fn)
    if mixture is not None and _is_log_prob_of(log_prob_fn, mixture):
        if _chain_runs_fused(mixture, x, backend, progress):
            res = gmm_chain(
                x,
                mixture,
                method="mala",
                steps=steps,
                step_size=step_size,
                seed=seed,
                particle_offset=particle_offset,
                backend=backend,
                chain_diagnostics=chain_diagnostics,
                checkpoint=checkpoint,
                checkpoint_every=checkpoint_every,
                resume=resume,
            )
            x.copy_(res.x)
            return x, _finish_diagnostics(x, None, divergence_threshold, res.accepted, steps, chain_diagnostics)
        score_fn, log_prob_fn = mixture.score, mixture.log_prob
    elif log_prob_fn is None:
        raise TypeError("log_prob_fn is required unless score_fn is a GaussianMixture (or its score method)")
    a = float(step_size)
    settings = {"steps": steps, "step_size": step_size, "particle_offset": particle_offset}
    ckpt, seed = _resumable(runner, x, "mala", settings, steps, seed, options, chain_diagnostics)
    accepted = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    # the chain's state, updated in place (a captured step reads and writes these buffers)
    s_x, lp_x = score_fn(x).clone(), log_prob_fn(x).clone()
    norms = torch.empty(steps, dtype=torch.float64, device=x.device)  # exact for any float dtype
    if ckpt.step:
        accepted.copy_(ckpt.tensor("accepted", accepted))
        if ckpt.has("s_x"):  # the chain's own values (a fused chain's checkpoint has none)
            s_x.copy_(ckpt.tensor("s_x", s_x))
            lp_x.copy_(ckpt.tensor("lp_x", lp_x))
        norms.copy_(ckpt.tensor("score_norm", norms) if ckpt.has("score_norm") else torch.full_like(norms, torch.nan))

    def state():
        return {"x": x, "accepted": accepted, "s_x": s_x, "lp_x": lp_x, "score_norm": norms}

    runner.after_step = ckpt.after_step(state, chain_diagnostics, x)

    def step(t):
        z = normal_like(x, seed=seed, step=t, particle_offset=particle_offset)
        y = langevin_step(x, s_x, step_size=a, noise=z, backend=backend)
        s_y, lp_y = score_fn(y), log_prob_fn(y)
        back = (x - y - a * s_y).reshape(x.shape[0], -1)
        log_q_back = -(back.double() ** 2).sum(1) / (4 * a)
        log_q_fwd = -0.5 * (z.reshape(x.shape[0], -1).double() ** 2).sum(1)
        log_alpha = lp_y.double() - lp_x.double() + log_q_back - log_q_fwd
        u = _acceptance_uniform(x, seed, t, particle_offset).to(x.device).double()
        accept = torch.log(u) < log_alpha  # NaN ratio: False, a rejection
        accepted.add_(accept)
        m = accept.reshape(-1, *([1] * (x.dim() - 1)))
        x.copy_(torch.where(m, y, x))
        s_x.copy_(torch.where(m, s_y, s_x))
        lp_x.copy_(torch.where(accept, lp_y, lp_x))
        record(norms, t, s_x.reshape(x.shape[0], -1).norm(dim=1).mean())

    runner.run(step, steps, _ticker(steps, progress, "mala"))
    ckpt.finish(steps, state(), chain_diagnostics)
    return x, _finish_diagnostics(x, norms.tolist(), divergence_threshold, accepted, steps, chain_diagnostics)


@torch.no_grad()
def predictor_corrector(
    score_fn,
    x: torch.Tensor,
    sigmas,
    *,
    corrector_steps: int = 1,
    snr: float = 0.16,
    batch_mean_rule: bool = False,
    batch_mean=None,
    seed: int | None = None,
    particle_offset: int = 0,
    final_denoise: bool = True,
    progress: bool | None = None,
    cuda_graph: bool = False,
    backend: str = "auto",
    chain_diagnostics=None,
    checkpoint=None,
    checkpoint_every: int = 0,
    resume: bool = False,
):
    """Predictor-corrector sampling of the variance-exploding SDE (Song et al., 2021).

    Predictor (reverse diffusion) from level sigma_i to sigma_{i+1}:
    x <- x + (sigma_i^2 - sigma_{i+1}^2) s(x, sigma_i) + sqrt(sigma_i^2 - sigma_{i+1}^2) z.
    Corrector: ``corrector_steps`` Langevin steps with the signal-to-noise rule
    epsilon = 2 (snr ||z|| / ||s||)^2, per particle, or with the batch-mean norms of the
    score SDE reference code when ``batch_mean_rule``; every update is the fused step. The
    step is capped at sigma_i^2, the level's variance (where the score is zero the rule has
    no signal to scale and would give an infinite step).
    ``cuda_graph``: replay each level's corrector step from a CUDA graph captured once per
    level (worthwhile with several corrector steps; predictor steps run eagerly).
    ``batch_mean``: the batch mean of the rule, a callable from a per-particle (N,) tensor to
    a 0-d tensor (default ``v.mean()``); a sharded run passes one over every rank's particles
    (scorefast.distributed.batch_mean), so its step sizes equal the single-process run's.
    ``particle_offset``: the global id of row 0 of x, for sharded runs (scorefast.distributed):
    row p draws the noise of particle particle_offset + p.
    ``chain_diagnostics``, ``checkpoint``, ``checkpoint_every``, ``resume``: as for
    ``langevin``, over the chain's steps (corrector and predictor steps alike, in order); the
    final checkpoint holds the state before the final denoising. With a ChainDiagnostics,
    diagnostics gets rhat, ess_bulk and ess_tail.

    Returns (x, diagnostics); x is updated in place.
    """
    if batch_mean is None:
        batch_mean = torch.mean
    elif not callable(batch_mean):
        raise TypeError(f"batch_mean must be a callable (N,) tensor -> 0-d tensor, got {type(batch_mean).__name__}")

    runner = StepRunner(x, cuda_graph, backend)
    sig = _checks.check_sigmas(sigmas)
    corrector_steps = _checks.check_int(corrector_steps, "corrector_steps", 0, 2**31)
    snr = _checks.check_real(snr, "snr", positive=True)
    N = x.shape[0]
    D = math.prod(x.shape[1:])
    levels = list(zip(sig, sig[1:] + [0.0]))
    predictions = [s_next > 0 or not final_denoise for _, s_next in levels]
    total = len(levels) * corrector_steps + sum(predictions)
    settings = {
        "sigmas": sig,
        "corrector_steps": corrector_steps,
        "snr": snr,
        "batch_mean_rule": batch_mean_rule,
        "final_denoise": final_denoise,  # it decides whether the last level has a predictor step
        "particle_offset": particle_offset,
    }
    options = (checkpoint, checkpoint_every, resume)
    ckpt, seed = _resumable(runner, x, "predictor_corrector", settings, total, seed, options, chain_diagnostics)
    norm_at = torch.empty(total, dtype=torch.float64, device=x.device)  # by step t; corrector steps only
    if ckpt.step:
        norm_at.copy_(ckpt.tensor("score_norm", norm_at))
    runner.after_step = ckpt.after_step(lambda: {"x": x, "score_norm": norm_at}, chain_diagnostics, x)
    corrector_ts = []
    it = iter(progress_bar(levels, len(levels), progress, "predictor-corrector"))
    for (s_i, s_next), predict in zip(levels, predictions):
        next(it, None)

        def corrector(t, s_i=s_i):
            s = score_fn(x, s_i)
            s_norm = s.reshape(N, D).norm(dim=1)
            z_norm = torch.full_like(s_norm, D**0.5)  # E||z|| ~ sqrt(D)
            if batch_mean_rule:  # one step size for all, kept on the device (no host sync)
                step = (2 * (snr * batch_mean(z_norm) / batch_mean(s_norm)) ** 2).clamp(max=s_i**2).expand(N)
            else:
                step = (2 * (snr * z_norm / s_norm) ** 2).clamp(max=s_i**2).to(x.dtype)
            langevin_step_(x, s, step_size=step, seed=seed, step=t, particle_offset=particle_offset, backend=backend)
            record(norm_at, t, s_norm.mean())

        corrector_ts += range(runner.t, runner.t + corrector_steps)
        runner.run(corrector, corrector_steps)
        if predict:
            var = s_i**2 - s_next**2

            def predictor(t, s_i=s_i, var=var):
                langevin_step_(
                    x,
                    score_fn(x, s_i),
                    step_size=var,
                    noise_scale=var**0.5,
                    seed=seed,
                    step=t,
                    particle_offset=particle_offset,
                    backend=backend,
                )

            runner.run(predictor, 1)
    ckpt.finish(total, {"x": x, "score_norm": norm_at}, chain_diagnostics)
    if final_denoise:
        x.add_(sig[-1] ** 2 * score_fn(x, sig[-1]))
    norms = norm_at[corrector_ts].tolist() if corrector_ts else []
    return x, _finish_diagnostics(x, norms, 1e6, chain_diagnostics=chain_diagnostics)
