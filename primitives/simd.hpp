// GHOSTNN_CLONES: compile a hot loop twice, for AVX2+FMA (Haswell and later) and for baseline
// x86-64, and pick the version at load time (GCC target_clones). Elsewhere, and under
// AddressSanitizer, it is a no-op.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__CUDACC__)
#define GHOSTNN_CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define GHOSTNN_CLONES
#endif
