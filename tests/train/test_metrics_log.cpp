// What a run reports as it goes: metrics.jsonl as a resumed run finds it.
#include <fstream>
#include <sstream>
#include <string>

#include "catch2_api.h"

#include "dpo/train/metrics.h"
#include "scratch_dir.h"

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

TEST_CASE("a resumed run's metrics log keeps exactly the lines of the steps up to its checkpoint", "[metrics]") {
  ScratchDir dir("metrics-log");
  const std::string path = dir.str() + "/metrics.jsonl";
  std::ofstream(path) << "{\"step\":1,\"loss\":0.7}\n{\"step\":2,\"loss\":0.6}\n{\"step\":2,\"eval_loss\":0.65}\n"
                         "{\"step\":3,\"loss\":0.5}\nnot json\n{\"step\":4,\"lo";
  const dpo::MetricsLog log(dir.str(), 2, /*writer=*/true);
  CHECK(read_text(path) == "{\"step\":1,\"loss\":0.7}\n{\"step\":2,\"loss\":0.6}\n{\"step\":2,\"eval_loss\":0.65}\n");

  log.append_step(3, 0.75, {{"loss", 0.5}}, /*skipped=*/true);
  log.append_eval(3, {{"loss", 0.55}});
  CHECK(read_text(path) == "{\"step\":1,\"loss\":0.7}\n{\"step\":2,\"loss\":0.6}\n{\"step\":2,\"eval_loss\":0.65}\n"
                           "{\"epoch\":0.75,\"loss\":0.5,\"skipped\":true,\"step\":3}\n{\"eval_loss\":0.55,\"step\":3}\n");
}

TEST_CASE("only the writer of the metrics log touches the file", "[metrics]") {
  ScratchDir dir("metrics-log-reader");
  const std::string path = dir.str() + "/metrics.jsonl";
  std::ofstream(path) << "{\"step\":5}\n";
  const dpo::MetricsLog log(dir.str(), 2, /*writer=*/false);
  log.append_step(3, 0.75, {{"loss", 0.5}}, false);
  CHECK(read_text(path) == "{\"step\":5}\n");
}
