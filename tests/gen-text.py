#!/usr/bin/python3
"""gen-text.py SEED LINES: seeded lines of text that stress a byte-level BPE
tokenizer where real text rarely goes: scripts side by side, emoji with
joiners, skin tones and flags, combining marks and conjoining jamo in
decomposed order (so NFC has work), digits of several scripts, control
characters and the whitespace zoo, contractions in both cases, chat-template
tokens whole, doubled and cut short, and long runs.

Only characters assigned since Unicode 6 are drawn, so the tokenizers' own
Unicode versions (PCRE2, utf8proc, the JavaScript engine's ICU) agree on
them.  Two characters are left out on purpose: U+FEFF, which JavaScript's
\\s matches and the tokenizers library's Oniguruma does not, and U+0085,
which Oniguruma's \\s matches and JavaScript's does not; masq follows
Oniguruma (core/tokenizer.c).  Standard library only.
"""
import random
import sys

RANGES = [
    (0x41, 0x5A), (0x61, 0x7A), (0x30, 0x39), (0x21, 0x2F), (0x3A, 0x40),
    (0x5B, 0x60), (0x7B, 0x7E), (0xC0, 0xFF), (0x100, 0x17F), (0x391, 0x3C9),
    (0x410, 0x44F), (0x5D0, 0x5EA), (0x627, 0x64A), (0x660, 0x669),
    (0x905, 0x939), (0x966, 0x96F), (0xE01, 0xE2E), (0x3041, 0x3093),
    (0x30A1, 0x30F3), (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0xFF10, 0xFF19),
    (0xFF21, 0xFF3A), (0x2010, 0x2027), (0x2190, 0x21FF), (0x2200, 0x22FF),
    (0x1F600, 0x1F64F), (0x1F300, 0x1F5FF), (0x1F680, 0x1F6C5),
]
COMBINING = list(range(0x300, 0x370))
JAMO_L, JAMO_V, JAMO_T = (0x1100, 0x1112), (0x1161, 0x1175), (0x11A8, 0x11C2)
SPACES = [" ", " ", " ", "  ", "\t", "\r", "\x0b", "\x0c", "\u00a0", "\u3000",
          "\u2002", "\u2009", "\u202f", "\u2028", "\u2029", "   \t "]
CONTROL = ["\x00", "\x01", "\x07", "\x1b", "\x1f", "\x7f"]
SPECIAL = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|vision_start|>",
           "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
           "</tool_call>", "<think>", "</think>", "<|im_sta", "<|image_pad",
           "|>", "<|", "< |im_end|>"]
WORDS = ["the", "The", "THE", "don't", "DON'T", "I'm", "we'LL", "they're",
         "it's", "IT'S", "you've", "he'd", "café", "naïve", "Zürich",
         "Straße", "многомодальный", "模态", "量子化", "こんにちは", "한국어",
         "مرحبا", "שלום", "नमस्ते", "ภาษาไทย", "λόγος", "printf(\"%d\\n\", x);",
         "x+=1;", "==", "->", "::", "#include", "0x7fff", "3.14159",
         "1,000,000", "2026-12-01", "https://example.org/a?b=c&d=e",
         "user@example.com", "¿Qué?", "¡Sí!", "…", "—", "«»", "“quoted”"]
EMOJI_SEQ = ["\U0001F468\u200d\U0001F469\u200d\U0001F467", "\U0001F44D\U0001F3FD",
             "\U0001F1EB\U0001F1F7", "\u2764\ufe0f", "\U0001F3F3\ufe0f\u200d\U0001F308",
             "\U0001F9D1\u200d\U0001F4BB", "1\ufe0f\u20e3"]


def rand_char(r):
    lo, hi = r.choice(RANGES)
    return chr(r.randint(lo, hi))


def piece(r):
    k = r.random()
    if k < 0.30:
        return r.choice(WORDS)
    if k < 0.50:
        return "".join(rand_char(r) for _ in range(r.randint(1, 8)))
    if k < 0.62:
        return r.choice(SPACES)
    if k < 0.70:
        return r.choice(SPECIAL)
    if k < 0.76:
        return r.choice(EMOJI_SEQ)
    if k < 0.83:  # a letter and combining marks, in decomposed order
        base = r.choice("aeiouAEIOUnNcCsSzZ")
        return base + "".join(chr(r.choice(COMBINING)) for _ in range(r.randint(1, 3)))
    if k < 0.88:  # a Hangul syllable as conjoining jamo
        s = chr(r.randint(*JAMO_L)) + chr(r.randint(*JAMO_V))
        return s + (chr(r.randint(*JAMO_T)) if r.random() < 0.5 else "")
    if k < 0.92:
        return "".join(r.choice("0123456789") for _ in range(r.randint(1, 12)))
    if k < 0.95:
        return r.choice(CONTROL)
    if k < 0.97:
        return "'" + r.choice(["s", "S", "t", "T", "re", "RE", "Ve", "m", "M", "ll", "LL", "d", "D"])
    if k < 0.985:  # a long run
        return r.choice("a ._-=\u4e00") * r.randint(50, 400)
    return "".join(rand_char(r) for _ in range(r.randint(200, 800)))


def main():
    seed, n = int(sys.argv[1]), int(sys.argv[2])
    r = random.Random(seed)
    out = sys.stdout
    for _ in range(n):
        line = "".join(piece(r) for _ in range(r.randint(0, 30)))
        out.write(line.replace("\n", " ") + "\n")


if __name__ == "__main__":
    main()
