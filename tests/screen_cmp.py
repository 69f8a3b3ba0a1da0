"""Compare a workbench screen dump with its golden, as a machine other than
the one that made the golden may draw it: the text exactly, each decimal
figure within one unit of its last printed digit (another CPU's BLAS
kernels move the last bits, and a figure near a rounding boundary can
print one digit off), a run of bar or sparkline glyphs as a run of the
same length give or take one.  Exit 0 when they match; otherwise the first
differing line on stderr, exit 1.

    screen_cmp.py GOLDEN DUMP
"""
import re, sys

NUM = re.compile(r"[-+]?\d+\.\d+")
BARS = "\u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588\u258f\u258e\u258d\u258c\u258b\u258a\u2589"
RUN = re.compile("[%s]+" % BARS)


def parts(line):
    """The line as (skeleton, numbers, bar-run lengths)."""
    nums = [m.group(0) for m in NUM.finditer(line)]
    skel = NUM.sub("#", line)
    runs = [len(m.group(0)) for m in RUN.finditer(skel)]
    skel = RUN.sub("~", skel)
    return re.sub(r" +", " ", skel).rstrip(), nums, runs


def near(a, b):
    da = len(a.split(".")[1])
    if da != len(b.split(".")[1]):
        return False
    return abs(float(a) - float(b)) <= 1.0001 * 10 ** -da


g = open(sys.argv[1], encoding="utf-8").read().splitlines()
d = open(sys.argv[2], encoding="utf-8").read().splitlines()
if len(g) != len(d):
    sys.exit("%d lines, the golden has %d" % (len(d), len(g)))
for i, (a, b) in enumerate(zip(g, d)):
    if a == b:
        continue
    sa, na, ra = parts(a)
    sb, nb, rb = parts(b)
    ok = sa == sb and len(na) == len(nb) and all(near(x, y) for x, y in zip(na, nb)) and \
        len(ra) == len(rb) and all(abs(x - y) <= 1 for x, y in zip(ra, rb))
    if not ok:
        sys.exit("line %d differs:\n- %s\n+ %s" % (i + 1, a, b))
