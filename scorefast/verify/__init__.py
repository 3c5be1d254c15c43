"""``scorefast verify``: every op on every backend that runs here against its reference.

Reference checks (``scorefast.testing.checks``): each op x variant x dtype on each backend, within
the error budget derived from the float64 reference (``scorefast.testing.budgets``): Philox words
bit for bit, normals within the libm budget, langevin_step, gmm_score, gmm_chain (step by step),
dsm_perturb and dsm_loss, dsm_vp_perturb and dsm_vp_loss (forward and backward). Emulated backends
(Triton's interpreter, the CUDA emulator) run tiny sizes. With ``statistical=True`` the samplers are
also checked against their targets (``scorefast.verify.statistical``).

    report = scorefast.verify.verify(backends=["cpp", "numba"])
    report.exit_status      # 1 if any check failed, else 0
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .. import backend_registry
from ..testing.checks import DEFAULT_SIZE, OPS, Size
from . import machine
from .plan import plan_backends, plan_checks
from .records import FAIL, PASS, SKIP, Record
from .runner import run_reference_checks
from .statistical import run_statistical_checks

STATISTICAL_OPS = ("gmm_chain", "samplers")
OP_NAMES = tuple(OPS) + ("samplers",)  # 'samplers' has statistical checks only


@dataclass
class Report:
    """The records of one run, its header (machine, versions, settings) and its duration."""

    records: list[Record]
    header: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def failed(self) -> list[Record]:
        return [r for r in self.records if r.status == FAIL]

    @property
    def exit_status(self) -> int:
        return 1 if self.failed else 0

    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.records) for s in (PASS, FAIL, SKIP)}


def verify(
    *,
    backends=None,
    ops=None,
    dtypes=None,
    require=(),
    size: Size = DEFAULT_SIZE,
    statistical: bool = False,
    reporter=None,
) -> Report:
    """Run the checks and return the report.

    Args:
        backends: names to check (default every backend, including 'reference'); one that cannot
            run here is skipped with its reason.
        ops: op names (OP_NAMES) to check (default all).
        dtypes: torch dtypes to check (default each op's: float32, float64, bfloat16, float16).
        require: backend names that must run: their checks fail when they cannot.
        size: particles and elements per particle (emulated backends use at most 9 x 13).
        statistical: also check that the samplers reach their targets (about a minute).
        reporter: gets ``record(r)`` for each record and ``backend_unavailable(plan, records)``.
    """
    start = time.perf_counter()
    names = tuple(backends) if backends is not None else backend_registry.NAMES
    unknown = [n for n in (*names, *require) if n not in backend_registry.NAMES]
    if unknown:
        raise ValueError(f"backends must be among {', '.join(backend_registry.NAMES)}, got {', '.join(unknown)}")
    plans = plan_backends(set(names) | set(require), set(require), size)
    records = run_reference_checks(plans, plan_checks(ops, dtypes), reporter)
    if statistical and (ops is None or set(ops) & set(STATISTICAL_OPS)):
        records += run_statistical_checks(plans, ops, reporter)
    settings = dict(
        particles=size.particles,
        dim=size.dim,
        checked_backends=list(names),
        ops=list(ops or OP_NAMES),
        dtypes=None if dtypes is None else [str(d).replace("torch.", "") for d in dtypes],
        required=list(require),
        statistical=statistical,
    )
    report = Report(
        records,
        machine.header(sorted(set(names) | set(require), key=backend_registry.NAMES.index), **settings),
        time.perf_counter() - start,
    )
    report.header.update(seconds=round(report.seconds, 3), summary=report.counts())
    return report


__all__ = ["OP_NAMES", "Report", "Record", "verify"]
