// The Catch2 API the tests are written in, on Debian 12's Catch2 2 and Debian 13's Catch2 3
// alike: TEST_CASE and the assertion macros, Approx, the string matchers Catch::Contains (Catch2 2's
// name; Catch2 3 calls it Catch::Matchers::ContainsSubstring, and its Catch::Matchers::Contains
// is a range matcher instead) and Catch::StartsWith, and Catch::Session for the two mains. Tests include this header,
// never a Catch2 header; tests/CMakeLists.txt finds the package and sets DPO_CATCH2_MAJOR.
#pragma once

#if DPO_CATCH2_MAJOR >= 3
#include <string>

#include <catch2/catch_approx.hpp>
#include <catch2/catch_session.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

using Catch::Approx;

namespace Catch {
inline Matchers::StringContainsMatcher Contains(const std::string& substring,
                                                CaseSensitive case_sensitivity = CaseSensitive::Yes) {
  return Matchers::ContainsSubstring(substring, case_sensitivity);
}
using Matchers::StartsWith;
}  // namespace Catch
#else
#include <catch2/catch.hpp>
#endif
