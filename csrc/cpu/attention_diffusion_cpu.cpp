// The float and double instances of the attention_diffusion CPU kernels (attention_diffusion_cpu.h).
#define GRAPHODE_CPU_INSTANTIATE
#include "cpu/attention_diffusion_cpu.h"

namespace graphode {
namespace cpu {
GRAPHODE_ATTENTION_DIFFUSION_CPU_INSTANCES(, float)
GRAPHODE_ATTENTION_DIFFUSION_CPU_INSTANCES(, double)
}  // namespace cpu
}  // namespace graphode
