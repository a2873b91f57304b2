// Hugging Face tokenizers' single-thread encode throughput over a JSONL file of strings, as
// scripts/bench_tokenizer.sh compares with `dpo tokenize --stats`. argv: node_modules dir,
// tokenizer.json, corpus.jsonl. Run with RAYON_NUM_THREADS=1.
const fs = require("fs");
const path = require("path");
const [modules, tokenizerPath, corpusPath] = process.argv.slice(2);
const { Tokenizer } = require(path.join(modules, "tokenizers"));
const lines = fs.readFileSync(corpusPath, "utf8").split("\n").filter((l) => l.length).map((l) => JSON.parse(l));
const bytes = lines.reduce((sum, l) => sum + Buffer.byteLength(l, "utf8"), 0);
(async () => {
  const tokenizer = Tokenizer.fromFile(tokenizerPath);
  let start = process.hrtime.bigint();
  for (const line of lines) await tokenizer.encode(line, null, { addSpecialTokens: false });
  const perLine = Number(process.hrtime.bigint() - start) / 1e9;
  start = process.hrtime.bigint();
  await tokenizer.encodeBatch(lines, { addSpecialTokens: false });
  const batch = Number(process.hrtime.bigint() - start) / 1e9;
  console.log(`hf tokenizers: ${lines.length} lines, ${(bytes / 1e6).toFixed(2)} MB: ` +
    `${(bytes / 1e6 / perLine).toFixed(2)} MB/s one encode() per line, ${(bytes / 1e6 / batch).toFixed(2)} MB/s encodeBatch (one thread)`);
})();
