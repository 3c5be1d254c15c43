"""What ``scorefast verify`` prints: one line per check as it finishes, one line per backend
that cannot run here, and a summary."""

from __future__ import annotations

import sys

from ..testing.checks import OPS
from .records import FAIL, PASS, SKIP, Record

_LABEL = {PASS: "PASS", FAIL: "FAIL", SKIP: "SKIP"}
_OP_WIDTH = max(len(op) for op in (*OPS, "samplers"))  # the columns line up for every op


def format_record(r: Record) -> str:
    """One line: status, backend, op, variant, dtype, then how close to its budget it came, e.g.
    ``PASS  cpp       langevin_step      clip   ...   float32   worst 0.06 of budget, max |err| 1.2e-07``."""
    head = f"{_LABEL[r.status]}  {r.backend:<9} {r.op:<{_OP_WIDTH}} {r.variant:<26} {r.dtype:<8}"
    if r.status == PASS and r.budget == 0:  # an exact check (Philox words)
        return f"{head}  {r.detail}"
    if r.status == PASS and r.ratio is not None:
        what = "deviation" if r.kind == "statistical" else "|err|"
        tail = f"worst {r.ratio:.2f} of budget, max {what} {r.max_error:.2g}"
        if r.seconds >= 1.0:
            tail += f" ({r.seconds:.1f} s)"
        return f"{head}  {tail}"
    return f"{head}  {r.detail}"


def summary(records: list[Record], seconds: float) -> str:
    """``verify: 530 checks: 424 passed, 0 failed, 106 skipped in 61.2 s``, then each failure again."""
    counts = {s: sum(r.status == s for r in records) for s in (PASS, FAIL, SKIP)}
    lines = []
    failed = [r for r in records if r.status == FAIL]
    if failed:
        lines.append("failures:")
        lines += [f"  {r.backend} {r.name}: {r.detail}" for r in failed]
    lines.append(
        f"verify: {len(records)} checks: {counts[PASS]} passed, {counts[FAIL]} failed, "
        f"{counts[SKIP]} skipped in {seconds:.1f} s"
    )
    return "\n".join(lines)


class ConsoleReporter:
    """Prints each record as it is made; a backend that cannot run here gets one line."""

    def __init__(self, stream=None):
        self.stream = stream

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def record(self, r: Record) -> None:
        self._print(format_record(r))

    def backend_unavailable(self, backend, records: list[Record]) -> None:
        label = "FAIL" if backend.required else "SKIP"
        note = "required, " if backend.required else ""
        self._print(f"{label}  {backend.name:<9} ({note}{len(records)} checks) {backend.unavailable}")
