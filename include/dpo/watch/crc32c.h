// CRC-32C (Castagnoli), the checksum of TFRecord framing, and TFRecord's "masked" form of it.
// Owned here so that the event-file writer depends on no checksum library.
#pragma once
#include <cstddef>
#include <cstdint>

namespace dpo {

// CRC-32C of `size` bytes (reflected polynomial 0x82F63B78, initial and final XOR 0xFFFFFFFF):
// "123456789" gives 0xE3069283.
uint32_t crc32c(const void* data, size_t size);

// TFRecord's masked CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8. A CRC stored next to the data it
// covers is masked, so that a record holding its own CRC does not check out by accident.
uint32_t masked_crc32c(const void* data, size_t size);

}  // namespace dpo
