"""Tools for testing scorefast's kernels: the CUDA emulator (``cuda_emulator``), which runs the
CUDA kernels on CPU tensors from a source checkout. Not imported by ``import scorefast``."""
