"""JIT-compiled kernels, installed as ``scorefast.kernels``: Triton (``triton/``, CUDA GPUs and
the Triton interpreter) and numba (``numba/``, CPUs without a compiler). The ahead-of-time C++
and CUDA kernels are in ``csrc/``. Each backend package is light to import: its kernels load
when the backend registry first asks for its status."""
