#pragma once
// CRC32C (Castagnoli), with the SSE4.2 instruction when the CPU has it.

#include <cstddef>
#include <cstdint>

namespace cairn {

// Extends `crc` (0 for a fresh checksum) over `size` bytes at `data`.
uint32_t crc32c(uint32_t crc, const void* data, size_t size);

}  // namespace cairn
