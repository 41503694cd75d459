// Input checks shared by the torch wrappers of graphode's ops (csrc/<op>.cpp),
// for both devices.  Every check raises a c10::Error (a Python RuntimeError)
// whose message names the op, the argument and the problem; nothing here reads
// tensor data, so it is device-agnostic.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <string>

namespace graphode {
namespace checks {

inline void check_defined(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is an undefined tensor");
}

inline void check_device(const char* op, const char* name, const at::Tensor& t, const at::Device& device) {
  TORCH_CHECK(t.device() == device, op, ": ", name, " is on ", t.device(), " but the other inputs are on ", device,
              "; all inputs of one call must be on the same device");
}

// A 1-D, contiguous int64 graph array with `size` entries (`what` explains the size).
inline void check_index(const char* op, const char* name, const at::Tensor& t, int64_t size, const char* what,
                        const at::Device& device) {
  check_defined(op, name, t);
  TORCH_CHECK(t.scalar_type() == at::kLong, op, ": ", name, " must be an int64 (torch.long) tensor, got ",
              t.scalar_type());
  TORCH_CHECK(t.dim() == 1, op, ": ", name, " must be 1-D, got shape ", t.sizes());
  TORCH_CHECK(t.size(0) == size, op, ": ", name, " must have ", size, " entries (", what, "), got ", t.size(0));
  check_device(op, name, t, device);
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
}

// The five graph arrays of Graph.csr() for a graph with N nodes; returns E.
inline int64_t check_graph(const char* op, const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& csc_ptr,
                           const at::Tensor& csc_row, const at::Tensor& csc_perm, int64_t N,
                           const at::Device& device) {
  check_defined(op, "col", col);
  TORCH_CHECK(col.dim() == 1, op, ": col must be 1-D [E], got shape ", col.sizes());
  const int64_t E = col.size(0);
  check_index(op, "rowptr", rowptr, N + 1, "N + 1, with N the number of rows of the node tensors", device);
  check_index(op, "col", col, E, "E", device);
  check_index(op, "csc_ptr", csc_ptr, N + 1, "N + 1", device);
  check_index(op, "csc_row", csc_row, E, "E = col.size(0)", device);
  check_index(op, "csc_perm", csc_perm, E, "E = col.size(0)", device);
  return E;
}

// A contiguous floating tensor of `dim` dimensions (`shape` documents them).
inline void check_float(const char* op, const char* name, const at::Tensor& t, int64_t dim, const char* shape,
                        const at::Device& device) {
  check_defined(op, name, t);
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": ", name, " must be a floating tensor, got ",
              t.scalar_type());
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must have shape ", shape, ", got ", t.sizes());
  check_device(op, name, t, device);
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous (call .contiguous() first)");
}

inline void check_same_dtype(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                             const at::Tensor& ref) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": dtype mismatch: ", name, " is ", t.scalar_type(),
              " but ", ref_name, " is ", ref.scalar_type());
}

inline void check_size(const char* op, const char* name, const at::Tensor& t, int64_t d, int64_t expected,
                       const char* what) {
  TORCH_CHECK(t.size(d) == expected, op, ": ", name, ".size(", d, ") must be ", expected, " (", what, "), got ",
              t.size(d), " (shape ", t.sizes(), ")");
}

inline void check_scale(const char* op, double scale) {
  TORCH_CHECK(std::isfinite(scale), op, ": scale must be finite, got ", scale);
}

// q, k [N, H, D] of one dtype and shape on one device (the attention ops).
inline void check_qk(const char* op, const at::Tensor& q, const at::Tensor& k) {
  check_float(op, "q", q, 3, "[N, H, D]", q.device());
  check_float(op, "k", k, 3, "[N, H, D]", q.device());
  TORCH_CHECK(q.sizes() == k.sizes(), op, ": q and k must have the same shape [N, H, D], got ", q.sizes(), " and ",
              k.sizes());
  check_same_dtype(op, "k", k, "q", q);
}

// t of shape [rows, cols] like ref's dtype (`what` documents rows and cols).
inline void check_matrix(const char* op, const char* name, const at::Tensor& t, int64_t rows, int64_t cols,
                         const char* shape, const at::Tensor& ref, const char* ref_name) {
  check_float(op, name, t, 2, shape, ref.device());
  check_size(op, name, t, 0, rows, shape);
  check_size(op, name, t, 1, cols, shape);
  check_same_dtype(op, name, t, ref_name, ref);
}

}  // namespace checks
}  // namespace graphode
