// graphode CPU kernels (header-only, raw pointers, no torch): umbrella header.
//
//   spmm_forward / spmm_backward                         (cpu/spmm.h)
//   edge_attention_forward / edge_attention_backward     (cpu/attention.h)
//   attention_diffusion_forward / _backward              (cpu/attention.h)
//
// Every kernel is a template over the float type T (float or double), takes a
// GraphView plus raw contiguous row-major arrays, an optional thread count
// (<= 0: omp_get_max_threads()) and returns a Status code (cpu/common.h):
// kOk, or the reason the graph arrays were rejected.  They never throw.
#pragma once

#include "cpu/attention.h"
#include "cpu/common.h"
#include "cpu/spmm.h"

#ifdef GRAPHODE_CPU_EXTERN_TEMPLATES
// Users linking the graphode_cpu library (CMake) get the float/double
// instantiations from csrc/cpu/kernels.cc instead of compiling them again.
namespace graphode {
namespace cpu {
#define GRAPHODE_CPU_DECLARE(T, EXTERN)                                                                          \
  EXTERN template int spmm_forward<T>(const GraphView&, const T*, const T*, int64_t, T*, int);                 \
  EXTERN template int spmm_backward<T>(const GraphView&, const T*, const T*, const T*, int64_t, T*, T*, int);  \
  EXTERN template int edge_attention_forward<T>(const GraphView&, const T*, const T*, int64_t, int64_t, double, \
                                                T*, int);                                                      \
  EXTERN template int edge_attention_backward<T>(const GraphView&, const T*, const T*, const T*, const T*,      \
                                                 int64_t, int64_t, double, T*, T*, int);                       \
  EXTERN template int attention_diffusion_forward<T>(const GraphView&, const T*, const T*, const T*, int64_t,   \
                                                     int64_t, int64_t, double, T*, T*, int);                   \
  EXTERN template int attention_diffusion_backward<T>(const GraphView&, const T*, const T*, const T*, const T*, \
                                                      const T*, int64_t, int64_t, int64_t, double, T*, T*, T*, \
                                                      int);
#ifndef GRAPHODE_CPU_INSTANTIATE
GRAPHODE_CPU_DECLARE(float, extern)
GRAPHODE_CPU_DECLARE(double, extern)
#endif
}  // namespace cpu
}  // namespace graphode
#endif
