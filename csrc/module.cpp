// graphode._C: the Python module.  Importing it registers the torch.ops.graphode
// operators, whose schemas and CPU / CUDA implementations live in one file per
// op (csrc/<op>.cpp, each with its own TORCH_LIBRARY_FRAGMENT block).
#include <torch/library.h>

#include <pybind11/pybind11.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef TORCH_EXTENSION_NAME
#define TORCH_EXTENSION_NAME _C
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "graphode compiled kernels; importing registers torch.ops.graphode.*";
#ifdef GRAPHODE_WITH_CUDA
  m.attr("WITH_CUDA") = true;
#else
  m.attr("WITH_CUDA") = false;
#endif
  m.def(
      "omp_max_threads",
      []() {
#ifdef _OPENMP
        return omp_get_max_threads();
#else
        return 1;
#endif
      },
      "Number of OpenMP threads the CPU kernels may use (they follow torch.get_num_threads()).");
}
