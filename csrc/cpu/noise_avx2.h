// AVX2 noise fill (placeholder: the scalar loop, compiled for AVX2).
#pragma once

static void fill_normals(float* dst, int64_t D, uint64_t seed, uint32_t step,
                         uint64_t particle_offset, int64_t begin, int64_t n) {
  fill_normals_scalar(dst, D, seed, step, particle_offset, begin, n);
}
