// Where the compiled kernels register: the torch.ops namespace and the dispatch key of the
// CUDA kernels. The op schemas themselves are declared once, in Python (scorefast/ops/).
#pragma once

// The library the compiled kernels register in: `scorefast`, or the emulator's.
#ifndef SCOREFAST_OPS_LIBRARY
#define SCOREFAST_OPS_LIBRARY scorefast
#endif
// The dispatch key of the CUDA kernels: CUDA, or CPU when they run in the emulator.
#ifndef SCOREFAST_CUDA_DISPATCH_KEY
#define SCOREFAST_CUDA_DISPATCH_KEY CUDA
#endif
#define SCOREFAST_STRINGIFY_(x) #x
#define SCOREFAST_STRINGIFY(x) SCOREFAST_STRINGIFY_(x)
// "scorefast::name" (or the emulator's namespace), for dispatcher lookups.
#define SCOREFAST_OP_NAME(name) SCOREFAST_STRINGIFY(SCOREFAST_OPS_LIBRARY) "::" name
