// The float and double instances of the edge_attention CPU kernels (edge_attention_cpu.h).
#define GRAPHODE_CPU_INSTANTIATE
#include "cpu/edge_attention_cpu.h"

namespace graphode {
namespace cpu {
GRAPHODE_EDGE_ATTENTION_CPU_INSTANCES(, float)
GRAPHODE_EDGE_ATTENTION_CPU_INSTANCES(, double)
}  // namespace cpu
}  // namespace graphode
