"""Shared test setup: which backends run here, on which device, and the error budgets.

Without a CUDA GPU, Triton kernels run through the interpreter (TRITON_INTERPRET=1, set
before triton is imported), so they are tested on tiny shapes, and the CUDA kernels run
on CPU tensors through the emulator (SCOREFAST_CUDA_EMULATOR=1, scorefast/testing/cuda_emulator.py).
A backend that a development install has (cpp, cuda, numba, triton) and that fails to load
fails the run instead of being skipped; SCOREFAST_REQUIRE_BACKENDS narrows that list (none: skip
whatever is missing).
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("SCOREFAST_CUDA_EMULATOR", "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# Property tests draw the same examples on every run (a failure reproduces); HYPOTHESIS_PROFILE=fuzz
# draws new ones, more of them.
settings.register_profile(
    "scorefast", derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("fuzz", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "scorefast"))

import scorefast  # noqa: E402
from scorefast import backend_registry  # noqa: E402
from scorefast.testing import cuda_emulator  # noqa: E402

# Backend variants under test: the C++ CPU kernels run once per instruction-set build.
KERNEL_BACKENDS = ("cpp:avx512", "cpp:avx2", "cpp:generic", "numba", "triton", "cuda")


def _required() -> set[str]:
    """Backends whose absence fails the run: SCOREFAST_REQUIRE_BACKENDS, else every backend a
    development install has (the C++ ones unless the extension was skipped on purpose);
    SCOREFAST_REQUIRE_BACKENDS=none opts out."""
    env = os.environ.get("SCOREFAST_REQUIRE_BACKENDS")
    if env is None:
        skipped = os.environ.get("SCOREFAST_SKIP_EXTENSION") == "1"
        return {"numba", "triton"} | (set() if skipped else {"cpp", "cuda"})
    return {b.strip() for b in env.split(",") if b.strip() and b.strip() != "none"}


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


def on_each_cpu_isa(fn):
    """{isa: fn(isa)} with each CPU kernel build this CPU runs selected in turn; the build
    selected before is restored afterwards, also when fn raises."""
    ext = scorefast._extension.extension()
    previous = ext.cpu_isa()
    results = {}
    try:
        for isa in ext.supported_cpu_isas():
            assert ext.select_cpu_isa(isa)
            results[isa] = fn(isa)
    finally:
        ext.select_cpu_isa(previous)
    return results


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

# The budgets are the library's (scorefast.testing.budgets), so that `scorefast verify`, users'
# assert_matches_reference and these tests hold kernels to the same bounds.
from scorefast.testing.budgets import (  # noqa: E402, F401
    MAX_RADIUS,
    NOISE_REL_TOL,
    U32,
    U64,
    contract_radius,
    langevin_tolerance,
    noise_tolerance,
    storage_ulp,
)


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
