// GHOSTNN_CLONES: compile a hot loop twice, for x86-64-v3 (AVX2, FMA, BMI: Intel Haswell and
// later, AMD Zen and later) and for baseline x86-64, and pick the version at load time (GCC
// target_clones). The v3 clone is picked by the CPU's features; an "arch=haswell" clone, as this
// was before, is picked only on CPUs that identify as Intel Haswell, never on AMD (measured on
// this project's AMD EPYC VM: every clone ran its baseline version). Elsewhere, and under
// AddressSanitizer, it is a no-op.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__CUDACC__)
#define GHOSTNN_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define GHOSTNN_CLONES
#endif
