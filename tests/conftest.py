"""Shared test setup: which backends run here, on which device, and the error budgets.

Without a CUDA GPU, Triton kernels run through the interpreter (TRITON_INTERPRET=1, set
before triton is imported), so they are tested on tiny shapes, and the CUDA kernels run
on CPU tensors through the emulator (SCOREFAST_CUDA_EMULATOR=1, scorefast/testing/cuda_emulator.py).
CI sets SCOREFAST_REQUIRE_BACKENDS=cpp,numba,triton,cuda so a backend that fails to load
fails the run instead of being skipped.
"""

from __future__ import annotations

import math
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("SCOREFAST_CUDA_EMULATOR", "1")

import pytest  # noqa: E402

import scorefast  # noqa: E402
from scorefast import backend_registry  # noqa: E402
from scorefast.testing import cuda_emulator  # noqa: E402

# Backend variants under test: the C++ CPU kernels run once per instruction-set build.
KERNEL_BACKENDS = ("cpp:avx512", "cpp:avx2", "cpp:generic", "numba", "triton", "cuda")


def _required() -> set[str]:
    return {b.strip() for b in os.environ.get("SCOREFAST_REQUIRE_BACKENDS", "").split(",") if b.strip()}


def require_or_skip(backend: str, reason: str, *, module: bool = False):
    """Skip a test (or a whole module) that needs ``backend``, or fail when the run requires it
    (SCOREFAST_REQUIRE_BACKENDS names it) or when a GPU is visible but the compiled extension
    failed to load (a broken build must not look like a skipped one)."""
    broken = torch.cuda.is_available() and scorefast._extension.extension_error() is not None
    if backend in _required() or (broken and backend in ("cpp", "cuda")):
        pytest.fail(f"required backend {backend} is unavailable: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=module)


def backend_device(name: str) -> torch.device:
    if name == "cuda":
        return torch.device("cpu" if cuda_emulator.requested() else "cuda")
    if name == "triton":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device("cpu")


def is_interpreted(name: str) -> bool:
    """Triton on the CPU interpreter: correct but slow, so tests use tiny shapes."""
    return name == "triton" and backend_device(name).type == "cpu"


class KernelBackend:
    """A backend variant: ``name`` for the API, ``device`` for tensors, ``interpreted``."""

    def __init__(self, variant: str):
        self.variant = variant
        self.name = variant.split(":")[0]
        self.isa = variant.split(":")[1] if ":" in variant else None
        self.device = backend_device(self.name)
        self.interpreted = is_interpreted(self.name)

    def __repr__(self):
        return self.variant


def _availability(variant: str) -> str | None:
    """None if the variant can run here, else why not."""
    name = variant.split(":")[0]
    status = backend_registry.status(name)
    if not status.available:
        return status.reason
    if backend_device(name).type not in status.devices:
        return f"{name} does not run on {backend_device(name)}"
    if ":" in variant:
        isa = variant.split(":")[1]
        ext = scorefast._extension.extension()
        if isa not in ext.supported_cpu_isas():
            return f"this CPU cannot run the {isa} kernels"
    return None


@pytest.fixture(params=KERNEL_BACKENDS)
def kernel_backend(request):
    """Each compiled backend variant that can run here (others skip with the reason)."""
    variant = request.param
    reason = _availability(variant)
    if reason is not None:
        # A required backend must run; an instruction set this CPU lacks is not a failure.
        isa_missing = reason.startswith("this CPU cannot run")
        if variant.split(":")[0] in _required() and not isa_missing:
            pytest.fail(f"required backend {variant} is unavailable: {reason}")
        pytest.skip(f"{variant}: {reason}")
    kb = KernelBackend(variant)
    if kb.isa is not None:
        ext = scorefast._extension.extension()
        previous = ext.cpu_isa()
        assert ext.select_cpu_isa(kb.isa)
        yield kb
        ext.select_cpu_isa(previous)
    else:
        yield kb


# ---------------------------------------------------------------------------------------
# Error budgets. Kernels compute in float32 (float64 for float64 storage) and are compared
# with the reference evaluated in float64 on the same inputs.

U32 = 2.0**-24  # float32 unit roundoff
U64 = 2.0**-53
# Largest Box-Muller radius: sqrt(-2 log 1e-7).
MAX_RADIUS = math.sqrt(-2.0 * math.log(1e-7))
# |z_a - z_b| between two float32 implementations of the contract (identical uniforms):
# each has <= 2 ulp in log, 0.5 in sqrt, 2 in cos/sin, 0.5 in the product, i.e.
# <= r * 3.6e-7 from the true value; two of them differ by <= r * 7.2e-7. We allow r * 1e-6.
NOISE_REL_TOL = 1e-6


def contract_radius(
    num_particles: int, particle_size: int, seed: int, step: int = 0, particle_offset: int = 0
) -> torch.Tensor:
    """Box-Muller radius r = sqrt(-2 log u1) of every element's pair, float64 [P, D]."""
    from scorefast.reference.noise import philox_words_ref, uniform_ref

    q = (particle_size + 3) // 4
    u = uniform_ref(philox_words_ref(num_particles, q, seed, step, particle_offset)).double()
    u1 = torch.stack((u[..., 0], u[..., 0], u[..., 2], u[..., 2]), dim=-1).clamp(min=1e-7)
    r = torch.sqrt(-2.0 * torch.log(u1)).reshape(num_particles, 4 * q)
    return r[:, :particle_size]


def noise_tolerance(
    num_particles: int, particle_size: int, seed: int, step: int = 0, particle_offset: int = 0
) -> torch.Tensor:
    """Per-element tolerance between two implementations' normals: r * NOISE_REL_TOL."""
    return NOISE_REL_TOL * contract_radius(num_particles, particle_size, seed, step, particle_offset)


def storage_ulp(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """One unit in the last place of ``dtype`` at |values| (float64 tensor)."""
    mant = {torch.float16: 10, torch.bfloat16: 7, torch.float32: 23, torch.float64: 52}[dtype]
    tiny = torch.finfo(dtype).tiny * 2.0**-mant  # smallest subnormal
    v = values.abs().double().clamp(min=torch.finfo(dtype).tiny)
    return torch.maximum(torch.exp2(torch.floor(torch.log2(v)) - mant), torch.tensor(tiny, dtype=torch.float64))


def langevin_tolerance(
    x, score, score_cond, guidance, step_size, noise_scale, ref, dtype, noise_from_contract: bool
) -> torch.Tensor:
    """Elementwise bound on |kernel - reference(float64)| for langevin_step.

    Compute-precision rounding: g = s + w (s_c - s) and x + a g + b z take a handful of
    roundings, each <= u * (magnitude of the terms): we allow 8 u * (|x| + |a|(|s| + |w|(|s|+|s_c|)) + |b||z|).
    Contract noise adds |b| * noise tolerance; a 16-bit or float32 result adds 1 ulp of storage.
    """
    P = x.shape[0]
    f = lambda t: t.reshape(P, -1).double()  # noqa: E731
    pp = lambda v: v.double().reshape(P, 1) if isinstance(v, torch.Tensor) else float(v)  # noqa: E731
    s = f(score).abs()
    g_mag = s if score_cond is None else s + abs(guidance) * (s + f(score_cond).abs())
    a, b = pp(step_size), pp(noise_scale)
    a_abs = a.abs() if isinstance(a, torch.Tensor) else abs(a)
    b_abs = b.abs() if isinstance(b, torch.Tensor) else abs(b)
    u = U64 if dtype == torch.float64 else U32
    mag = f(x).abs() + a_abs * g_mag + b_abs * MAX_RADIUS
    tol = 8 * u * mag
    if noise_from_contract:
        tol = tol + b_abs * NOISE_REL_TOL * MAX_RADIUS
    if dtype != torch.float64:
        tol = tol + storage_ulp(f(ref), dtype)
    return tol.reshape(x.shape)


def assert_within(actual: torch.Tensor, expected: torch.Tensor, tol: torch.Tensor, what: str = ""):
    """|actual - expected| <= tol elementwise, NaN only where expected is NaN."""
    a, e = actual.double(), expected.double()
    nan_a, nan_e = torch.isnan(a), torch.isnan(e)
    assert torch.equal(nan_a, nan_e), f"{what}: NaN pattern differs ({int(nan_a.sum())} vs {int(nan_e.sum())})"
    ok = ~nan_e
    err = (a - e).abs()[ok]
    t = tol.double().expand_as(a)[ok] if tol.dim() else tol.double().expand(int(ok.sum()))
    bad = err > t
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {err.numel()} elements exceed the error budget; "
            f"first: |{a[ok][i].item()} - {e[ok][i].item()}| = {err[i].item():.3e} > {t[i].item():.3e}"
        )
