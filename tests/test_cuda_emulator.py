"""The CUDA emulator itself (scorefast/cuda_emulator.py, csrc/cuda_emulator/): the source
translation, and warp shuffles, barriers and shared memory against what CUDA specifies,
through the self-test kernels of csrc/cuda_emulator/self_test.cu. The CUDA kernels' own
tests run through it in the other files."""
from __future__ import annotations

import pytest
import torch

from scorefast import backend_registry, cuda_emulator


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
    return cuda_emulator.ops()


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
    want = [float(sum(x[i].item() for i in range(b * threads, x.numel()) if (i % stride) // threads == b))
            for b in range(blocks)]
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
