"""The CUDA emulator itself (scorefast/testing/cuda_emulator.py, csrc/cuda_emulator/): the source
translation, and warp shuffles, barriers and shared memory against what CUDA specifies,
through the self-test kernels of csrc/cuda_emulator/self_test.cu. The CUDA kernels' own
tests run through it in the other files."""

from __future__ import annotations

import pytest
import torch

from scorefast import backend_registry
from scorefast.testing import cuda_emulator


def test_translate_rewrites_launches_and_dynamic_shared_memory():
    src = (
        "k<T, 4, true><<<blocks, kThreads, 0, stream>>>(c);\n"
        "kernel<<<grid, threads, static_cast<size_t>(bytes), stream>>>(a);\n"
        "plain<<<1, 32>>>(out,\n    more);\n"
        "  extern __shared__ __align__(16) unsigned char smem[];\n"
        "  extern __shared__ float buf[];\n"
    )
    out = cuda_emulator.translate(src)
    assert "::sf_emu::launch(k<T, 4, true>, blocks, kThreads, 0, stream)(c);" in out
    assert "::sf_emu::launch(kernel, grid, threads, static_cast<size_t>(bytes), stream)(a);" in out
    assert "::sf_emu::launch(plain, 1, 32)(out,\n    more);" in out
    assert "unsigned char* smem = reinterpret_cast<unsigned char*>(::sf_emu::launch_state().dynamic_smem);" in out
    assert "float* buf = reinterpret_cast<float*>(::sf_emu::launch_state().dynamic_smem);" in out


def test_translate_refuses_what_it_cannot_rewrite():
    with pytest.raises(RuntimeError, match="cannot translate"):
        cuda_emulator.translate("(*table[i])<<<1, 32>>>(x);")


def test_requested_reads_the_environment(monkeypatch):
    monkeypatch.setenv(cuda_emulator.ENV_FLAG, "0")
    assert not cuda_emulator.requested()
    monkeypatch.setenv(cuda_emulator.ENV_FLAG, "1")
    assert cuda_emulator.requested()


@pytest.fixture(scope="module")
def emu():
    if not cuda_emulator.requested():
        pytest.skip("the CUDA emulator is not in use (a GPU is present)")
    status = backend_registry.status("cuda")
    assert status.available, status.reason
    return backend_registry.op_namespace("cuda")


def _expected_shuffle(mode, arg, width, threads):
    out = []
    for t in range(threads):
        lane, base = t % 32, t - t % 32
        seg = lane - lane % width
        if mode == "down":
            src = lane + arg if lane % width + arg < width else lane
        elif mode == "up":
            src = lane - arg if lane % width - arg >= 0 else lane
        elif mode == "xor":
            src = lane ^ arg
            src = lane if src - src % width > seg else src  # a later segment reads its own value
        else:
            src = seg + arg % width
        out.append(float(base + src))
    return out


@pytest.mark.parametrize("mode", ["down", "up", "xor", "index"])
@pytest.mark.parametrize("width", [32, 16, 8, 4])
@pytest.mark.parametrize("arg", [1, 3, 4, 17])
def test_shuffles_follow_the_cuda_rules(emu, mode, width, arg):
    threads = 96  # three warps: the exchange stays inside each warp
    out = torch.full((threads,), -1.0)
    emu.emulator_shuffle_(out, ["down", "up", "xor", "index"].index(mode), arg, width)
    assert out.tolist() == _expected_shuffle(mode, arg, width, threads)


@pytest.mark.parametrize("blocks,threads", [(1, 32), (3, 64), (4, 256), (2, 1024)])
def test_block_barriers_and_shared_memory(emu, blocks, threads):
    # A tree reduction is right only if every halving waits for the previous one.
    x = torch.arange(1.0, 10_001.0, dtype=torch.float64)
    out = torch.zeros(blocks, dtype=torch.float64)
    emu.emulator_block_sum_(x, out, threads)
    stride = blocks * threads
    want = [
        float(sum(x[i].item() for i in range(b * threads, x.numel()) if (i % stride) // threads == b))
        for b in range(blocks)
    ]
    assert out.tolist() == want


def test_dynamic_shared_memory_and_its_limit(emu):
    out = torch.zeros(256)
    emu.emulator_mirror_(out, 256 * 4, False)
    assert out.tolist() == [float(255 - t) for t in range(256)]
    big = 64 * 1024  # past the 48 KiB a launch gets without raising the kernel's limit
    with pytest.raises(RuntimeError, match="cudaErrorInvalidValue"):
        emu.emulator_mirror_(out, big, False)
    out.zero_()
    emu.emulator_mirror_(out, big, True)
    assert out.tolist() == [float(255 - t) for t in range(256)]
    with pytest.raises(RuntimeError, match="cudaErrorInvalidValue"):
        emu.emulator_mirror_(out, 300 * 1024, True)  # past the device's opt-in maximum


def test_a_shuffle_naming_an_exited_lane_is_an_error(emu):
    with pytest.raises(RuntimeError, match="exited"):
        emu.emulator_exited_lane_(torch.zeros(32))
    # The emulator is usable again afterwards.
    out = torch.zeros(32)
    emu.emulator_shuffle_(out, 0, 1, 32)
    assert out.tolist() == _expected_shuffle("down", 1, 32, 32)


def _kernel_outputs(seed=0):
    """Outputs of CUDA kernels that share data through shared memory and shuffles: score
    clipping (block and warp reductions), the DSM loss (team, warp and block reductions),
    gmm_score (shared tiles of components; warp-per-point, in registers and in shared
    memory) and the small-D chain (a shared tile of the mixture)."""
    import scorefast
    from scorefast.targets.presets import random_mixture

    g = torch.Generator().manual_seed(seed)
    out = []
    for P, D in [(40, 33), (3, 5000)]:
        x, s = torch.randn(P, D, generator=g), torch.randn(P, D, generator=g)
        out.append(scorefast.langevin_step(x, s, step_size=0.1, max_score_norm=2.0, seed=1, backend="cuda"))
    for B, D in [(300, 33), (6, 516), (3, 4096)]:
        pred, sigma = torch.randn(B, D, generator=g), 0.5 + torch.rand(B, generator=g)
        out.append(
            scorefast.dsm_loss(pred, torch.randn(B, D, generator=g), sigma, seed=2, backend="cuda", reduction="none")
        )
    for K, D, kind in [(130, 2, "diagonal"), (8, 64, "full"), (3, 1030, "isotropic")]:
        mix = random_mixture(K, D, seed=K, kind=kind)
        out.extend(scorefast.gmm_score(mix.sample(40, seed=1).float(), mix, backend="cuda"))
    mix = random_mixture(130, 3, seed=5, kind="diagonal", spread=3.0)
    out.append(
        scorefast.gmm_chain(
            mix.sample(300, seed=2).float(), mix, method="mala", steps=4, step_size=0.1, seed=4, backend="cuda"
        ).x
    )
    return out


def test_kernels_give_the_same_bits_whatever_the_thread_order(emu, monkeypatch):
    # Shared memory read before the barrier that orders it would show up as a difference.
    forward = _kernel_outputs()
    monkeypatch.setenv("SCOREFAST_CUDA_EMULATOR_REVERSE", "1")
    reverse = _kernel_outputs()
    assert len(forward) == len(reverse) > 0
    for a, b in zip(forward, reverse):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
