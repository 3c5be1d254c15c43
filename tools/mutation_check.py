"""Mutation check: do the tests catch planted sampler bugs?

Each mutant is a one-line change (a wrong step size, a dropped Metropolis-Hastings term, a
wrong noise scale, ...) to one file. The tool copies the repository to a scratch directory
(the files git tracks plus untracked ones it does not ignore, and the built scorefast/_C*.so;
C++ mutants are out of scope, so nothing is rebuilt), then for each mutant applies the change
there, runs the tests chosen for it with ``python -m pytest -x -q -p no:cacheprovider <tests>``
and restores the file. A mutant is caught when one of its tests fails. The repository itself
is never modified.

Each mutant names two lists of tests, run in this order:

* ``tests``: the tests whose job is to catch this kind of bug: statistical tests of the
  sampler's law (tests/test_sampler_power.py, tests/test_samplers.py, tests/test_cli.py) or,
  for the sanity mutants, the kernel-against-reference tests;
* ``cross_checks``: equivalence tests (fused chain against stepwise sampler, kernel against
  reference), run only when ``tests`` all pass. They catch a bug planted in one implementation
  but not one made the same way in all of them, so a mutant caught only here is reported as
  such: its statistical tests lack power.

Run it from the repository root:

    .venv/bin/python tools/mutation_check.py                 # every mutant
    .venv/bin/python tools/mutation_check.py --list          # the mutants and their tests
    .venv/bin/python tools/mutation_check.py --only mala_no_hastings,ula_double_step
    .venv/bin/python tools/mutation_check.py --no-cross-checks   # the statistical tests' power alone
    .venv/bin/python tools/mutation_check.py --keep --timeout 300   # keep the scratch copy and pytest logs

Before the mutants, one unmutated run of all the selected tests (the baseline; --no-baseline
skips it) checks that they pass, that every selected node id exists, and that the test process
imports ``scorefast`` and ``scorefast.kernels`` from the scratch copy. Exit status: 0 when every
mutant is caught, 1 when some survive (or time out), 2 when the check itself cannot be trusted:
a mutant's original text not found exactly once, a selected test missing or failing unmutated,
or the package imported from outside the scratch copy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    """A planted bug: ``old`` (exact text, found exactly once in ``path``) becomes ``new``."""

    name: str
    path: str  # relative to the repository root
    old: str
    new: str
    tests: tuple[str, ...]  # pytest node ids or files
    cross_checks: tuple[str, ...] = ()


POWER = "tests/test_sampler_power.py::"
SAMPLERS = "tests/test_samplers.py::"
CHAIN = "tests/test_chain.py::"
CLI = "tests/test_cli.py::"
RARE = "tests/test_rare_paths.py::"

# Node ids only (no -k): the baseline run can then check that every one of them still exists.
_MALA_STEPWISE = (
    POWER + "test_mala_stepwise_keeps_its_target",
    SAMPLERS + "test_mala_two_mode_matches_exact_samples[stepwise]",
    SAMPLERS + "test_mala_10d_mixture_keeps_exact_samples_exact[stepwise]",
    SAMPLERS + "test_mala_rejects_nan_ratios",
)
_MALA_STEPWISE_CROSS = (
    SAMPLERS + "test_mala_on_a_mixture_runs_the_fused_chain_with_the_same_result[methods]",
    CHAIN + "test_mala_chain_equals_the_generic_mala_sampler",
)
_MALA_NUMBA = (POWER + "test_mala_fused_chain_keeps_its_target[numba]",)
_MALA_NUMBA_CROSS = (
    CHAIN + "test_chain_matches_reference_within_the_noise_budget[numba-mala-2]",
    CHAIN + "test_mala_acceptances_equal_the_cpp_kernel[numba-torch.float64]",
)
_MALA_REF = (POWER + "test_mala_fused_chain_keeps_its_target[reference]",)
_MALA_REF_CROSS = (
    CHAIN + "test_chain_matches_reference_within_the_noise_budget[cpp:generic-mala-2]",
    CHAIN + "test_wider_particles_match_reference[cpp:generic-mala]",
)
_PC = (
    POWER + "test_predictor_corrector_matches_its_exact_law",
    POWER + "test_predictor_corrector_per_particle_rule_equals_its_float64_replay",
    SAMPLERS + "test_predictor_corrector_recovers_every_mode_with_both_snr_rules",
)
_CLI_ULA = (
    POWER + "test_scorefast_sample_matches_the_exact_law_of_its_y_coordinate",
    CLI + "test_sample_recovers_the_two_mode_mixture",
)

MUTANTS = (
    # --- MALA: the generic stepwise sampler, the numba chain kernel, the reference chain
    Mutant(
        "mala_always_accept",
        "scorefast/samplers.py",
        "accept = torch.log(u) < log_alpha",
        "accept = torch.ones_like(log_alpha, dtype=torch.bool)",
        _MALA_STEPWISE,
        _MALA_STEPWISE_CROSS,
    ),
    Mutant(
        "mala_no_hastings",
        "scorefast/samplers.py",
        "log_alpha = lp_y.double() - lp_x.double() + log_q_back - log_q_fwd",
        "log_alpha = lp_y.double() - lp_x.double()",
        _MALA_STEPWISE,
        _MALA_STEPWISE_CROSS,
    ),
    Mutant(
        "mala_proposal_2a",
        "scorefast/samplers.py",
        "log_q_back = -(back.double() ** 2).sum(1) / (4 * a)",
        "log_q_back = -(back.double() ** 2).sum(1) / (2 * a)",
        _MALA_STEPWISE,
        _MALA_STEPWISE_CROSS,
    ),
    Mutant(
        "numba_chain_mala_always_accept",
        "kernels/numba/chain.py",
        "if math.log(np.float64(uniform(w0))) < log_alpha:",
        "if True:",
        _MALA_NUMBA,
        _MALA_NUMBA_CROSS,
    ),
    Mutant(
        "numba_chain_mala_no_hastings",
        "kernels/numba/chain.py",
        "log_alpha = np.float64(lpy[0]) - np.float64(lpx[0]) - back / (4.0 * a64) + 0.5 * fwd",
        "log_alpha = np.float64(lpy[0]) - np.float64(lpx[0])",
        _MALA_NUMBA,
        _MALA_NUMBA_CROSS,
    ),
    Mutant(
        "numba_chain_mala_proposal_2a",
        "kernels/numba/chain.py",
        "back / (4.0 * a64)",
        "back / (2.0 * a64)",
        _MALA_NUMBA,
        _MALA_NUMBA_CROSS,
    ),
    Mutant(
        "ref_chain_mala_always_accept",
        "scorefast/ops/chain.py",
        "acc = torch.log(u) < log_alpha",
        "acc = torch.ones_like(log_alpha, dtype=torch.bool)",
        _MALA_REF,
        _MALA_REF_CROSS,
    ),
    Mutant(
        "ref_chain_mala_no_hastings",
        "scorefast/ops/chain.py",
        "log_alpha = lp_y - lp_x - back / (4 * a) + 0.5 * (z**2).sum(1)",
        "log_alpha = lp_y - lp_x",
        _MALA_REF,
        _MALA_REF_CROSS,
    ),
    Mutant(
        "ref_chain_mala_proposal_2a",
        "scorefast/ops/chain.py",
        "back / (4 * a)",
        "back / (2 * a)",
        _MALA_REF,
        _MALA_REF_CROSS,
    ),
    # --- ULA and annealed Langevin
    Mutant(
        "ula_double_step",
        "scorefast/samplers.py",
        "x, score_fn(x), step_size=step_size,",
        "x, score_fn(x), step_size=2 * step_size,",
        (POWER + "test_ula_stepwise_matches_its_exact_law",),
        (SAMPLERS + "test_langevin_on_a_mixture_runs_the_fused_chain_with_the_same_result",),
    ),
    Mutant(
        "numba_chain_ula_noise_sqrt_a",
        "kernels/numba/chain.py",
        "b = math.sqrt(two * a)",
        "b = math.sqrt(a)",
        (POWER + "test_ula_fused_chain_matches_its_exact_law[numba]",),
        (CHAIN + "test_chain_matches_reference_within_the_noise_budget[numba-ula-2]",),
    ),
    Mutant(
        "annealed_double_step",
        "scorefast/samplers.py",
        "a = epsilon / 2 * sigma**2 / last**2",
        "a = epsilon * sigma**2 / last**2",
        (
            POWER + "test_annealed_stepwise_matches_its_exact_law",
            SAMPLERS + "test_annealed_recovers_every_mode_where_ula_does_not",
        ),
        (SAMPLERS + "test_annealed_on_a_mixture_runs_the_fused_chain_with_the_same_result",),
    ),
    Mutant(
        "annealed_chain_half_sigma2",  # the noise levels handed to the chain kernels
        "scorefast/chain.py",
        "[s * s for s in sig]",
        "[s * s / 2 for s in sig]",
        (
            POWER + "test_annealed_fused_chain_matches_its_exact_law[cpp]",
            POWER + "test_annealed_fused_chain_matches_its_exact_law[numba]",
            CLI + "test_sample_targets_and_samplers[annealed]",
        ),
        (
            CHAIN + "test_chain_matches_reference_within_the_noise_budget[cpp:generic-annealed-2]",
            SAMPLERS + "test_annealed_on_a_mixture_runs_the_fused_chain_with_the_same_result",
        ),
    ),
    Mutant(
        "annealed_chain_half_sigma2_step",  # a_i = epsilon sigma_i^2 / sigma_L^2 with sigma_i^2 halved
        "scorefast/chain.py",
        "eps / 2 * s**2 / sig[-1] ** 2",
        "eps / 2 * (s**2 / 2) / sig[-1] ** 2",
        (
            POWER + "test_annealed_fused_chain_matches_its_exact_law[reference]",
            POWER + "test_annealed_fused_chain_matches_its_exact_law[cpp]",
            CLI + "test_sample_targets_and_samplers[annealed]",
        ),
        (
            SAMPLERS + "test_annealed_on_a_mixture_runs_the_fused_chain_with_the_same_result",
            CHAIN + "test_chain_equals_single_steps[cpp:generic-annealed-isotropic-torch.float64]",
        ),
    ),
    # --- predictor-corrector (the corrector has two step rules: per particle, the default, and batch mean)
    Mutant(
        "pc_double_predictor",
        "scorefast/samplers.py",
        "score_fn(x, s_i),\n                    step_size=var,",
        "score_fn(x, s_i),\n                    step_size=2 * var,",
        _PC,
    ),
    Mutant(
        "pc_corrector_double",
        "scorefast/samplers.py",
        "step = (2 * (snr * z_norm / s_norm) ** 2)",
        "step = (4 * (snr * z_norm / s_norm) ** 2)",
        _PC,
    ),
    Mutant(
        "pc_corrector_double_batch_mean",
        "scorefast/samplers.py",
        "step = (2 * (snr * batch_mean(z_norm) / batch_mean(s_norm)) ** 2)",
        "step = (4 * (snr * batch_mean(z_norm) / batch_mean(s_norm)) ** 2)",
        _PC,
    ),
    # --- SGLD, the default noise scale, the noise, the command line
    Mutant(
        "sgld_double_step",
        "scorefast/samplers.py",
        "step_size=self.step_size,",
        "step_size=2 * self.step_size,",
        (
            POWER + "test_sgld_replay_buffer_matches_its_exact_law",
            "tests/test_training.py::test_ebm_example_learns_the_mixture_with_replay_buffer_sgld",
        ),
    ),
    Mutant(
        "wrong_noise_scale",
        "scorefast/langevin.py",
        "b_s, b_t = math.sqrt(2 * a_s),",
        "b_s, b_t = math.sqrt(a_s),",
        (POWER + "test_ula_stepwise_matches_its_exact_law", *_CLI_ULA),
        ("tests/test_langevin.py::test_matches_reference[cpp:generic-plain-torch.float64]",),
    ),
    Mutant(
        "numba_no_box_muller_clamp",  # u1 < 1e-7 is never clamped: log(0) gives an infinite radius
        "kernels/numba/noise.py",
        "if u1 < _MIN_UNIFORM:",
        "if u1 < np.float32(0.0):",
        (
            "tests/test_noise.py::test_normals_match_reference[numba-0-0-0-64]",
            "tests/test_noise.py::test_normals_match_reference[numba-1234-17-5-33]",
            "tests/test_noise.py::test_normals_large_run_matches_reference[numba]",
            "tests/test_noise.py::test_normals_independent_of_thread_count[numba]",
            "tests/test_noise.py::test_small_particles_across_the_32bit_carry[numba-0-4]",
            "tests/test_noise.py::test_small_particles_across_the_32bit_carry[numba-4294967283-1]",
            POWER + "test_ula_fused_chain_matches_its_exact_law[numba]",
            RARE + "test_every_backend_clamps_the_tiny_uniform[numba-1-4-0]",
        ),
    ),
    Mutant(
        "ref_no_box_muller_clamp",  # the definition itself loses the clamp
        "scorefast/ops/noise.py",
        "u1 = torch.maximum(u1, torch.tensor(MIN_UNIFORM, **f32))",
        "u1 = torch.maximum(u1, torch.tensor(0.0, **f32))",
        (RARE + "test_reference_clamps_the_tiny_uniform",),
    ),
    Mutant(
        "numba_exp_flush_at_minus_80",  # weights up to e^-80 dropped: a visible share lost
        "kernels/numba/vmath.py",
        "_EXP_LO, _EXP_HI = _F(-87.0), _F(89.0)",
        "_EXP_LO, _EXP_HI = _F(-80.0), _F(89.0)",
        (RARE + "test_exp_flush_threshold[numba--86.9-isotropic-near_first]",),
    ),
    Mutant(
        "numba_exp_flush_at_minus_100",  # the flush moved below the float32 normal range
        "kernels/numba/vmath.py",
        "_EXP_LO, _EXP_HI = _F(-87.0), _F(89.0)",
        "_EXP_LO, _EXP_HI = _F(-100.0), _F(89.0)",
        (RARE + "test_exp_flush_threshold[numba--87.1-isotropic-near_first]",),
    ),
    Mutant(
        "cli_double_step",
        "scorefast/cli.py",
        "samplers.langevin(\n                score,\n                x,\n                steps=args.steps,\n"
        "                step_size=args.step_size,",
        "samplers.langevin(\n                score,\n                x,\n                steps=args.steps,\n"
        "                step_size=2 * args.step_size,",
        _CLI_ULA,
    ),
    # --- sharding, resumption, the NCSN convention, the diffusion ops and schedulers
    Mutant(
        "sharded_offset_dropped",
        "scorefast/distributed/sampling.py",
        "kwargs.update(x=x[rows].clone(), particle_offset=rows.start)",
        "kwargs.update(x=x[rows].clone(), particle_offset=0)",
        ("tests/test_distributed.py::test_particles_equal_the_single_process_run",),
    ),
    Mutant(
        "resume_reruns_done_steps",
        "scorefast/samplers.py",
        "runner.resume_at = ckpt.step",
        "runner.resume_at = 0",
        ("tests/test_resume.py::test_stepwise_sampler_killed_between_checkpoints_resumes_to_the_same_chain",),
    ),
    Mutant(
        "annealed_chain_epsilon_not_ncsn",
        "scorefast/chain.py",
        "eps / 2 * s**2 / sig[-1] ** 2",
        "eps * s**2 / sig[-1] ** 2",
        ("tests/test_ncsn_convention.py::test_fused_annealed_chain_is_ncsn",),
    ),
    Mutant(
        "ddpm_scheduler_variance_for_its_root",
        "scorefast/integrations/diffusers.py",
        "scale = variance**0.5",
        "scale = variance",
        ("tests/test_diffusers_schedulers.py::test_ddpm_with_a_generator_reproduces_diffusers",),
    ),
    Mutant(
        "corrector_explicit_noise_ignores_batch_mean",
        "scorefast/diffusion.py",
        "corrector_step_sizes(score, score_cond, w, z, snr, batch_mean, cd)",
        "corrector_step_sizes(score, score_cond, w, z, snr, False, cd)",
        ("tests/test_diffusion_step.py::test_corrector_matches_reference[numba-explicit_noise_guided-torch.float32]",),
    ),
    Mutant(
        "vp_v_target_sign",
        "scorefast/dsm_vp.py",
        "a, c = alpha, -sigma",
        "a, c = alpha, sigma",
        ("tests/test_dsm_vp_diffusers.py::test_v_target_is_get_velocity",),
    ),
    # --- sanity: bugs the kernel-against-reference tests are known to catch
    Mutant(
        "ref_chain_noise_sqrt_a",
        "scorefast/ops/chain.py",
        "noise_scale=math.sqrt(2 * a),",
        "noise_scale=math.sqrt(a),",
        (
            CHAIN + "test_chain_matches_reference_within_the_noise_budget[cpp:generic-ula-2]",
            POWER + "test_ula_fused_chain_matches_its_exact_law[reference]",
        ),
    ),
    Mutant(
        "ref_philox_word_swap",
        "scorefast/ops/noise.py",
        "z2, z3 = box_muller_ref(u[..., 2], u[..., 3])",
        "z2, z3 = box_muller_ref(u[..., 3], u[..., 2])",
        ("tests/test_noise.py::test_normals_match_reference[cpp:generic-0-0-0-4]",),
    ),
    Mutant(
        "dsm_backward_sign",
        "scorefast/ops/dsm.py",
        "return grad_pred.to(pred.dtype), None",
        "return -grad_pred.to(pred.dtype), None",
        (
            "tests/test_dsm.py::test_loss_and_gradient_match_reference[cpp:generic-dtype1-score]",
            "tests/test_dsm.py::test_gradcheck_float64",
        ),
    ),
    Mutant(
        "dsm_double_backward_factor",
        "scorefast/ops/dsm.py",
        "c = torch.full_like(sigma, 2.0) if eps_form",
        "c = torch.full_like(sigma, 1.0) if eps_form",
        ("tests/test_dsm.py::test_second_derivatives[cpp:generic-eps]",),
    ),
    Mutant(
        "ref_guidance_sign",
        "scorefast/ops/langevin.py",
        "g = g + guidance * (flat(score_cond) - g)",
        "g = g + guidance * (flat(score_cond) + g)",
        ("tests/test_langevin.py::test_matches_reference[cpp:generic-guided-torch.float64]",),
    ),
)

# Loaded into every test process (-p): records where each scorefast module was imported from.
_PROBE = """
import json
import os
import sys


def pytest_sessionfinish(session):
    found = {}
    for name, module in list(sys.modules.items()):
        if name == "scorefast" or name.startswith("scorefast."):
            found[name] = [getattr(module, "__file__", None) or ""] + list(getattr(module, "__path__", []) or [])
    with open(os.environ["SCOREFAST_MUTATION_PROBE"], "w") as f:
        json.dump(found, f)
"""


class CheckError(Exception):
    """The check cannot be trusted (exit status 2)."""


@dataclass
class Result:
    status: str  # caught, SURVIVED, TIMEOUT, ERROR
    seconds: float
    first_failure: str = ""
    by_cross_check: bool = False
    ran: tuple[str, ...] = ()
    note: str = ""
    line: int = 0  # where the mutant was planted, and that line before the change
    text: str = ""


# ---------------------------------------------------------------------------------------
# The scratch copy


def _repo_files() -> list[str]:
    # Untracked files that git does not ignore are included: new tests count before they are committed.
    out = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
    ).stdout
    return sorted({f for f in out.decode().split("\0") if f})


def make_scratch(tmp: Path) -> Path:
    scratch = tmp / "repo"
    for rel in _repo_files():
        src = ROOT / rel
        if not (src.is_file() or src.is_symlink()):
            continue  # deleted in the working tree, or a submodule
        dst = scratch / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst, follow_symlinks=False)
    extensions = sorted((ROOT / "scorefast").glob("_C*.so"))
    if not extensions:
        raise CheckError("scorefast/_C*.so is missing: build the extension first (pip install -e .)")
    for so in extensions:
        shutil.copy2(so, scratch / "scorefast" / so.name)
    # setup.py maps scorefast.kernels to kernels/; the editable install's finder would load it from
    # the original tree, so the scratch package gets its own: a link to the scratch kernels/.
    link = scratch / "scorefast" / "kernels"
    if link.exists():
        raise CheckError(f"{link} exists in the repository; expected kernels/ only at the top level")
    link.symlink_to(Path("..") / "kernels", target_is_directory=True)
    return scratch


def check_text(m: Mutant, root: Path) -> str | None:
    """None when ``m.old`` occurs exactly once in its file under ``root``, else what is wrong."""
    path = root / m.path
    if not path.is_file():
        return f"{m.path} does not exist"
    count = path.read_text(encoding="utf-8").count(m.old)
    return None if count == 1 else f"{m.old!r} occurs {count} times in {m.path} (expected exactly once)"


def _line_of(m: Mutant, root: Path) -> tuple[int, str]:
    text = (root / m.path).read_text(encoding="utf-8")
    i = text.find(m.old)
    if i < 0:
        return 0, ""
    start = text.rfind("\n", 0, i) + 1
    end = text.find("\n", i)
    return text.count("\n", 0, i) + 1, text[start : end if end >= 0 else len(text)].strip()


# ---------------------------------------------------------------------------------------
# Running pytest


class Runner:
    def __init__(self, tmp: Path, scratch: Path):
        self.tmp, self.scratch = tmp, scratch
        probe_dir = tmp / "probe"
        probe_dir.mkdir()
        (probe_dir / "scorefast_mutation_probe.py").write_text(_PROBE)
        self.probe_out = tmp / "probe.json"
        self.logs = tmp / "logs"
        self.logs.mkdir()
        # Numba caches compiled kernels keyed on each file's own timestamp, not on the helpers it
        # inlines from other files: mutants of numba code get an empty cache of their own, all
        # others share one that only ever sees unmutated kernels.
        self.shared_numba_cache = tmp / "numba-cache" / "shared"
        self.shared_numba_cache.mkdir(parents=True)
        env = dict(os.environ)
        # The CUDA emulator builds from <source dir>/csrc into <source dir>/build: keep both in the scratch copy.
        env.pop("SCOREFAST_SOURCE_DIR", None)
        env.pop("SCOREFAST_CUDA_EMULATOR_BUILD", None)
        # No .pyc files: a mutant and its restored original may share size and mtime second.
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        # The scratch copy first: ahead of the editable install's finder, which maps scorefast to /work/main.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(scratch), str(probe_dir), env.get("PYTHONPATH")]))
        env["SCOREFAST_MUTATION_PROBE"] = str(self.probe_out)
        self.env = env

    def pytest(self, args, *, timeout: float, numba_cache: Path, log: str, stop_first: bool = True):
        """(exit status or None on timeout, output, seconds)."""
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "scorefast_mutation_probe"]
        cmd += ["-x"] if stop_first else []
        cmd += ["-rfEs", *args]
        env = dict(self.env, NUMBA_CACHE_DIR=str(numba_cache))
        self.probe_out.unlink(missing_ok=True)
        start = time.monotonic()
        # A session of its own, so that a timeout kills the test process and anything it started.
        proc = subprocess.Popen(
            cmd,
            cwd=self.scratch,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=max(1.0, timeout))
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            rc = None
        (self.logs / f"{log}.log").write_text(" ".join(cmd) + "\n\n" + out)
        return rc, out, time.monotonic() - start

    def check_imports(self, required: bool) -> None:
        """Every scorefast module the test process imported came from the scratch copy."""
        if not self.probe_out.exists():
            if required:
                raise CheckError("the test process did not report its imports (see the log)")
            return
        found = json.loads(self.probe_out.read_text())
        root = os.path.realpath(self.scratch)
        for name in ("scorefast", "scorefast.kernels") if required else ():
            if name not in found:
                raise CheckError(f"the test process never imported {name}")
        for name, paths in found.items():
            for p in filter(None, paths):
                if not (p.startswith(str(self.scratch)) and os.path.realpath(p).startswith(root + os.sep)):
                    raise CheckError(f"the test process imported {name} from {p}, outside the scratch copy {root}")


def _failures(out: str) -> list[str]:
    """Node ids from pytest's short summary (FAILED / ERROR lines), in order."""
    ids = []
    for line in out.splitlines():
        for tag in ("FAILED ", "ERROR "):
            if line.startswith(tag):
                ids.append(line[len(tag) :].split(" - ")[0].strip())
    return ids


def _not_found(out: str) -> list[str]:
    return [line.split("not found:", 1)[1].strip() for line in out.splitlines() if "ERROR: not found:" in line]


def _existing(selection, scratch: Path) -> tuple[tuple[str, ...], list[str]]:
    """The selection without tests whose file does not exist (yet), and those files."""
    kept, missing = [], []
    for s in selection:
        file = s.split("::")[0]
        if (scratch / file).exists():
            kept.append(s)
        elif file not in missing:
            missing.append(file)
    return tuple(kept), missing


def run_mutant(m: Mutant, runner: Runner, timeout: float, cross_checks: bool) -> Result:
    path = runner.scratch / m.path
    original = path.read_bytes()
    stat = path.stat()
    numba_cache = runner.shared_numba_cache
    if m.path.startswith("kernels/numba/"):
        numba_cache = runner.tmp / "numba-cache" / m.name
        numba_cache.mkdir(parents=True)
    tests, missing = _existing(m.tests, runner.scratch)
    cross, missing_cross = _existing(m.cross_checks if cross_checks else (), runner.scratch)
    note = f"absent: {', '.join(missing + missing_cross)}" if missing or missing_cross else ""
    line, text = _line_of(m, runner.scratch)
    start = time.monotonic()
    ran: tuple[str, ...] = ()

    def result(status, first="", by_cross=False, extra=""):
        return Result(status, time.monotonic() - start, first, by_cross, ran, extra or note, line, text)

    try:
        path.write_text(original.decode("utf-8").replace(m.old, m.new), encoding="utf-8")
        for stage, selection in (("tests", tests), ("cross", cross)):
            if not selection:
                continue
            ran += selection
            left = timeout - (time.monotonic() - start)
            rc, out, _ = runner.pytest(selection, timeout=left, numba_cache=numba_cache, log=f"{m.name}.{stage}")
            runner.check_imports(required=False)
            if rc is None:
                return result("TIMEOUT")
            failed = _failures(out)
            # 1: a test failed; 2 with an ERROR line: a test module no longer imports under the mutant.
            if rc == 1 or (rc == 2 and failed):
                return result("caught", failed[0] if failed else "?", stage == "cross")
            if rc != 0:
                return result("ERROR", extra=f"pytest exit status {rc}; --keep keeps logs/{m.name}.{stage}.log")
        return result("SURVIVED", extra="" if ran else "no tests")
    finally:
        # The original bytes and timestamp: the shared numba cache stays valid for this file.
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        if numba_cache != runner.shared_numba_cache:
            shutil.rmtree(numba_cache, ignore_errors=True)


def baseline(mutants, runner: Runner, run_tests: bool, cross_checks: bool, timeout: float) -> float:
    """Run (or, without ``run_tests``, collect) every selected test unmutated; raise CheckError
    when one is missing or fails, or when scorefast is imported from outside the scratch copy."""
    selection: list[str] = []
    absent: list[str] = []
    for m in mutants:
        for sel in (m.tests, m.cross_checks if cross_checks else ()):
            kept, missing = _existing(sel, runner.scratch)
            selection += [s for s in kept if s not in selection]
            absent += [f for f in missing if f not in absent]
    for f in absent:
        print(f"note: {f} does not exist; its tests are left out")
    if not selection:
        return 0.0
    args = selection if run_tests else ["--collect-only", *selection]
    rc, out, secs = runner.pytest(
        args, timeout=timeout, numba_cache=runner.shared_numba_cache, log="baseline", stop_first=False
    )
    if rc is None:
        raise CheckError(f"the baseline run took longer than {timeout:.0f} s (--timeout)")
    runner.check_imports(required=True)
    missing = _not_found(out)
    if missing:
        raise CheckError("selected tests not found: " + ", ".join(missing))
    if rc != 0:
        failed = _failures(out)
        what = ", ".join(failed) if failed else f"pytest exit status {rc}"
        raise CheckError(f"selected tests fail without any mutant: {what}\n{out[-3000:]}")
    skipped = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    for line in skipped:  # a skipped test catches nothing
        print(f"warning: {line}")
    return secs


# ---------------------------------------------------------------------------------------


def _select(only: str | None) -> list[Mutant]:
    if not only:
        return list(MUTANTS)
    names = [n.strip() for n in only.split(",") if n.strip()]
    known = {m.name: m for m in MUTANTS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CheckError(f"unknown mutant(s): {', '.join(unknown)} (see --list)")
    return [known[n] for n in names]


def _list(mutants) -> int:
    bad = 0
    for m in mutants:
        problem = check_text(m, ROOT)
        bad += problem is not None
        line, _ = _line_of(m, ROOT)
        print(f"{m.name}  {m.path}:{line}" + (f"  ORIGINAL TEXT: {problem}" if problem else ""))
        print(f"    - {m.old}\n    + {m.new}")
        for t in m.tests:
            print(f"    test   {t}")
        for t in m.cross_checks:
            print(f"    cross  {t}")
    return 2 if bad else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutants and their tests, then exit")
    parser.add_argument("--only", metavar="NAME[,NAME]", help="run only these mutants")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (and the pytest logs)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant (default 300)")
    parser.add_argument("--no-baseline", action="store_true", help="only collect the selected tests unmutated")
    parser.add_argument(
        "--no-cross-checks", action="store_true", help="run only each mutant's own tests, not the equivalence tests"
    )
    args = parser.parse_args(argv)
    try:
        mutants = _select(args.only)
    except CheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.list:
        return _list(mutants)

    cross_checks = not args.no_cross_checks
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="scorefast-mutation-"))
    try:
        scratch = make_scratch(tmp)
        problems = [f"{m.name}: {p}" for m in mutants if (p := check_text(m, scratch))]
        if problems:
            raise CheckError("original text not found exactly once (update the mutant):\n  " + "\n  ".join(problems))
        runner = Runner(tmp, scratch)
        print(f"scratch copy: {scratch}")
        secs = baseline(mutants, runner, not args.no_baseline, cross_checks, max(args.timeout, 900.0))
        what = "collected" if args.no_baseline else "passed unmutated"
        print(f"baseline: the selected tests {what} in {secs:.1f} s, importing scorefast from the scratch copy")
        print()
        print(f"{'mutant':<32} {'file':<26} {'result':<8} {'secs':>6}  first failing test")
        results = {}
        for m in mutants:
            r = run_mutant(m, runner, args.timeout, cross_checks)
            results[m.name] = r
            first = r.first_failure + ("  (cross-check only)" if r.by_cross_check else "")
            extra = f"  [{r.note}]" if r.note else ""
            print(f"{m.name:<32} {m.path:<26} {r.status:<8} {r.seconds:6.1f}  {first}{extra}", flush=True)
    except CheckError as e:
        print(f"error: {e}", file=sys.stderr)
        if args.keep:
            print(f"scratch directory kept: {tmp}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    caught = [n for n, r in results.items() if r.status == "caught"]
    cross_only = [n for n in caught if results[n].by_cross_check]
    missed = [n for n, r in results.items() if r.status != "caught"]
    total = time.monotonic() - t0
    print()
    print(
        f"{len(results)} mutants: {len(caught)} caught ({len(cross_only)} only by cross-checks), "
        f"{len(missed)} not caught; {total:.0f} s in all"
    )
    # What to strengthen: the planted line and the tests that let it through.
    for n in missed + cross_only:
        m, r = next(m for m in mutants if m.name == n), results[n]
        label = r.status if r.status != "caught" else "caught only by a cross-check"
        print(f"\n{label}: {n}  {m.path}:{r.line}\n    - {r.text}\n    + {r.text.replace(m.old, m.new)}")
        for t in r.ran:
            print(f"    ran {t}")
        if r.note:
            print(f"    ({r.note})")
    if args.keep:
        print(f"\nscratch directory kept: {tmp} (pytest logs in {tmp / 'logs'})")
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
