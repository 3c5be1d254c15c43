"""Run the planned reference checks: every op x variant x dtype on every planned backend."""

from __future__ import annotations

import time

from .. import backend_registry
from ..testing.checks import OPS
from .plan import BackendPlan, PlannedCheck, dtype_name
from .records import FAIL, PASS, SKIP, Record


def _skipped(check: PlannedCheck, backend: BackendPlan, status: str, detail: str) -> Record:
    return Record(check.op, backend.name, dtype_name(check.dtype), check.variant, status, detail=detail)


def run_check(check: PlannedCheck, backend: BackendPlan) -> Record:
    """One check on an available backend; an exception is a failure that names it."""
    if not backend_registry.has_op(backend.name, check.kernel):
        if check.optional:
            return _skipped(check, backend, SKIP, f"{backend.name} has no {check.kernel} kernel")
        return _skipped(check, backend, FAIL, f"{backend.name} loads but has no {check.kernel} kernel")
    start = time.perf_counter()
    try:
        c = OPS[check.op].run(backend.name, backend.device, check.dtype, backend.size, **check.options_for(backend))
    except Exception as exc:  # a crash in a kernel's check is its failure, not verify's
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return Record(
            check.op,
            backend.name,
            dtype_name(check.dtype),
            check.variant,
            FAIL,
            detail=f"{type(exc).__name__}: {message}",
            seconds=time.perf_counter() - start,
            device=str(backend.device),
        )
    return Record(
        check.op,
        backend.name,
        dtype_name(check.dtype),
        check.variant,
        PASS if c.ok else FAIL,
        c.max_error,
        c.budget,
        c.ratio,
        c.detail,
        time.perf_counter() - start,
        str(backend.device),
    )


def run_reference_checks(backends: list[BackendPlan], checks: list[PlannedCheck], reporter=None) -> list[Record]:
    """Records for every check on every backend; an unavailable backend's checks are skipped with
    its reason (failed when it is required). ``reporter``: told of each record as it is made."""
    records = []
    for backend in backends:
        if backend.unavailable is not None:
            status = FAIL if backend.required else SKIP
            prefix = "required backend unavailable: " if backend.required else ""
            batch = [_skipped(c, backend, status, prefix + backend.unavailable) for c in checks]
            records += batch
            if reporter is not None:
                reporter.backend_unavailable(backend, batch)
            continue
        for check in checks:
            record = run_check(check, backend)
            records.append(record)
            if reporter is not None:
                reporter.record(record)
    return records
