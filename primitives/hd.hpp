// GHOSTNN_HD marks functions usable on the host and in CUDA device code (for headers that CUDA
// sources include; keep such headers free of host-only libraries).
#pragma once

#if defined(__CUDACC__)
#define GHOSTNN_HD __host__ __device__
#else
#define GHOSTNN_HD
#endif
