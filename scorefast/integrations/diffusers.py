"""Drop-in diffusers schedulers whose steps are scorefast's fused reverse-step ops.

``DDPMScheduler`` and ``ScoreSdeVeScheduler`` subclass diffusers' classes of the same names:
same config (``from_config(pipe.scheduler.config)`` works), ``set_timesteps``, ``add_noise``
and outputs with ``prev_sample``. Only the arithmetic of a step changes: each update is one or
two fused ``scorefast.reverse_step`` / ``snr_corrector_step`` calls on the model output, each
one pass over memory, instead of diffusers' chain of eager ops.

The noise:
* given a ``generator``, a step draws exactly the noise diffusers would draw (same call, same
  order), so a diffusers run is reproduced up to float rounding;
* without one, the noise is scorefast's counter-based noise, drawn inside the kernel: key
  ``noise_seed`` (``manual_seed``; by default drawn from torch's global generator at the first
  draw), one counter value per noise draw (``noise_step``, reset by
  ``set_timesteps``) and ``particle_offset`` = the global index of sample 0 (sharded batches).

Requires diffusers (``pip install diffusers``); importing this module without it raises an
ImportError that says so.
"""

from __future__ import annotations

import torch

try:
    import diffusers
    from diffusers.schedulers.scheduling_ddpm import DDPMSchedulerOutput
    from diffusers.schedulers.scheduling_sde_ve import SdeVeOutput
    from diffusers.schedulers.scheduling_utils import SchedulerOutput
    from diffusers.utils.torch_utils import randn_tensor
except ImportError as exc:  # an optional extra
    raise ImportError(
        "scorefast.integrations.diffusers needs diffusers: pip install diffusers (or scorefast[diffusers])"
    ) from exc

from ..diffusion import reverse_step, snr_corrector_step
from ..noise import random_seed

__all__ = ["DDPMScheduler", "ScoreSdeVeScheduler"]

_NO_TIMESTEPS = "`self.timesteps` is not set, you need to run 'set_timesteps' after creating the scheduler"


class _CounterNoise:
    """The counter-based noise state shared by the schedulers."""

    # No __init__ here: diffusers' from_config reads the constructor's signature, which must stay
    # diffusers' own. The seed is drawn when first needed.
    _noise_seed: int | None = None
    noise_step: int = 0
    particle_offset: int = 0
    backend: str = "auto"

    @property
    def noise_seed(self) -> int:
        if self._noise_seed is None:
            self._noise_seed = random_seed()
        return self._noise_seed

    def manual_seed(self, seed: int, particle_offset: int = 0):
        """Key the counter-based noise with ``seed`` and restart its counter; returns self.

        ``particle_offset``: global index of this batch's first sample (so shards of a batch
        draw the noise of the whole batch)."""
        self._noise_seed, self.noise_step, self.particle_offset = int(seed), 0, int(particle_offset)
        return self

    def _next_counter(self) -> int:
        step = self.noise_step
        self.noise_step += 1
        return step

    def _noise(self, generator, draw) -> dict:
        """The noise arguments of a fused call: diffusers' own draw with a generator, else the
        counter-based noise's (seed, step)."""
        if generator is not None:
            return {"noise": draw()}
        return {
            "seed": self.noise_seed,
            "step": self._next_counter(),
            "particle_offset": self.particle_offset,
        }


class DDPMScheduler(_CounterNoise, diffusers.DDPMScheduler):
    """diffusers' DDPMScheduler (Ho et al., 2020) with fused steps.

    ``step`` computes x0 = clamp(c1 x_t + c2 model_output) (one fused call: the
    parametrization ``epsilon``, ``sample`` or ``v_prediction`` and ``clip_sample``) and
    x_{t-1} = A x0 + B x_t + b z (one fused call with the noise drawn in the kernel). Dynamic
    thresholding runs diffusers' own ``_threshold_sample`` between the two calls; learned
    variances (``learned``, ``learned_range``), which give every element its own noise scale,
    pass the scaled noise to the second call.
    """

    def set_timesteps(self, *args, **kwargs):
        super().set_timesteps(*args, **kwargs)
        self.noise_step = 0

    def _coefficients(self, t: int):
        """diffusers' step coefficients as Python floats (computed as diffusers does, in the
        dtype of ``alphas_cumprod``)."""
        prev_t = self.previous_timestep(t)
        alpha_prod_t = self.alphas_cumprod[t]
        alpha_prod_t_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.one
        beta_prod_t = 1 - alpha_prod_t
        beta_prod_t_prev = 1 - alpha_prod_t_prev
        current_alpha_t = alpha_prod_t / alpha_prod_t_prev
        current_beta_t = 1 - current_alpha_t
        x0_coeff = (alpha_prod_t_prev**0.5 * current_beta_t) / beta_prod_t
        xt_coeff = current_alpha_t**0.5 * beta_prod_t_prev / beta_prod_t
        return float(alpha_prod_t), float(beta_prod_t), float(x0_coeff), float(xt_coeff)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> DDPMSchedulerOutput | tuple:
        """One reverse step from ``sample`` (x_t, shape (B, ...)) given the model output at
        ``timestep``; as diffusers' ``DDPMScheduler.step``. Returns DDPMSchedulerOutput(
        prev_sample, pred_original_sample) or the tuple (prev_sample, pred_original_sample)."""
        t = int(timestep)
        predicted_variance = None
        if model_output.shape[1] == sample.shape[1] * 2 and self.variance_type in ("learned", "learned_range"):
            model_output, predicted_variance = torch.split(model_output, sample.shape[1], dim=1)
        alpha_prod_t, beta_prod_t, x0_coeff, xt_coeff = self._coefficients(t)

        kind = self.config.prediction_type
        if kind == "epsilon":
            c1, c2 = 1 / alpha_prod_t**0.5, -(beta_prod_t**0.5) / alpha_prod_t**0.5
        elif kind == "sample":
            c1, c2 = 0.0, 1.0
        elif kind == "v_prediction":
            c1, c2 = alpha_prod_t**0.5, -(beta_prod_t**0.5)
        else:
            raise ValueError(
                f"prediction_type given as {kind} must be one of `epsilon`, `sample` or `v_prediction`"
                " for the DDPMScheduler."
            )
        clamp = None
        if self.config.clip_sample and not self.config.thresholding:
            clamp = (-self.config.clip_sample_range, self.config.clip_sample_range)
        x0 = reverse_step(sample, model_output, x_coef=c1, score_coef=c2, clamp=clamp, backend=self.backend)
        if self.config.thresholding:
            x0 = self._threshold_sample(x0)

        noise = {}
        scale = 0.0
        if t > 0:
            draw = lambda: randn_tensor(  # noqa: E731  (diffusers' own draw)
                model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
            )
            variance = self._get_variance(t, predicted_variance=predicted_variance)
            if self.variance_type == "fixed_small_log":
                scale = variance  # diffusers' fixed_small_log gives the standard deviation
            elif self.variance_type == "learned_range":
                scale = torch.exp(0.5 * variance)
            else:
                scale = variance**0.5
            if isinstance(scale, torch.Tensor) and scale.numel() > 1:
                # One scale per element: the scaled noise goes in explicitly.
                z = draw() if generator is not None else self._counter_normals(sample)
                noise, scale = {"noise": scale * z}, 1.0
            else:
                noise, scale = self._noise(generator, draw), float(scale)
        prev = reverse_step(
            sample, x0, x_coef=xt_coeff, score_coef=x0_coeff, noise_scale=scale, backend=self.backend, **noise
        )
        if not return_dict:
            return prev, x0
        return DDPMSchedulerOutput(prev_sample=prev, pred_original_sample=x0)

    def _counter_normals(self, sample: torch.Tensor) -> torch.Tensor:
        from ..noise import normal

        return normal(
            sample.shape,
            seed=self.noise_seed,
            step=self._next_counter(),
            particle_offset=self.particle_offset,
            dtype=sample.dtype,
            device=sample.device,
        )


class ScoreSdeVeScheduler(_CounterNoise, diffusers.ScoreSdeVeScheduler):
    """diffusers' ScoreSdeVeScheduler (Song et al., 2021, variance exploding) with fused steps.

    ``step_pred``: x_{i-1} = x_i + d^2 s + d z with d^2 = sigma_i^2 - sigma_{i-1}^2 (one fused
    call; ``prev_sample_mean``, x_i + d^2 s, is a second, noise-free one). ``step_correct``:
    the Langevin corrector with the signal-to-noise step eps = 2 (snr ||z|| / ||s||)^2 from the
    batch means of the norms, as diffusers and score_sde compute it (``corrector_rule``
    "batch_mean"); set ``corrector_rule = "per_sample"`` to give each sample its own norms. With
    the counter-based noise it is one fused op that regenerates z for its norms.
    """

    corrector_rule: str = "batch_mean"

    def set_timesteps(self, *args, **kwargs):
        super().set_timesteps(*args, **kwargs)
        self.noise_step = 0

    def step_pred(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> SdeVeOutput | tuple:
        """The reverse-SDE predictor, as diffusers' ``step_pred``; returns SdeVeOutput(
        prev_sample, prev_sample_mean) or that tuple."""
        if self.timesteps is None:
            raise ValueError(
                "`self.timesteps` is not set, you need to run 'set_timesteps' after creating the scheduler"
            )
        timestep = timestep * torch.ones(sample.shape[0], device=sample.device)
        timesteps = (timestep * (len(self.timesteps) - 1)).long().to(self.discrete_sigmas.device)
        sigma = self.discrete_sigmas[timesteps].to(sample.device)
        adjacent_sigma = self.get_adjacent_sigma(timesteps, timestep).to(sample.device)
        diffusion = ((sigma**2 - adjacent_sigma**2) ** 0.5).flatten()  # (B,), one per sample
        draw = lambda: randn_tensor(  # noqa: E731  (diffusers' own draw)
            sample.shape, layout=sample.layout, generator=generator, device=sample.device, dtype=sample.dtype
        )
        noise = self._noise(generator, draw)
        common = dict(score_coef=diffusion**2, backend=self.backend)
        prev = reverse_step(sample, model_output, noise_scale=diffusion, **common, **noise)
        mean = reverse_step(sample, model_output, **common)
        if not return_dict:
            return prev, mean
        return SdeVeOutput(prev_sample=prev, prev_sample_mean=mean)

    def step_correct(
        self,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple:
        """The Langevin corrector, as diffusers' ``step_correct``; returns SchedulerOutput(
        prev_sample) or (prev_sample,)."""
        if self.timesteps is None:
            raise ValueError(
                "`self.timesteps` is not set, you need to run 'set_timesteps' after creating the scheduler"
            )
        if self.corrector_rule not in ("batch_mean", "per_sample"):
            raise ValueError(f"corrector_rule must be 'batch_mean' or 'per_sample', got {self.corrector_rule!r}")
        batch_mean = self.corrector_rule == "batch_mean"
        if generator is None:
            noise = dict(seed=self.noise_seed, step=self._next_counter(), particle_offset=self.particle_offset)
        else:  # diffusers' draw; the step size from the norms of that noise
            noise = dict(noise=randn_tensor(sample.shape, layout=sample.layout, generator=generator).to(sample.device))
        prev, _ = snr_corrector_step(
            sample, model_output, snr=self.config.snr, batch_mean=batch_mean, backend=self.backend, **noise
        )
        if not return_dict:
            return (prev,)
        return SchedulerOutput(prev_sample=prev)
