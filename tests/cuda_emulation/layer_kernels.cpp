// backends/cudnn/layer_kernels.cu compiled as C++ for the emulated CUDA backend.
#include "backends/cudnn/layer_kernels.cu"
