// Launch geometry shared by the CUDA kernels: one block size and the grid for a
// grid-stride loop (capped, since the loops stride anyway).
#pragma once

#include <cstddef>

namespace invad {
namespace cuda {

constexpr int kBlock = 256;

inline unsigned grid_for(size_t count, size_t max_blocks = 65535) {
  const size_t blocks = (count + kBlock - 1) / kBlock;
  return static_cast<unsigned>(blocks < max_blocks ? (blocks == 0 ? 1 : blocks) : max_blocks);
}

}  // namespace cuda
}  // namespace invad
