// tokenizer.json post-processors for one sequence: TemplateProcessing (its "single" template),
// BertProcessing, RobertaProcessing, ByteLevel (offsets only: ids unchanged), Sequence. Special
// tokens are added only when asked (add_special_tokens).
#include "dpo/error.h"
#include "dpo/text/tokenizer_components.h"

namespace dpo {

namespace {

// The single-sequence template as a list of pieces: special-token ids, or the sequence itself
// (an empty list).
class TemplateProcessing : public PostProcessor {
 public:
  explicit TemplateProcessing(std::vector<std::vector<int64_t>> pieces) : pieces_(std::move(pieces)) {}
  void process(std::vector<int64_t>& ids, bool add_special_tokens) const override {
    if (!add_special_tokens) return;
    std::vector<int64_t> out;
    out.reserve(ids.size() + 4);
    for (const auto& piece : pieces_) out.insert(out.end(), piece.empty() ? ids.begin() : piece.begin(), piece.empty() ? ids.end() : piece.end());
    ids = std::move(out);
  }

 private:
  std::vector<std::vector<int64_t>> pieces_;
};

class PostProcessorSequence : public PostProcessor {
 public:
  explicit PostProcessorSequence(std::vector<std::unique_ptr<PostProcessor>> steps) : steps_(std::move(steps)) {}
  void process(std::vector<int64_t>& ids, bool add_special_tokens) const override {
    for (const auto& step : steps_)
      if (step) step->process(ids, add_special_tokens);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

std::unique_ptr<PostProcessor> make_template(const nlohmann::json& spec, const std::string& where) {
  const auto& single = required_key(spec, "single", where);
  const auto& special_tokens = required_key(spec, "special_tokens", where);
  std::vector<std::vector<int64_t>> pieces;
  for (size_t i = 0; i < single.size(); ++i) {
    auto piece_where = fmt::format("{}.single[{}]", where, i);
    if (single[i].contains("Sequence")) {
      pieces.emplace_back();  // the sequence; "B" never occurs in a one-sequence encode
      continue;
    }
    auto name = required_key(required_key(single[i], "SpecialToken", piece_where), "id", piece_where).get<std::string>();
    if (!special_tokens.contains(name)) fail("{}: special token '{}' is not in special_tokens", piece_where, name);
    auto ids = required_key(special_tokens[name], "ids", where + ".special_tokens." + name).get<std::vector<int64_t>>();
    if (ids.empty()) continue;
    pieces.push_back(std::move(ids));
  }
  return std::make_unique<TemplateProcessing>(std::move(pieces));
}

// Bert: [CLS] A [SEP]; Roberta: <s> A </s>; both written {"cls": [token, id], "sep": [token, id]}.
std::unique_ptr<PostProcessor> make_cls_sep(const nlohmann::json& spec, const std::string& where) {
  auto id_of = [&](const char* key) {
    const auto& pair = required_key(spec, key, where);
    if (!pair.is_array() || pair.size() != 2 || !pair[1].is_number_integer())
      fail("{}: key '{}' must be [token, id]", where, key);
    return std::vector<int64_t>{pair[1].get<int64_t>()};
  };
  return std::make_unique<TemplateProcessing>(std::vector<std::vector<int64_t>>{id_of("cls"), {}, id_of("sep")});
}

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& spec, const std::string& where) {
  if (spec.is_null()) return nullptr;
  auto type = required_key(spec, "type", where).get<std::string>();
  if (type == "TemplateProcessing") return make_template(spec, where);
  if (type == "BertProcessing" || type == "RobertaProcessing") return make_cls_sep(spec, where);
  if (type == "ByteLevel") return nullptr;  // trims offsets, which dpo does not keep
  if (type == "Sequence") {
    return std::make_unique<PostProcessorSequence>(sequence_steps(spec, "processors", where, make_post_processor));
  }
  fail("{}: post_processor type '{}' is not supported", where, type);
}

}  // namespace dpo
