// Runs Hugging Face tokenizers (the Rust library's node binding, pinned in tokenizer_sources.json)
// over the corpus with each tokenizer and each component variant, and writes the ids and decoded
// text as goldens. Invoked by scripts/make_tokenizer_goldens.sh; argv: node_modules dir, cache
// dir (fetched tokenizer files), corpus.jsonl, variants.json, output dir.
const fs = require("fs");
const path = require("path");
const [modules, cache, corpusPath, variantsPath, outDir] = process.argv.slice(2);
const { Tokenizer } = require(path.join(modules, "tokenizers"));

const readCorpus = (file) => fs.readFileSync(file, "utf8").split("\n").filter((l) => l.length).map((l) => JSON.parse(l));
const variants = JSON.parse(fs.readFileSync(variantsPath, "utf8")).variants;

// The same patch the C++ test applies: top-level components replaced, model keys overridden,
// added tokens appended.
function patched(base, patch) {
  const j = JSON.parse(JSON.stringify(base));
  for (const key of ["normalizer", "pre_tokenizer", "post_processor", "decoder"])
    if (key in patch) j[key] = patch[key];
  if (patch.model) Object.assign(j.model, patch.model);
  if (patch.added_tokens) j.added_tokens = j.added_tokens.concat(patch.added_tokens);
  return j;
}

async function goldenLines(tokenizer, corpus) {
  const lines = [];
  for (const text of corpus) {
    const plain = (await tokenizer.encode(text, null, { addSpecialTokens: false })).getIds();
    const special = (await tokenizer.encode(text, null, { addSpecialTokens: true })).getIds();
    lines.push({ text, ids: plain, ids_with_special: special,
      decoded: await tokenizer.decode(special, false), decoded_skip_special: await tokenizer.decode(special, true) });
  }
  return lines;
}

(async () => {
  const bases = {};
  for (const [name, v] of Object.entries(variants)) {
    const file = path.join(cache, v.base, "tokenizer.json");
    bases[v.base] = bases[v.base] || JSON.parse(fs.readFileSync(file, "utf8"));
    const tokenizer = Tokenizer.fromString(JSON.stringify(patched(bases[v.base], v.patch || {})));
    const corpus = readCorpus(v.corpus ? path.join(path.dirname(corpusPath), v.corpus) : corpusPath);
    const out = { base: v.base, patch: v.patch || {}, lines: await goldenLines(tokenizer, corpus) };
    fs.writeFileSync(path.join(outDir, name + ".json"), JSON.stringify(out) + "\n");
    console.log(name, out.lines.length, "lines");
  }
})().catch((e) => { console.error(e); process.exit(1); });
