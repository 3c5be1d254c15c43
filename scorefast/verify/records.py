"""One result of ``scorefast verify``: a check of one op, variant and dtype on one backend."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

PASS, FAIL, SKIP = "pass", "fail", "skip"


@dataclass
class Record:
    """op, backend, dtype ('float32', ...), variant; status 'pass', 'fail' or 'skip'.

    max_error: the largest |result - reference| (or, for statistical checks, the largest
    deviation); budget: the allowed error where error / budget is largest; ratio: that largest
    error / budget (<= 1 passes); detail: one line for people; extra: further numbers (statistics).
    """

    op: str
    backend: str
    dtype: str
    variant: str
    status: str
    max_error: float | None = None
    budget: float | None = None
    ratio: float | None = None
    detail: str = ""
    seconds: float = 0.0
    device: str | None = None
    kind: str = "reference"  # or 'statistical'
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool | None:
        """True for a pass, False for a failure, None for a skip."""
        return None if self.status == SKIP else self.status == PASS

    @property
    def name(self) -> str:
        return f"{self.op}.{self.variant}[{self.dtype}]"

    def to_json(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return _finite(d)


def _finite(value):
    """``value`` with every float that is not finite replaced by None (JSON has no NaN or infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
