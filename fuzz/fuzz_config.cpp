// libFuzzer harness: the config reader (config_from_yaml_text, which load_config calls with the
// file's text): YAML, then --set overrides, validation and resolution.
//
// Input: the YAML text, then NUL-separated --set items ("run:\n  seed: 1\n\0train.lr=1e-3\0...").
// An accepted config must dump (config.<command>.yaml) to YAML that loads back to the same config:
// a dump that does not is a corrupted record of the run, reported as a crash. dpo::Error is the
// expected refusal; any other exception escapes and libFuzzer reports it.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "dpo/config/config.h"
#include "dpo/error.h"

namespace {

[[noreturn]] void broken(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_config: %s\n%s\n", what, detail.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  size_t end = input.find('\0');
  const std::string yaml = input.substr(0, end);
  std::vector<std::string> overrides;
  while (end != std::string::npos) {
    const size_t begin = end + 1;
    end = input.find('\0', begin);
    overrides.push_back(input.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
  }
  dpo::Config config;
  try {
    config = dpo::config_from_yaml_text(yaml, overrides, "fuzz.yaml");
  } catch (const dpo::Error&) {
    return 0;  // the expected refusal of a bad config
  }
  const std::string dumped = dpo::dump_config(config);
  std::string reloaded;
  try {
    reloaded = dpo::dump_config(dpo::config_from_yaml_text(dumped, {}, "config.resolved.yaml"));
  } catch (const dpo::Error& e) {
    broken("the resolved config of an accepted config is refused", std::string(e.what()) + "\n" + dumped);
  }
  if (reloaded != dumped) broken("the resolved config does not load back to itself", dumped + "---\n" + reloaded);
  return 0;
}
