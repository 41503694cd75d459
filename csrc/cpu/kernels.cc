// Explicit float/double instantiations of the header-only CPU kernels: the
// graphode_cpu library of the CMake build (setup.py compiles the headers into
// graphode._C directly through csrc/cpu/ops_cpu.cpp and does not use this file).
#ifndef GRAPHODE_CPU_EXTERN_TEMPLATES
#define GRAPHODE_CPU_EXTERN_TEMPLATES
#endif
#define GRAPHODE_CPU_INSTANTIATE
#include "cpu/kernels.h"

namespace graphode {
namespace cpu {
GRAPHODE_CPU_DECLARE(float, )
GRAPHODE_CPU_DECLARE(double, )
}  // namespace cpu
}  // namespace graphode
