"""``scorefast verify`` and ``scorefast.testing.assert_matches_reference``: the matrix runs end to
end, its JSON and JUnit outputs parse and hold every op, planted bugs (in a kernel, in the
reference, in a sampler's step) fail it, and unavailable backends are skipped unless required."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import torch
from conftest import require_or_skip

import scorefast
from scorefast import backend_registry, cli
from scorefast.testing import assert_matches_reference
from scorefast.testing.checks import OPS
from scorefast.verify import verify

SMALL = ["--particles", "9", "--dim", "6"]


class _Skewed:
    """A backend's op namespace whose ``op`` returns results off by a relative ``error``."""

    def __init__(self, namespace, op: str, error: float):
        self._namespace, self._op, self._error = namespace, op, error

    def __getattr__(self, name):
        real = getattr(self._namespace, name)
        if name != self._op:
            return real
        return lambda *args: real(*args) * (1 + self._error)


def _words(text: str) -> str:
    """The report with each run of spaces as one (its columns are padded to the longest op)."""
    return "\n".join(" ".join(line.split()) for line in text.splitlines())


def _plant_kernel_bug(monkeypatch, backend: str, op: str, error: float = 1e-5):
    real = backend_registry.op_namespace
    monkeypatch.setattr(
        backend_registry, "op_namespace", lambda name: _Skewed(real(name), op, error) if name == backend else real(name)
    )


def test_verify_runs_end_to_end_and_writes_json_and_junit(tmp_path, capsys):
    out_json, out_xml = tmp_path / "v.json", tmp_path / "v.xml"
    argv = ["verify", "--backends", "cpp,numba,reference", "--dtypes", "float32,bfloat16", *SMALL]
    rc = cli.main([*argv, "--json", str(out_json), "--junit", str(out_xml)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "FAIL" not in text and text.rstrip().splitlines()[-3].startswith("verify: ")

    result = json.loads(out_json.read_text())
    header, records = result["header"], result["records"]
    assert header["versions"]["torch"] == torch.__version__ and header["machine"]
    assert header["backends"]["cpp"]["available"] and header["summary"]["fail"] == 0
    assert {r["op"] for r in records} == set(OPS)
    assert {r["backend"] for r in records} == {"cpp", "numba", "reference"}
    for r in records:
        assert {"op", "backend", "dtype", "variant", "ok", "max_error", "budget", "detail"} <= set(r)
        if r["status"] == "pass":
            assert r["ok"] is True and 0 <= r["ratio"] <= 1, r
        else:  # only the step-tensor ops, which numba does not have
            assert r["status"] == "skip" and r["ok"] is None and "counter_" in r["detail"], r
    for op, spec in OPS.items():  # every variant in each dtype asked for, on every backend
        for backend in ("cpp", "numba", "reference"):
            got = {(r["variant"], r["dtype"]) for r in records if r["op"] == op and r["backend"] == backend}
            assert got == {
                (v, str(d)[6:])
                for v, var in spec.variants.items()
                for d in var.dtypes
                if str(d)[6:] in ("float32", "bfloat16", "int64")
            }, (op, backend)

    suites = ET.parse(out_xml).getroot()
    cases = suites.findall("./testsuite/testcase")
    assert len(cases) == len(records) == int(suites.get("tests"))
    assert suites.get("failures") == "0" and int(suites.get("skipped")) == sum(r["status"] == "skip" for r in records)
    assert {c.get("classname").split(".")[-1] for c in cases} == set(OPS)
    numba_step_tensor = [c for c in cases if "numba" in c.get("classname") and "step_tensor" in c.get("name")]
    assert numba_step_tensor and all(c.find("skipped") is not None for c in numba_step_tensor)


def test_a_kernel_off_by_a_little_fails(monkeypatch, tmp_path, capsys):
    _plant_kernel_bug(monkeypatch, "numba", "langevin_step")
    out_json = tmp_path / "v.json"
    rc = cli.main(
        [
            "verify",
            "--backends",
            "numba",
            "--ops",
            "langevin_step",
            "--dtypes",
            "float32",
            *SMALL,
            "--json",
            str(out_json),
        ]
    )
    assert rc == 1
    text = capsys.readouterr().out
    assert "FAIL numba langevin_step plain" in _words(text) and "failures:" in text
    plain = next(r for r in json.loads(out_json.read_text())["records"] if r["variant"] == "plain")
    assert plain["ok"] is False and plain["max_error"] > plain["budget"] > 0 and "over budget" in plain["detail"]


def test_a_wrong_reference_fails(monkeypatch):
    from scorefast.reference import gmm

    real = gmm.gmm_score_ref

    def wrong(*args, **kwargs):
        score, log_p = real(*args, **kwargs)
        return score * (1 + 1e-6), log_p

    monkeypatch.setattr(gmm, "gmm_score_ref", wrong)
    report = verify(backends=["cpp"], ops=["gmm_score"], dtypes=[torch.float64])
    assert report.exit_status == 1
    assert all(r.status == "fail" for r in report.records)


def test_unavailable_backend_is_skipped_unless_required(monkeypatch, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: the cuda backend may run")
    monkeypatch.delenv("SCOREFAST_CUDA_EMULATOR", raising=False)  # the extension's own cuda kernels: none here
    assert not backend_registry.status("cuda").available
    argv = ["verify", "--no-emulate", "--backends", "cpp,cuda", "--ops", "noise", *SMALL]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "SKIP  cuda      (" in text
    assert cli.main([*argv, "--require", "cuda"]) == 1
    text = capsys.readouterr().out
    assert "FAIL  cuda      (required" in text and "required backend unavailable" in text


def test_emulated_backends_run_tiny_shapes(capsys):
    for name in ("triton", "cuda"):
        status = backend_registry.status(name)
        if not status.available or "cpu" not in status.devices:
            require_or_skip(name, f"{name}: {status.reason or 'not emulated here'}")
    rc = cli.main(
        ["verify", "--backends", "triton,cuda", "--ops", "noise,langevin_step,gmm_chain", "--dtypes", "float32"]
    )
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "PASS  triton" in text and "PASS  cuda" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU nothing is emulated")
def test_command_line_switches_the_interpreter_on_in_a_fresh_process():
    # TRITON_INTERPRET only works when set before triton is imported: without it in the
    # environment, verify reruns itself with the switches set.
    if importlib.util.find_spec("triton") is None:
        require_or_skip("triton", "triton is not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SCOREFAST_CUDA_EMULATOR")}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "scorefast.cli",
            "verify",
            "--backends",
            "triton",
            "--ops",
            "noise",
            "--dtypes",
            "float32",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS triton noise normal" in _words(r.stdout)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--backends", "cpp,gpu"], "--backends"),
        (["--ops", "langevin"], "--ops"),
        (["--dtypes", "float8"], "--dtypes"),
        (["--require", "tpu"], "--require"),
        (["--ops", "samplers"], "--statistical"),
        (["--particles", "0"], "--particles"),
    ],
)
def test_bad_arguments_name_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["verify", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_assert_matches_reference_passes_and_returns_the_comparison():
    c = assert_matches_reference("langevin_step", backend="cpp", variant="clip")
    assert c.ok and 0 <= c.max_error and c.ratio <= 1
    c = assert_matches_reference(
        "langevin_step",
        backend="cpp",
        dtype=torch.bfloat16,
        guidance=2.5,
        clamp=(-1.0, 1.0),
        per_particle=True,
        particles=5,
        dim=3,
    )
    assert c.ok
    assert assert_matches_reference("gmm_chain", backend="reference", variant="mala").ok
    assert assert_matches_reference("noise", variant="philox_words", dtype=torch.int64).max_error == 0


def test_assert_matches_reference_raises_with_error_and_budget(monkeypatch):
    _plant_kernel_bug(monkeypatch, "cpp", "dsm_loss", error=1e-4)
    with pytest.raises(AssertionError, match=r"dsm_loss \[eps\] on cpp \(float32\) .*max error .* budget"):
        assert_matches_reference("dsm_loss", backend="cpp", variant="eps")
    with pytest.raises(ValueError, match="variant must be one of"):
        assert_matches_reference("dsm_loss", backend="cpp", variant="nope")
    with pytest.raises(ValueError, match="op must be one of"):
        assert_matches_reference("dsm", backend="cpp")


def test_importing_scorefast_testing_loads_nothing_heavy():
    code = (
        "import sys, scorefast.testing; before = sorted(m for m in sys.modules if m.startswith('scorefast.testing.'));"
        "from scorefast.testing import assert_matches_reference;"
        "print(before, 'scorefast.testing.cuda_emulator' in sys.modules)"
    )
    env = dict(os.environ, SCOREFAST_CUDA_EMULATOR="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[] False", out.stdout


def test_statistical_checks_pass_and_catch_twice_the_step(monkeypatch, capsys):
    # ~20 s: the same statistical checks twice (gmm_chain and the samplers on cpp).
    assert (
        cli.main(["verify", "--statistical", "--backends", "cpp", "--ops", "gmm_chain,samplers", "--dtypes", "float32"])
        == 0
    )
    assert "PASS cpp samplers target:mala" in _words(capsys.readouterr().out)

    real = scorefast.chain.gmm_chain

    def twice_the_step(x, mixture, **kw):
        if kw.get("method", "ula") == "ula":
            kw["step_size"] = 2 * kw["step_size"]
        return real(x, mixture, **kw)

    monkeypatch.setattr(scorefast.chain, "gmm_chain", twice_the_step)
    report = verify(backends=["cpp"], ops=["gmm_chain"], dtypes=[torch.float32], statistical=True)
    assert report.exit_status == 1
    stats = {r.variant: r for r in report.records if r.kind == "statistical"}
    assert stats["target:ula_gaussian"].status == "fail" and "cov" in stats["target:ula_gaussian"].detail
    assert stats["target:mala"].status == "pass" and stats["target:annealed"].status == "pass"
