/*
 * internal.h: what the files of sessions/ share and nothing above them
 * sees: the recorded events of a session, collected in order.
 *
 *	sess_evlist l = {0};
 *	sdb_event_each(db, id, sess_evlist_collect, &l, &err);
 *	long o = sess_evlist_outcome(&l, i);   // command i's result or error
 *	sess_evlist_free(&l);
 */
#ifndef MASQ_SESS_INTERNAL_H
#define MASQ_SESS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "sessions/db.h"

typedef struct sess_ev {
	int64_t seq;
	char *kind, *name, *payload;	/* owned */
} sess_ev;

typedef struct sess_evlist {
	sess_ev *v;	/* (n) */
	size_t n, cap;
} sess_evlist;

/* sdb_event_each callback: append a copy of e to the list ctx. */
int sess_evlist_collect(void *ctx, const sdb_event *e);
void sess_evlist_free(sess_evlist *l);
/* The recorded outcome of command event i: the index of its result or
 * error event, or -1 when the process died before recording one. */
long sess_evlist_outcome(const sess_evlist *l, size_t i);

#endif
