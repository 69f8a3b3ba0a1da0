#!/usr/bin/env python3
"""Checks of `masq run --json` documents: what MASQuant must show on the demo
(the paper's Table 3 and Figure 6 claims, issue 3) and the document's shape.

Usage: run_check.py KIND FILE...   (prints TAP lines, no plan)
"""
import json
import math
import sys

n = 0
failed = 0


def ok(cond, name, diag=None):
    global n, failed
    n += 1
    print(("ok" if cond else "not ok") + " - %s" % name)  # unnumbered: the shell counts them
    if not cond:
        failed += 1
        if diag:
            print("# " + str(diag))


def load(path):
    with open(path) as f:
        return json.load(f)


def runs(doc):
    return {r["method"]: r for r in doc["runs"]} if doc.get("method") == "all" else {doc["method"]: doc}


def shape(doc):
    for r in runs(doc).values():
        ok(all(k in r for k in ("method", "wbits", "abits", "summary", "layers")),
           "%s: method, wbits, abits, summary and layers are there" % r["method"])
        s = r["summary"]["sqnr_db"]
        ok(all(k in s for k in ("text", "vision", "audio")), "%s: summary.sqnr_db has text, vision, audio" % r["method"])
        lin = r["layers"][0]["linears"]
        ok(len(lin) == 7 and all("alpha" in x and "rank" in x and "sqnr_db" in x for x in lin),
           "%s: every layer lists 7 linears with alpha, rank, sqnr_db" % r["method"])
        ok(all(isinstance(v, float) and math.isfinite(v) for v in s.values() if v is not None),
           "%s: summary SQNR values are finite numbers" % r["method"])


def claims(all_doc, full_doc, diag_doc, margin):
    R = runs(all_doc)
    sq, mas, cmc = R["sq"]["summary"]["sqnr_db"], R["mas"]["summary"]["sqnr_db"], R["mas-cmc"]["summary"]["sqnr_db"]
    print("# summary SQNR text/vision/audio: rtn %s sq %s mas %s mas-cmc %s" % tuple(
        "%.2f/%.2f/%.2f" % (R[m]["summary"]["sqnr_db"]["text"], R[m]["summary"]["sqnr_db"]["vision"],
                            R[m]["summary"]["sqnr_db"]["audio"]) for m in ("rtn", "sq", "mas", "mas-cmc")))
    ok(sq["text"] < mas["text"] - margin,
       "SmoothQuant's text SQNR is clearly below MAS's (%.2f < %.2f - %.1f dB)" % (sq["text"], mas["text"], margin))
    ok(R["rtn"]["summary"]["sqnr_db"]["all"] < sq["all"], "SmoothQuant beats RTN over all tokens")
    # text uses the stored weight Q(S_t W): the first layer's q, k, v outputs
    # for text tokens are the same as MAS's, bit for bit.
    lm = {x["name"]: x for x in R["mas"]["layers"][0]["linears"]}
    lc = {x["name"]: x for x in R["mas-cmc"]["layers"][0]["linears"]}
    for name in ("q_proj", "k_proj", "v_proj"):
        ok(lm[name]["sqnr_db"]["text"] == lc[name]["sqnr_db"]["text"] and
           lm[name]["mae"]["text"] == lc[name]["mae"]["text"],
           "layer 0 %s: MAS+CMC's text output is MAS's exactly (%.6f dB)" % (name, lc[name]["sqnr_db"]["text"]))
    ok(any(lm[name]["sqnr_db"]["vision"] != lc[name]["sqnr_db"]["vision"] for name in ("q_proj", "k_proj")),
       "layer 0: vision outputs do differ (the compensation is applied)")
    # full rank compensates the weight mismatch exactly
    F = runs(full_doc)["mas-cmc"]["summary"]["sqnr_db"]
    for m in ("vision", "audio"):
        ok(F[m] >= mas[m], "rank 1.0: MAS+CMC's %s SQNR is at least MAS's (%.2f >= %.2f)" % (m, F[m], mas[m]))
    # whitening: the whitened error at rank r/4 is no larger than the plain
    # error at rank r (a rank at least 3 times smaller reaches it)
    D = runs(diag_doc)["mas-cmc"]
    ok(sum(len(x.get("cmc", {})) for x in D["layers"][0]["linears"]) >= 12,
       "layer 0 reports CMC diagnostics for the six smoothed linears, vision and audio")
    worst = None
    for x in D["layers"][0]["linears"]:
        for m, c in x.get("cmc", {}).items():
            w = {round(r, 6): e for r, e in c["rel_err_by_rank"]}
            p = {round(r, 6): e for r, e in c["rel_err_by_rank_unwhitened"]}
            good = w[0.125] <= p[0.5]
            if worst is None or w[0.125] / max(p[0.5], 1e-30) > worst[0]:
                worst = (w[0.125] / max(p[0.5], 1e-30), x["name"], m, w[0.125], p[0.5])
            ok(good, "layer 0 %s %s: whitened error at rank 1/8 (%.4g) <= unwhitened at 1/2 (%.4g)" % (
                x["name"], m, w[0.125], p[0.5]))
    if worst is not None:
        print("# hardest case: %s %s, whitened(1/8)/unwhitened(1/2) = %.3f" % (worst[1], worst[2], worst[0]))


def main():
    kind = sys.argv[1]
    if kind == "shape":
        for f in sys.argv[2:]:
            shape(load(f))
    elif kind == "claims":
        claims(load(sys.argv[2]), load(sys.argv[3]), load(sys.argv[4]), float(sys.argv[5]))
    elif kind == "search":
        r = runs(load(sys.argv[2]))
        for name, d in r.items():
            grid = None
            for l in d["layers"]:
                s = l.get("alpha_search")
                ok(s is not None, "%s layer %d: the search curve is reported" % (name, l["layer"]))
                if s is None:
                    continue
                for row, c in s.items():
                    if row == "tokens":
                        continue
                    # the SQNR recorded at the chosen alpha is the curve's maximum
                    at = [p[1] for p in c["curve"] if abs(p[0] - c["best"]) < 1e-6]
                    ok(len(at) == 1 and at[0] == max(p[1] for p in c["curve"]),
                       "%s layer %d %s: best alpha %.2f has the highest SQNR on its curve" % (name, l["layer"], row, c["best"]))
                    if row in ("text", "vision", "audio"):
                        used = {x["name"]: x["alpha"][row] for x in l["linears"]}
                        for lead in ("q_proj", "o_proj", "up_proj"):
                            ok(abs(used[lead] - c["best"]) < 1e-6, "%s layer %d %s: %s uses the chosen alpha" % (name, l["layer"], row, lead))
    print("# %d checks, %d failed" % (n, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
