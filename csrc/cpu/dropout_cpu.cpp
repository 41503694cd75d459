// The float and double instances of the dropout CPU kernel (dropout_cpu.h; torch-free).
#include "cpu/dropout_cpu.h"

namespace graphode {
namespace cpu {
template void dropout_blocks<float>(const float*, float*, int64_t, uint64_t, uint32_t, float, int64_t, int64_t);
template void dropout_blocks<double>(const double*, double*, int64_t, uint64_t, uint32_t, double, int64_t, int64_t);
}  // namespace cpu
}  // namespace graphode
