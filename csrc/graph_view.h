// The graph as every kernel sees it (torch-free, shared by csrc/cpu and csrc/cuda).
//
// Layout (see graphode/graph.py): CSR over *targets*.
//   rowptr [N+1], col [E]        in-edges j -> i of target i are
//                                e = rowptr[i] .. rowptr[i+1]-1, source col[e]
//   csc_ptr [N+1], csc_row [E],  out-edges of source j are the CSC positions
//   csc_perm [E]                 p = csc_ptr[j] .. csc_ptr[j+1]-1, with target
//                                csc_row[p] and CSR edge id csc_perm[p].
// All int64 and contiguous; host pointers for the CPU kernels, device pointers
// for the CUDA launchers.
#pragma once

#include <cstdint>

namespace graphode {

struct GraphView {
  const int64_t* rowptr = nullptr;    // [N+1]
  const int64_t* col = nullptr;       // [E]
  const int64_t* csc_ptr = nullptr;   // [N+1] (may be null for row-only ops)
  const int64_t* csc_row = nullptr;   // [E]
  const int64_t* csc_perm = nullptr;  // [E]
  int64_t num_nodes = 0;
  int64_t num_edges = 0;
};

// The transpose as a CSR view: rows are sources, col[p] their targets.  (Its
// own transpose's edge permutation, the inverse of csc_perm, is not at hand:
// csc_perm is null, so only kernels that need no CSC arrays may take it.)
inline GraphView transposed(const GraphView& g) {
  return {g.csc_ptr, g.csc_row, g.rowptr, g.col, nullptr, g.num_nodes, g.num_edges};
}

// Status codes of the CPU kernels.  They never throw and never read out of
// bounds: they validate the pointer arrays up front (O(N)) and every gathered
// index as they go (one compare per edge, in registers) and report the first
// problem as a non-zero code.  (The CUDA launchers trust the arrays, which the
// torch wrappers check for shape, dtype and device, and return cudaError_t.)
enum Status : int {
  kOk = 0,
  kBadRowptr = 1,   // rowptr[0] != 0, rowptr[N] != E or rowptr decreasing
  kBadCscPtr = 2,   // same for csc_ptr
  kBadCol = 3,      // col[e] outside [0, N)
  kBadCscRow = 4,   // csc_row[p] outside [0, N)
  kBadCscPerm = 5,  // csc_perm[p] outside [0, E)
  kBadSize = 6,     // negative sizes
};

inline const char* status_message(int status) {
  switch (status) {
    case kOk: return "ok";
    case kBadRowptr:
      return "rowptr is not a valid CSR pointer array: it must start at 0, end at E = col.size(0) and be non-decreasing";
    case kBadCscPtr:
      return "csc_ptr is not a valid pointer array: it must start at 0, end at E = csc_row.size(0) and be non-decreasing";
    case kBadCol: return "col contains a node index outside [0, N)";
    case kBadCscRow: return "csc_row contains a node index outside [0, N)";
    case kBadCscPerm: return "csc_perm contains an edge index outside [0, E)";
    case kBadSize: return "negative size";
    default: return "unknown error";
  }
}

}  // namespace graphode
