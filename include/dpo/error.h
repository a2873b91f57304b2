// The one exception type of dpo. Its message is a single line that names the file, line, key
// or tensor at fault; the CLI prints it and exits non-zero (under MPI the failing rank aborts
// the job). Code never prints-and-exits on its own.
#pragma once
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace dpo {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(one_line(message)) {}

 private:
  // Messages quote names from input files (a tensor name, a YAML key) that may hold line breaks;
  // written as \n they keep the message one line.
  static std::string one_line(std::string text) {
    for (size_t at = text.find_first_of("\r\n"); at != std::string::npos; at = text.find_first_of("\r\n", at + 2))
      text.replace(at, 1, text[at] == '\n' ? "\\n" : "\\r");
    return text;
  }
};

// fail("{}:{}: field '{}' is missing", path, line, field) throws dpo::Error.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

// A tensor shape as messages write it, "[2, 3]": any range of integers (at::Tensor::sizes(), a
// std::vector<int64_t>).
template <typename Sizes>
std::string shape_text(const Sizes& sizes) {
  return fmt::format("[{}]", fmt::join(sizes, ", "));
}

}  // namespace dpo
