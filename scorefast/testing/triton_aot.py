"""The Triton kernels compiled for real GPU targets on a machine without a GPU.

The interpreter (``TRITON_INTERPRET=1``) never compiles: constexpr misuse, dtype promotion,
layouts and register pressure only show when Triton lowers a kernel to PTX and ptxas
assembles it. Three steps:

* ``record_launches`` runs code with every kernel launch recorded instead of run, and with
  the launch parameters a GPU run chooses (block sizes, loss splits): the kernel modules
  pick smaller ones for the interpreter.
* ``Specialization.of`` turns a launch into what Triton's JIT compiles for it (argument
  types, 16-divisibility, ints equal to 1 made constants), by Triton's own binder.
* ``compile_all`` compiles specializations for ``GPUTarget("cuda", cc, 32)`` in worker
  processes, where the kernels are imported without the interpreter (interpreted kernels
  cannot be compiled), and reads registers and spills from the log of Triton's ptxas run
  (the ptxas a GPU run uses: Triton emits PTX for the ptxas it ships).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import io
import json
import os
import pkgutil
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator

KERNEL_PACKAGE = "scorefast.kernels.triton"
ERROR_CHARS = 4000  # of a failed compile's message, in a report
# Triton 3.9 warns that its fp-fusion default will change; the default is what a GPU run
# compiles with, so it is kept.
_FP_FUSION_NOTICE = "TRITON_DEFAULT_FP_FUSION"


@dataclasses.dataclass(frozen=True)
class Specialization:
    """One compiled variant of a kernel: what Triton's JIT compiles for a launch."""

    module: str
    kernel: str
    signature: tuple[tuple[str, str], ...]  # (argument, type): "*fp32", "i32", "i64", "constexpr"
    constexprs: tuple[tuple[int, object], ...]  # (argument index, value)
    attrs: tuple[tuple[int, tuple[tuple[str, int], ...]], ...]  # (argument index, (("tt.divisibility", 16),))

    @classmethod
    def of(cls, kernel, args, kwargs) -> Specialization:
        jit = _jit_function(kernel)
        bound, spec, options = _binder(jit)(*args, **kwargs)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_FP_FUSION_NOTICE)
            _, signature, constexprs, attrs = jit._pack_args(_spec_backend(), kwargs, bound, spec, options)
        return cls(
            module=jit.fn.__module__,
            kernel=jit.fn.__name__,
            signature=tuple(signature.items()),
            constexprs=tuple((path[0], value) for path, value in constexprs.items()),
            attrs=tuple((path[0], tuple(tuple(a) for a in value)) for path, value in attrs.items()),
        )

    @property
    def pointer_types(self) -> tuple[str, ...]:
        """The distinct pointer types of the arguments, "*fp32" first (the storage types)."""
        return tuple(sorted({t for _, t in self.signature if t.startswith("*")}, key=lambda t: (t != "*fp32", t)))

    @property
    def label(self) -> str:
        """Pointer types, constexprs, 16-divisible ints and pointers off 16-byte alignment, e.g.
        ``*fp32,*bf16 F64=0 BLOCK=256 D%16 unaligned:log_const_ptr``."""
        divisible = {i for i, value in self.attrs if value}
        consts = [f"{self.signature[i][0]}={int(v) if isinstance(v, bool) else v}" for i, v in self.constexprs]
        ints, unaligned = [], []
        for i, (name, type_) in enumerate(self.signature):
            if type_.startswith("*") and i not in divisible:
                unaligned.append(f"unaligned:{name}")
            elif type_ != "constexpr" and not type_.startswith("*") and i in divisible:
                ints.append(f"{name}%16")
        return " ".join([",".join(self.pointer_types), *consts, *ints, *unaligned])

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Specialization:
        return cls(
            module=data["module"],
            kernel=data["kernel"],
            signature=tuple(tuple(p) for p in data["signature"]),
            constexprs=tuple(tuple(p) for p in data["constexprs"]),
            attrs=tuple((i, tuple(tuple(a) for a in a_list)) for i, a_list in data["attrs"]),
        )


# --------------------------------------------------------------------------------------
# recording


def kernel_modules() -> list:
    """The modules of the Triton backend (each op family's kernels and launchers)."""
    package = importlib.import_module(KERNEL_PACKAGE)
    return [importlib.import_module(f"{KERNEL_PACKAGE}.{m.name}") for m in pkgutil.iter_modules(package.__path__)]


def kernels_defined() -> set[tuple[str, str]]:
    """(module, name) of every kernel: the jit functions the modules launch, named ``*_kernel``."""
    found = set()
    for module in kernel_modules():
        for name, value in vars(module).items():
            if name.endswith("_kernel") and hasattr(value, "fn") and value.fn.__module__ == module.__name__:
                found.add((module.__name__, name))
    return found


@contextlib.contextmanager
def record_launches() -> Iterator[list[Specialization]]:
    """Within the block, kernel launches append their specialization to the yielded list and
    do not run (their outputs stay uninitialized), with the GPU's launch parameters."""
    recorded: list[Specialization] = []

    def record(kernel, grid, probe, *args, **kwargs):
        recorded.append(Specialization.of(kernel, args, kwargs))

    saved = []
    try:
        for module in kernel_modules():
            for name, value in (("launch", record), ("triton_interpreting", lambda: False)):
                if hasattr(module, name):
                    saved.append((module, name, getattr(module, name)))
                    setattr(module, name, value)
        yield recorded
    finally:
        for module, name, value in reversed(saved):
            setattr(module, name, value)


def _jit_function(kernel):
    """The JITFunction of a kernel; an interpreted kernel is re-declared (not compiled) for its
    parameters, with the same do_not_specialize lists."""
    from triton.runtime.jit import JITFunction

    if isinstance(kernel, JITFunction):
        return kernel
    return JITFunction(kernel.fn, **kernel.kwargs)


_BINDERS: dict = {}


def _binder(jit):
    from triton.runtime.jit import create_function_from_signature

    key = (jit.fn.__module__, jit.fn.__name__)
    if key not in _BINDERS:
        _BINDERS[key] = create_function_from_signature(jit.signature, jit.params, _spec_backend())
    return _BINDERS[key]


@functools.lru_cache(maxsize=1)
def _spec_backend():
    """The CUDA backend decides argument specialization; it is the same for every capability."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    return make_backend(GPUTarget("cuda", 90, 32))


# --------------------------------------------------------------------------------------
# compiling


@dataclasses.dataclass(frozen=True)
class CompileResult:
    spec: Specialization
    capability: int
    error: str | None = None
    registers: int | None = None
    spill_stores: int | None = None
    spill_loads: int | None = None
    stack_bytes: int | None = None
    seconds: float = 0.0

    @property
    def target(self) -> str:
        return f"sm_{self.capability}"


def ptxas_log_numbers(log: str) -> dict:
    """Registers, spills and stack frame from ``ptxas -v`` output (one kernel)."""
    regs = re.search(r"Used (\d+) registers", log)
    frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if regs is None or frame is None:
        raise ValueError(f"no register report in the ptxas log:\n{log}")
    return dict(
        registers=int(regs.group(1)),
        stack_bytes=int(frame.group(1)),
        spill_stores=int(frame.group(2)),
        spill_loads=int(frame.group(3)),
    )


def compile_all(
    specs, capabilities, *, workers: int, cache_dir: str, env: dict | None = None, timeout_s: float = 600
) -> list[CompileResult]:
    """Compile every spec for every capability, spread over ``workers`` processes."""
    jobs = [(spec, cc) for spec in specs for cc in capabilities]
    if not jobs:
        return []
    workers = max(1, min(workers, len(jobs)))
    worker_env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    worker_env.update(TRITON_CACHE_DIR=cache_dir, TRITON_DUMP_PTXAS_LOG="1", **(env or {}))
    with tempfile.TemporaryDirectory(prefix="triton-aot-") as tmp:
        procs = []
        for w in range(workers):
            jobs_path, out_path = os.path.join(tmp, f"jobs{w}.json"), os.path.join(tmp, f"out{w}.jsonl")
            with open(jobs_path, "w") as f:
                json.dump([[spec.to_json(), cc] for spec, cc in jobs[w::workers]], f)
            cmd = [sys.executable, "-m", __name__, jobs_path, out_path]
            proc = subprocess.Popen(cmd, env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            procs.append((proc, out_path))
        results, failures = [], []
        deadline = time.monotonic() + timeout_s
        for proc, out_path in procs:
            try:
                output, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
                if proc.returncode != 0:
                    failures.append(f"a compile worker exited with {proc.returncode}:\n{output[-ERROR_CHARS:]}")
            except subprocess.TimeoutExpired:
                proc.kill()
                output, _ = proc.communicate()
                failures.append(f"a compile worker ran past {timeout_s:.0f} s:\n{output[-ERROR_CHARS:]}")
            if os.path.exists(out_path):
                with open(out_path) as f:
                    results += [_result_from_json(json.loads(line)) for line in f if line.strip()]
    if failures:
        raise RuntimeError("\n".join(failures))
    return results


def _result_from_json(data: dict) -> CompileResult:
    return CompileResult(**{**data, "spec": Specialization.from_json(data["spec"])})


def compile_one(spec: Specialization, capability: int) -> CompileResult:
    """Compile in this process (which must not be interpreting) and read ptxas's report."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = getattr(importlib.import_module(spec.module), spec.kernel)
    src = ASTSource(
        kernel,
        dict(spec.signature),
        {(i,): v for i, v in spec.constexprs},
        {(i,): [list(a) for a in value] for i, value in spec.attrs},
    )
    log = io.StringIO()  # TRITON_DUMP_PTXAS_LOG prints ptxas -v output here
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(log):
            triton.compile(src, target=GPUTarget("cuda", capability, 32))
        numbers = ptxas_log_numbers(log.getvalue())
    except Exception as exc:  # noqa: BLE001 - reported per specialization, with the compiler's message
        return CompileResult(spec, capability, error=_describe(exc)[:ERROR_CHARS])
    return CompileResult(spec, capability, seconds=time.perf_counter() - start, **numbers)


def _describe(exc: BaseException) -> str:
    """The error and its causes: Triton raises a kernel's error from the helper it called."""
    parts = []
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__
    return "\n".join(parts)


def _worker(jobs_path: str, out_path: str) -> None:
    warnings.filterwarnings("ignore", message=_FP_FUSION_NOTICE)
    with open(jobs_path) as f:
        jobs = json.load(f)
    with open(out_path, "w") as out:
        for spec, cc in jobs:
            result = compile_one(Specialization.from_json(spec), cc)
            out.write(json.dumps({**dataclasses.asdict(result), "spec": spec}) + "\n")
            out.flush()


if __name__ == "__main__":
    _worker(*sys.argv[1:])
