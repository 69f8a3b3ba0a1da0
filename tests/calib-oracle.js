// calib-oracle.js NODE_MODULES MODEL_DIR PROMPTS.jsonl: each sample of a
// masq calib prompts file rendered by transformers.js's own chat template
// engine (@huggingface/jinja inside @lenml/tokenizers) with the model's
// chat_template.json, and tokenized by transformers.js with the model's
// tokenizer.json: one JSON line a sample, {"line": N, "prompt": "...",
// "ids": [...], "images": [...]}, the images as the file names them.  The
// sample semantics are masq-calib(5)'s: <image> markers place the images,
// else they come first; "prompt" is taken as it is.
'use strict';
const fs = require('fs');
const path = require('path');
const [nm, dir, prompts] = process.argv.slice(2);
const { TokenizerLoader } = require(path.join(nm, '@lenml', 'tokenizers'));
const tok = TokenizerLoader.fromPreTrained({
	tokenizerJSON: JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')),
	tokenizerConfig: JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8')),
});
// The bundled Jinja has no `is string` test; every message here has a
// list for content, for which the test is false, as `is undefined` is.
const template = JSON.parse(fs.readFileSync(path.join(dir, 'chat_template.json'), 'utf8')).chat_template
	.split("message['content'] is string").join("message['content'] is undefined");
const lines = fs.readFileSync(prompts, 'utf8').split('\n');
const out = [];
lines.forEach((l, i) => {
	if (l.trim() === '')
		return;
	const s = JSON.parse(l);
	const images = s.images || [];
	let prompt = s.prompt;
	if (prompt === undefined) {
		const content = [];
		const parts = s.text.split('<image>');
		if (parts.length === 1) {
			for (const _ of images)
				content.push({ type: 'image' });
			if (s.text !== '')
				content.push({ type: 'text', text: s.text });
		} else {
			parts.forEach((p, k) => {
				if (k > 0)
					content.push({ type: 'image' });
				if (p !== '')
					content.push({ type: 'text', text: p });
			});
		}
		const msgs = [];
		if (s.system !== undefined)
			msgs.push({ role: 'system', content: [{ type: 'text', text: s.system }] });
		msgs.push({ role: 'user', content });
		prompt = tok.apply_chat_template(msgs, { chat_template: template, add_generation_prompt: true,
			tokenize: false });
	}
	const ids = tok.encode(prompt, { add_special_tokens: false });
	out.push(JSON.stringify({ line: i + 1, prompt, ids, images }));
});
process.stdout.write(out.join('\n') + '\n');
