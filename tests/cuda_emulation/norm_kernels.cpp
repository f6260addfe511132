// backends/cudnn/norm_kernels.cu compiled as C++ for the emulated CUDA backend.
#include "backends/cudnn/norm_kernels.cu"
