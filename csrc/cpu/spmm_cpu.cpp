// The float and double instances of the spmm CPU kernels (spmm_cpu.h).
#define GRAPHODE_CPU_INSTANTIATE
#include "cpu/spmm_cpu.h"

namespace graphode {
namespace cpu {
GRAPHODE_SPMM_CPU_INSTANCES(, float)
GRAPHODE_SPMM_CPU_INSTANCES(, double)
}  // namespace cpu
}  // namespace graphode
