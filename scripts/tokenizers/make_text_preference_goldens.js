// The oracle for `dpo prepare-data` on TRL's text preference formats: Hugging Face's own
// tokenizers (the Rust library's node binding) and chat templates (@huggingface/jinja), applying
// TRL's rules as TRL's code states them (huggingface/trl, trl/data_utils.py extract_prompt and
// trl/trainer/dpo_trainer.py _prepare_dataset: add_eos, tokenize_fn), written out independently of
// dpo's C++. Invoked by scripts/make_text_preference_goldens.sh; argv: node_modules dir, tokenizer
// cache dir (CACHE/<name>/tokenizer.json + tokenizer_config.json), fixtures dir (reads the four
// *.jsonl, writes goldens/), and a file to which every rendered chat text is written (so that the
// shell script can check Python's Jinja2 renders the same).
const fs = require("fs");
const path = require("path");
const [modules, cache, fixtures, renderedPath] = process.argv.slice(2);
const { Tokenizer } = require(path.join(modules, "tokenizers"));
const { Template, Environment } = require(path.join(modules, "@huggingface", "jinja"));

// @huggingface/jinja 0.5.13 ignores the `chars` argument of str.strip/lstrip/rstrip (it trims all
// whitespace), so Qwen3's `content.lstrip('\n')` drops an assistant reply's leading spaces, where
// transformers (Python's Jinja2, what TRL runs) keeps them. Those three methods are given Python's
// semantics here; the shell script then checks every rendered text against Python's Jinja2.
const PYTHON_WHITESPACE = /^[\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$/u;
function pythonStrip(text, chars, left, right) {
  const points = Array.from(text);
  const strip = typeof chars === "string" ? ((c) => chars.includes(c)) : ((c) => PYTHON_WHITESPACE.test(c));
  let begin = 0, end = points.length;
  while (left && begin < end && strip(points[begin])) begin++;
  while (right && end > begin && strip(points[end - 1])) end--;
  return points.slice(begin, end).join("");
}
(function givePythonStripSemantics() {
  const env = new Environment();
  env.set("probe", "");
  const StringValue = env.variables.get("probe").constructor;
  const FunctionValue = env.variables.get("namespace").constructor;
  const original = Object.getOwnPropertyDescriptor(StringValue.prototype, "builtins").get;
  Object.defineProperty(StringValue.prototype, "builtins", { get() {
    const builtins = original.call(this);
    for (const [name, left, right] of [["strip", true, true], ["lstrip", true, false], ["rstrip", false, true]]) {
      builtins.set(name, new FunctionValue((args) => {
        const chars = args[0] && args[0].type === "StringValue" ? args[0].value : null;
        return new StringValue(pythonStrip(this.value, chars, left, right));
      }));
    }
    return builtins;
  } });
})();

const files = ["standard_explicit", "standard_implicit", "conversational_explicit", "conversational_implicit"];
// llama2's tokenizer_config.json has no chat_template: standard files only.
const tokenizers = { llama3: files, qwen3: files, gemma3: files, llama2: files.slice(0, 2) };

// Python's `a == b` on JSON values (dicts compare by key set, not key order).
function pyEqual(a, b) {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a), kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && pyEqual(a[k], b[k]));
}

// TRL's extract_prompt, line for line, with Python's semantics: strings are indexed by code point
// (Array.from), seq[-1] is the last element, and when no index differs the loop variable is left at
// the last index (so a response that equals or prefixes the other keeps its last element).
//   for idx in range(min(len(chosen), len(rejected))):
//       if chosen[idx] != rejected[idx]:
//           if chosen[idx - 1] == " ": idx -= 1
//           break
//   return chosen[:idx], chosen[idx:], rejected[idx:]
function extractPrompt(chosenIn, rejectedIn) {
  const isText = typeof chosenIn === "string";
  const chosen = isText ? Array.from(chosenIn) : chosenIn;
  const rejected = isText ? Array.from(rejectedIn) : rejectedIn;
  const n = Math.min(chosen.length, rejected.length);
  if (n === 0) throw new Error("extract_prompt: empty chosen or rejected (Python raises UnboundLocalError)");
  let idx = 0;
  for (; idx < n; idx++) {
    if (!pyEqual(chosen[idx], rejected[idx])) {
      const before = chosen[idx - 1 >= 0 ? idx - 1 : chosen.length - 1];
      if (before === " ") idx -= 1;
      break;
    }
  }
  if (idx === n) idx = n - 1;
  // Python slices with a negative start count from the end (only reachable via idx == -1).
  const cut = (seq, from, to) => seq.slice(from < 0 ? seq.length + from : from, to);
  const join = (seq) => (isText ? seq.join("") : seq);
  return { prompt: join(cut(chosen, 0, idx)), chosen: join(cut(chosen, idx)), rejected: join(cut(rejected, idx)) };
}

// TRL's is_conversational: the first row's fields are lists of {role, content} messages.
const isConversational = (row) => Array.isArray(row.chosen);
const tokenText = (token) => (token && typeof token === "object" ? token.content : token);

function loadTokenizer(name) {
  const dir = path.join(cache, name);
  const config = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
  const tokenizer = Tokenizer.fromString(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
  // The template sees messages, add_generation_prompt, bos_token and eos_token (strings), nothing else.
  const specials = {};
  for (const key of ["bos_token", "eos_token"]) {
    const text = tokenText(config[key]);
    if (typeof text === "string") specials[key] = text;
  }
  const template = config.chat_template ? new Template(config.chat_template) : null;
  return { tokenizer, specials, template, eos: tokenText(config.eos_token) };
}

async function encode(tok, text, addSpecialTokens) {
  return (await tok.tokenizer.encode(text, null, { addSpecialTokens })).getIds();
}

// One row to {prompt text, prompt+chosen text, prompt+rejected text} and whether to add specials.
function rowTexts(row, conversational, tok, name, rendered) {
  let { prompt, chosen, rejected } = row;
  if (!("prompt" in row)) ({ prompt, chosen, rejected } = extractPrompt(row.chosen, row.rejected));
  if (!conversational) {
    // add_eos: the EOS string appended to responses that do not already end with it.
    const withEos = (response) => (response.endsWith(tok.eos) ? response : response + tok.eos);
    return { texts: [prompt, prompt + withEos(chosen), prompt + withEos(rejected)], addSpecialTokens: true };
  }
  if (!tok.template) throw new Error(`${name}: conversational data needs a chat_template`);
  // apply_chat_template(tokenize=True) renders, then encodes without special tokens.
  const render = (messages, add_generation_prompt) => {
    const text = tok.template.render({ ...tok.specials, messages, add_generation_prompt });
    rendered.push({ tokenizer: name, messages, add_generation_prompt, text });
    return text;
  };
  return { texts: [render(prompt, true), render(prompt.concat(chosen), false), render(prompt.concat(rejected), false)],
           addSpecialTokens: false };
}

const startsWith = (ids, prefix) => prefix.length <= ids.length && prefix.every((id, i) => ids[i] === id);

async function goldenOf(name, tok, file, rendered) {
  const rows = fs.readFileSync(path.join(fixtures, file + ".jsonl"), "utf8").split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
  const conversational = isConversational(rows[0]);
  const lines = [];
  const mismatches = [];
  for (const [index, row] of rows.entries()) {
    const { texts, addSpecialTokens } = rowTexts(row, conversational, tok, name, rendered);
    const [prompt, promptChosen, promptRejected] = await Promise.all(texts.map((t) => encode(tok, t, addSpecialTokens)));
    // TRL only warns on a boundary mismatch and keeps the pair: responses are the joint ids after
    // the prompt's length.
    if (!startsWith(promptChosen, prompt) || !startsWith(promptRejected, prompt)) mismatches.push(index + 1);
    lines.push(JSON.stringify({ prompt_input_ids: prompt, chosen_input_ids: promptChosen.slice(prompt.length),
                                rejected_input_ids: promptRejected.slice(prompt.length) }));
  }
  return { lines, mismatches };
}

(async () => {
  const outDir = path.join(fixtures, "goldens");
  fs.mkdirSync(outDir, { recursive: true });
  const summary = {};
  const rendered = [];
  for (const [name, names] of Object.entries(tokenizers)) {
    const tok = loadTokenizer(name);
    for (const file of names) {
      const { lines, mismatches } = await goldenOf(name, tok, file, rendered);
      fs.writeFileSync(path.join(outDir, `${name}.${file}.jsonl`), lines.join("\n") + "\n");
      summary[`${name}.${file}`] = { pairs: lines.length, boundary_mismatches: mismatches.length,
                                     boundary_mismatch_lines: mismatches };
      console.log(`${name}.${file}: ${lines.length} pairs, ${mismatches.length} boundary mismatches (lines ${mismatches})`);
    }
  }
  fs.writeFileSync(path.join(outDir, "summary.json"), JSON.stringify(summary, null, 1).replace(/\[\s+([\d,\s]*?)\s+\]/g, (_, ids) => `[${ids.replace(/\s+/g, " ")}]`) + "\n");
  fs.writeFileSync(renderedPath, rendered.map((r) => JSON.stringify(r)).join("\n") + "\n");
})().catch((e) => { console.error(e); process.exit(1); });
