// The current time as the files dpo writes record it.
#pragma once
#include <string>

namespace dpo {

// UTC, ISO 8601 to the second: "2026-12-03T07:30:00Z".
std::string utc_timestamp();

}  // namespace dpo
