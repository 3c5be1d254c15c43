"""The package's architecture holds: every op has one schema, the one of its contract
(scorefast/ops/), in every namespace; imports flow one way (no cycles, no layer importing
one above it); ``import scorefast`` loads neither the test tools nor the benchmarks."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import scorefast
from scorefast import backend_registry, ops

ROOT = Path(__file__).resolve().parents[1]
# Where each package lives in the source tree (scorefast.kernels is installed from kernels/).
SOURCES = {"scorefast": ROOT / "scorefast", "scorefast.kernels": ROOT / "kernels"}

# Layers from the bottom; a module may import its own layer or those below it.
LAYERS = [
    {
        "scorefast._env",
        "scorefast._backend",
        "scorefast._checks",
        "scorefast.ops",
        "scorefast.reference",
        "scorefast.diagnostics",
        "scorefast.checkpoint",
        "scorefast._float_range",
    },
    {"scorefast._extension", "scorefast.kernels"},
    {"scorefast.backend_registry"},
    {
        "scorefast.noise",
        "scorefast.langevin",
        "scorefast.gmm",
        "scorefast.dsm",
        "scorefast.dsm_vp",
        "scorefast.chain",
        "scorefast.diffusion",
    },
    {
        "scorefast.step_graphs",
        "scorefast.samplers",
        "scorefast.targets",
        "scorefast.nn",
        "scorefast.losses",
        "scorefast.distributed",
    },
    {
        "scorefast",
        "scorefast.cli",
        "scorefast.cli_args",
        "scorefast.integrations",
        "scorefast.cli_ddpm",
        "scorefast.verify",
        "scorefast.benchmarks",
        "scorefast.testing",
        "scorefast.__main__",
    },
]


def _modules() -> dict[str, Path]:
    found = {}
    for package, root in SOURCES.items():
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every scorefast module that ``name`` imports, at module level or inside a function."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _layer(module: str) -> int:
    best, depth = None, -1
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = i, len(prefix)
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            # A package's __init__ and its own submodules are one unit.
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_imports_flow_down_the_layers():
    upward = [
        f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
        for m, targets in _graph().items()
        for t in targets
        if _layer(t) > _layer(m) and not m.startswith(t + ".")
    ]
    assert not upward, "\n".join(upward)


def test_import_scorefast_loads_no_test_tools_or_benchmarks():
    code = (
        "import sys, scorefast; "
        "print(sorted(m for m in sys.modules if m.startswith(('scorefast.testing', 'scorefast.benchmarks'))))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("SCOREFAST_CUDA_EMULATOR",)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def _namespaces():
    """(backend, namespace, whether it carries the step-tensor ops) for every loaded compiled backend."""
    for name in ("cpp", "cuda", "triton", "numba"):
        if backend_registry.status(name).available:
            namespace, _ = backend_registry._library(name)
            yield name, namespace, name in ("cpp", "cuda")


def _normalised(schema: str) -> str:
    # Inferred schemas (Triton's) name alias sets after the argument's position (a0, a12, ...):
    # renamed a, b, c... in order of appearance.
    names = iter("abcdefgh")
    return re.sub(r"\(a\d+!\)", lambda m: f"({next(names)}!)", schema)


def test_every_op_has_its_contract_schema_in_every_namespace():
    table = ops.schemas()
    checked = 0
    for backend, namespace, step_tensor_ops in _namespaces():
        for op, schema in table.items():
            if op in ops.STEP_TENSOR_OPS and not step_tensor_ops:
                continue
            got = str(getattr(getattr(torch.ops, namespace), op).default._schema)
            assert _normalised(got) == f"{namespace}::{op}{schema}", (backend, op)
            checked += 1
    assert checked >= len(table), "no compiled backend loaded: nothing was compared"


def test_every_family_declares_the_contract_interface():
    for family in ops.FAMILIES:
        assert family.SCHEMAS and callable(family.register), family.__name__
    assert {"langevin_step", "gmm_score", "dsm_loss", "gmm_chain_", "normal_fill_"} <= set(ops.schemas())


def test_public_api_unchanged():
    for name in (
        "backends",
        "dsm_loss",
        "dsm_perturb",
        "gmm_chain",
        "gmm_score",
        "langevin_step",
        "langevin_step_",
        "normal",
        "normal_like",
        "philox_words",
        "random_seed",
        "reference",
        "targets",
    ):
        assert hasattr(scorefast, name), name
