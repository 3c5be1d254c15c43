"""Argument checks shared by the public functions: every error names the argument and
what was expected."""

from __future__ import annotations

import math
import numbers

import torch

from .ops._common import MAX_STEP, STORAGE_DTYPES, acc_dtype
from .ops._common import elements_per_particle as elements_per_particle  # re-exported for the public checks

FLOAT_DTYPES = STORAGE_DTYPES
MAX_PARTICLE_ID = 2**63  # particle ids are 64-bit; offsets travel as int64


def check_float_tensor(t, name: str, *, min_dim: int = 1) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float64, float16 or bfloat16, got {t.dtype}")
    if t.dim() < min_dim:
        raise ValueError(
            f"{name} must have at least {min_dim} dimension(s) (dim 0 = particles), got shape {list(t.shape)}"
        )


def check_like(x: torch.Tensor, t, name: str) -> None:
    """``t`` is a float tensor with the shape and device of ``x``."""
    check_float_tensor(t, name, min_dim=0)
    if t.shape != x.shape:
        raise ValueError(f"{name} must have the shape of x {list(x.shape)}, got {list(t.shape)}")
    if t.device != x.device:
        raise ValueError(f"{name} must be on the device of x ({x.device}), got {t.device}")


def check_real(value, name: str, *, minimum: float | None = None, positive: bool = False) -> float:
    """A finite Python number, optionally >= minimum or > 0."""
    if isinstance(value, torch.Tensor) or not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value}")
    return value


def check_in_math_range(value: float, x: torch.Tensor, name: str) -> float:
    """A coefficient the kernels hold in x's math dtype (float64 for float64 x, else float32)
    must be finite there: a step of 1e39 is inf in float32, and inf * 0 is NaN."""
    math_dtype = acc_dtype(x.dtype)
    limit = torch.finfo(math_dtype).max
    if not abs(value) <= limit:
        raise ValueError(
            f"{name} must be finite in the math dtype of x ({str(math_dtype)[6:]}: at most {limit:.6g}), got {value:g}"
        )
    return value


def check_int(value, name: str, lo: int, hi: int) -> int:
    """An integer in [lo, hi].

    Under torch.compile a changing Python int (a loop counter passed as ``step``) is traced as a
    symbolic int: its range is asserted when the graph runs instead of being read now, which
    would specialise the graph to one value and recompile it at every step.
    """
    if isinstance(value, torch.SymInt):
        torch._check(value >= lo, lambda: f"{name} must be in [{lo}, {hi}]")
        torch._check(value <= hi, lambda: f"{name} must be in [{lo}, {hi}]")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def check_constant_schedule(steps, step_size) -> tuple[int, float]:
    """(T, a) of a chain of ``steps`` steps of one step size: T in [0, 2^32 - 1], a finite and > 0
    (the fused chain and the stepwise samplers check it alike)."""
    return check_int(steps, "steps", 0, MAX_STEP), check_real(step_size, "step_size", positive=True)


def check_sigmas(sigmas, name: str = "sigmas") -> list[float]:
    """Noise levels sigma_1 > ... > sigma_L > 0, finite (a sequence, a number or a 1-D tensor),
    as Python floats."""
    if isinstance(sigmas, torch.Tensor):
        sigmas = sigmas.detach().cpu()
    try:
        t = torch.as_tensor(sigmas, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must be a sequence of numbers or a 1-D tensor, got {type(sigmas).__name__}") from e
    if t.dim() > 1 or t.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of noise levels, got shape {list(t.shape)}")
    levels = t.reshape(-1).tolist()
    for i, v in enumerate(levels):
        if not 0 < v < math.inf:
            raise ValueError(f"{name} must be finite and > 0, got {v} at index {i}")
    if any(a <= b for a, b in zip(levels, levels[1:])):
        raise ValueError(f"{name} must be strictly decreasing, got {levels}")
    return levels


def seed_to_int64(seed) -> int:
    """A seed in [0, 2^64) as the int64 with the same bits (the ops' schema type)."""
    seed = check_int(seed, "seed", 0, 2**64 - 1)
    return seed - 2**64 if seed >= 2**63 else seed


def check_counter(step, particle_offset, num_particles: int, particle_size: int = 1) -> tuple[int, int]:
    """step in [0, 2^32); particle_offset >= 0 with particle_offset + num_particles <= 2^63 and
    the noise's flat element indices (particle_offset + p) * particle_size + d below 2^63."""
    step = check_int(step, "step", 0, MAX_STEP)
    particle_offset = check_int(particle_offset, "particle_offset", 0, MAX_PARTICLE_ID - 1)
    if particle_offset + num_particles > MAX_PARTICLE_ID:
        raise ValueError(
            f"particle_offset + number of particles must be <= 2^63, got {particle_offset} + {num_particles}"
        )
    if num_particles and (particle_offset + num_particles) * particle_size > MAX_PARTICLE_ID:
        raise ValueError(
            f"(particle_offset + number of particles) * elements per particle must be <= 2^63 (the noise's flat "
            f"element index), got ({particle_offset} + {num_particles}) * {particle_size}"
        )
    return step, particle_offset


def check_step_tensor(step: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A step given as a tensor: int64 with one element on ``device``, whose value the kernels
    read when they run (so a CUDA graph replays with the current value). Its value is
    checked where that costs no device sync (CPU, eager); on a GPU its low 32 bits are used."""
    if step.dtype != torch.int64 or step.numel() != 1:
        raise TypeError(f"step tensor must be int64 with one element, got {step.dtype} of shape {list(step.shape)}")
    if step.device != device:
        raise ValueError(f"step tensor must be on the device of the noise it drives ({device}), got {step.device}")
    if step.device.type == "cpu" and not torch.compiler.is_compiling():
        check_int(int(step), "step", 0, MAX_STEP)
    return step


def check_per_particle(
    t: torch.Tensor, x: torch.Tensor, name: str, *, positive: bool = False, check_values: bool = True
) -> None:
    """``t`` is a float [P] tensor on x's device with finite values >= 0 (> 0 if ``positive``;
    ``check_values=False`` when the kernel that reads them checks the values itself)."""
    if t.dim() != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(
            f"{name} tensor must have shape [P] = [{x.shape[0]}] (one value per particle), got {list(t.shape)}"
        )
    if t.device != x.device:
        raise ValueError(f"{name} tensor must be on the device of x ({x.device}), got {t.device}")
    if not (t.dtype.is_floating_point):
        raise TypeError(f"{name} tensor must be floating point, got {t.dtype}")
    # Values are checked where that costs no device sync (CPU, eager); elsewhere NaN stays NaN.
    # One aminmax (NaN propagates into both) keeps the check cheap for small batches.
    if check_values and t.device.type == "cpu" and t.numel() > 0 and not torch.compiler.is_compiling():
        t = t.detach()  # a value check, not part of any graph
        lo, hi = (float(v) for v in torch.aminmax(t))
        if not ((lo > 0 if positive else lo >= 0) and hi < math.inf):
            bad = ~torch.isfinite(t) | ((t <= 0) if positive else (t < 0))
            i = int(bad.nonzero()[0, 0])
            bound = "> 0" if positive else ">= 0"
            raise ValueError(f"{name} must be finite and {bound} for every particle, got {t[i].item()} at particle {i}")


def is_mixture(mixture) -> bool:
    """Whether ``mixture`` is a ``scorefast.targets.GaussianMixture`` (recognised by what the
    kernels read from it, so that the ops need not import the targets layer above them)."""
    return all(hasattr(mixture, a) for a in ("kernel_params", "means", "log_weights", "kind", "cov", "dim"))
