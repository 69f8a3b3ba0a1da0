/*
 * replay.h: recompute a recorded session and compare every result, exactly
 * or within named tolerances (masq(1), REPLAY).
 *
 * Exact mode: every recorded value must come back bit for bit (the
 * numeric environment is the recorded one, or was reproduced).  Tolerance
 * mode (the environment differs and cannot be reproduced, or --tolerance):
 * discrete outcomes still exactly (layer count, shapes, methods, ranks,
 * the alpha a search picked, dominant-modality shares, sample sizes, file
 * names), floating-point values within the tolerances below by kind, and
 * the blobs a result names (statistics, plans, checkpoints) compared by
 * their contents instead of their sha256.  The report keeps the largest
 * deviation of each kind and the event it occurred in.
 *
 *	replay_report rep;
 *	int r = sess_replay(&s, tolerance, progress, &rep, &err);  // 0 match, 1 diverged
 *	json_t *j = replay_report_json(&rep);
 *	replay_report_done(&rep);
 */
#ifndef MASQ_REPLAY_H
#define MASQ_REPLAY_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "sessions/session.h"

/* Relative: statistics, factors and the hidden states of the FP chain
 * (measured across OpenBLAS kernel sets: up to 4e-7 on the demos). */
#define REPLAY_TOL_STAT 1e-4
/* Relative: what the quantized chain measures (MAE, KL, CMC errors, its
 * hidden states, the compensation L1 L2): a value a rounding step away
 * moves these (measured: up to 2e-3 on the small demo's 4 layers). */
#define REPLAY_TOL_QUANT 2e-2
/* Absolute, in dB: SQNR figures and search curves (measured: up to
 * 0.0033 dB). */
#define REPLAY_TOL_DB 0.05
/* Absolute floor under the relative tolerances, for values near zero. */
#define REPLAY_TOL_FLOOR 1e-9
/* Learning (train-layer) amplifies a last-bit difference: a rounding
 * decision or the sign of one MAE term flips and AdamW's first steps move
 * a factor by the learning rate either way.  Relative, the losses and the
 * learned factors; absolute dB, the SQNR after learning.  In tolerance
 * mode a replay checks a layer's learning against these, then continues
 * from the recorded factors, so that what follows compares at the tight
 * tolerances above. */
#define REPLAY_TOL_LEARN 0.1
#define REPLAY_TOL_LEARN_DB 0.5

enum replay_kind { RK_STAT, RK_QUANT, RK_DB, RK_LEARN, RK_LEARN_DB, RK_COUNT };
/* "statistics", "quantized", "sqnr_db", "learned", "learned_sqnr_db" */
const char *replay_kind_name(int k);
/* The tolerance of kind k. */
double replay_kind_tol(int k);

/* The largest deviation seen of one kind. */
typedef struct replay_dev {
	double value;		/* relative, or dB for RK_DB; 0 when none */
	int64_t event;		/* the result event, 0 when none */
	char cmd[32];
	char path[640];
} replay_dev;

typedef struct replay_report {
	int tolerance;		/* the mode: 0 exact, 1 tolerance */
	int commands;		/* recorded commands replayed */
	int interrupted;	/* commands with no recorded outcome (the process died): skipped */
	int errors_matched;	/* recorded errors met again */
	int fs_errors;		/* recorded file-system errors of exports: not replayed */
	int other_version;	/* exports of a session another masq version recorded: not compared */
	int exports_checked;	/* exports checked without writing (no --export) */
	int uncompared;		/* hashes with no content to compare in tolerance mode */
	int new_fields;		/* fields the replay gives that the recording lacks */
	int adopted;		/* trainings and rank allocations continued from the recorded factors or ranks (tolerance mode) */
	replay_dev dev[RK_COUNT];
	int diverged;
	int64_t div_event;	/* the result or error event that differs */
	char div_cmd[32];
	char div_reason[1024];	/* what differs, in one line */
	json_t *div_fields;	/* [{path, recorded, replayed[, detail]}] */
	json_t *exports;	/* [{event, format, dir}] written with --export */
} replay_report;

typedef struct replay_opts {
	int tolerance;		/* 0 exact, 1 tolerance mode */
	const char *export_dir;	/* exports are written into one subfolder each of it; NULL: checked only */
	const char *scratch;	/* an existing directory for what the replay computes (never beside the database) */
	FILE *progress;		/* a line per command, or NULL */
} replay_opts;

/* Replay attached session s (not recording) as o says.  Returns 0 when
 * everything matches, 1 at the first divergence (rep says where), -1 with
 * err on other errors. */
int sess_replay(sess *s, const replay_opts *o, replay_report *rep, masq_err *err);
void replay_report_done(replay_report *rep);
/* The report as JSON (a new reference): mode, counts, tolerances, the
 * largest deviations, the divergence. */
json_t *replay_report_json(const replay_report *rep);

#endif
