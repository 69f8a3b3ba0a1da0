#!/usr/bin/env python3
"""tests/mpi_run_check.py: one process's masq run against the same run under
mpirun (tests/mpi_run.sh), by what each recorded.

    mpi_run_check.py ONE.json ONE.db MANY.json MANY.db NP TOL

prints TAP lines "ok - ..." / "not ok - ...":
- the --json documents have the same fields, and every value that is not a
  float (methods, bits, ranks, token counts, the alpha the search chose, the
  held-out sequences) is equal; every float is equal for NP 1, and within
  TOL relative otherwise (below 1e-9, TOL is the sums' association alone;
  above, absolute below 1e-6, where a residual of 1e-14 is rounding noise);
- each database holds the same commands in the same order, every session
  finished; the environment records NP processes (nothing for one);
- every layer's recorded maxima are one process's bits (the FP chain runs
  one GEMM a sequence, so a rank's share of it is one process's);
- the last checkpoint holds every token of both chains: the FP chain the
  same bits, the quantized one the same bits when TOL is below 1e-9, else
  within 1e-6 of its largest value (compensation's factors come from Gram
  matrices summed in another order).
"""
import json
import sqlite3
import struct
import sys

import numpy as np

SKIP = {"session", "database", "seconds", "phase_seconds"}


def say(good, what):
    print(("ok - " if good else "not ok - ") + what)


def walk(x, y, path, out):
    """Collect (kind, path, x, y) of every difference between x and y."""
    if isinstance(x, dict) and isinstance(y, dict):
        if set(x) != set(y):
            out.append(("keys", path, sorted(set(x) ^ set(y)), None))
        for k in x:
            if k in y and k not in SKIP:
                walk(x[k], y[k], path + "." + k, out)
    elif isinstance(x, list) and isinstance(y, list):
        if len(x) != len(y):
            out.append(("length", path, len(x), len(y)))
        for i, (u, v) in enumerate(zip(x, y)):
            walk(u, v, "%s[%d]" % (path, i), out)
    elif isinstance(x, float) or isinstance(y, float):
        if x != y:
            out.append(("float", path, x, y))
    elif x != y:
        out.append(("value", path, x, y))


def blob(db, sha):
    with open(db + ".blobs/" + sha, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    out = {}
    for k, v in head.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4").reshape(v["shape"])
    return out


def events(db):
    c = sqlite3.connect(db)
    ev = c.execute("select s.id, e.kind, e.name, e.payload from events e join sessions s on e.session = s.id "
                   "order by s.id, e.seq").fetchall()
    ss = c.execute("select id, status, environment from sessions order by id").fetchall()
    c.close()
    return ev, ss


def main():
    one_json, one_db, many_json, many_db, np_, tol = sys.argv[1:7]
    np_, tol = int(np_), float(tol)
    with open(one_json) as f:
        a = json.load(f)
    with open(many_json) as f:
        b = json.load(f)
    diffs = []
    walk(a, b, "", diffs)
    shape = [d for d in diffs if d[0] in ("keys", "length")]
    say(not shape, "np %d: the --json documents have the same fields%s" % (np_, "" if not shape else ": %s" % (shape[:3],)))
    vals = [d for d in diffs if d[0] == "value"]
    say(not vals, "np %d: every value that is not a float is one process's%s" % (np_, "" if not vals else ": %s" % (vals[:3],)))
    floats = [d for d in diffs if d[0] == "float"]
    if np_ == 1:
        say(not floats, "np 1: every float is one process's bits%s" % ("" if not floats else ": %s" % (floats[:3],)))
    else:
        worst, at = 0.0, None
        for _, p, x, y in floats:
            if not (isinstance(x, float) and isinstance(y, float)):
                worst, at = float("inf"), (p, x, y)
                break
            r = abs(x - y) / max(abs(x), abs(y), 1e-6 if tol >= 1e-9 else 1e-300)
            if r > worst:
                worst, at = r, (p, x, y)
        say(worst <= tol, "np %d: every float within %g of one process's (largest %.3g%s)" % (
            np_, tol, worst, "" if at is None else " at %s" % (at[0],)))

    ea, sa = events(one_db)
    eb, sb = events(many_db)
    say([(k, n) for _, k, n, _ in ea] == [(k, n) for _, k, n, _ in eb],
        "np %d: the database records the same %d events in the same order" % (np_, len(ea)))
    say(all(s[1] == "finished" for s in sb) and len(sa) == len(sb),
        "np %d: %d sessions, every one finished" % (np_, len(sb)))
    procs = [json.loads(s[2]).get("processes") for s in sb]
    say(all(p == (np_ if np_ > 1 else None) for p in procs),
        "np %d: the environment records %s" % (np_, "%d processes" % np_ if np_ > 1 else "no process count"))

    # the statistics each calibrate-layer recorded
    cal_a = [json.loads(p) for _, k, n, p in ea if k == "result" and n == "calibrate-layer"]
    cal_b = [json.loads(p) for _, k, n, p in eb if k == "result" and n == "calibrate-layer"]
    exact, differ = True, 0
    for ra, rb in zip(cal_a, cal_b):
        ta, tb = blob(one_db, ra["stats"]), blob(many_db, rb["stats"])
        for k in ta:
            differ += int(np.sum(ta[k].view("<u4") != tb[k].view("<u4")))
        exact &= ra["absmax_sha256"] == rb["absmax_sha256"]
    say(len(cal_a) == len(cal_b) and len(cal_a) > 0 and exact and differ == 0,
        "np %d: every layer's maxima are one process's bits (%d calibrations, %d values differ)" % (
            np_, len(cal_a), differ))

    ck_a = [json.loads(p)["checkpoint"] for _, k, n, p in ea if k == "result" and n == "next-layer"]
    ck_b = [json.loads(p)["checkpoint"] for _, k, n, p in eb if k == "result" and n == "next-layer"]
    good = len(ck_a) == len(ck_b) and len(ck_b) > 0
    fp_same, worst = False, float("inf")
    if good:
        ta, tb = blob(one_db, ck_a[-1]), blob(many_db, ck_b[-1])
        good = sorted(ta) == sorted(tb) and all(ta[k].shape == tb[k].shape for k in ta)
        if good:
            fp_same = np.array_equal(ta["h_fp"].view("<u4"), tb["h_fp"].view("<u4"))
            worst = float(np.abs(ta["h_q"] - tb["h_q"]).max() / max(np.abs(ta["h_q"]).max(), 1e-30))
    say(good and fp_same, "np %d: the last checkpoint holds every token, the FP chain one process's bits" % np_)
    bound = 0.0 if tol < 1e-9 else 1e-6
    say(good and worst <= bound, "np %d: ... and the quantized chain within %g of its largest value (largest %.3g)" % (
        np_, bound, worst))


main()
