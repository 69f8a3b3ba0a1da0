/*
 * db_blob.c: blobs beside a session database, named by their content's
 * sha256: written durably, read back only when they still hash to their name.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <ctype.h>

#include <sqlite3.h>

#include "core/sha256.h"
#include "sessions/db.h"
#include "sessions/db_internal.h"

/* ---- blobs ------------------------------------------------------------- */

/* 1 when s is 64 lowercase hex digits. */
int
sdb_sha_valid(const char *s)
{
	size_t i;

	for (i = 0; i < 64; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return s[64] == '\0';
}

/* fsync a directory, so a rename or a new entry in it survives a power loss. */
static int
sdb_fsync_dir(const char *dir, masq_err *err)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return masq_err_set(err, MASQ_ERR_IO, "%s: %s", dir, strerror(errno));
	if (fsync(fd) < 0 && errno != EINVAL) {
		int e = errno;
		close(fd);
		return masq_err_set(err, MASQ_ERR_IO, "%s: fsync: %s", dir, strerror(e));
	}
	close(fd);
	return 0;
}

/* Create the blob directory if missing (and make its entry durable). */
static int
sdb_blob_dir_make(sdb *db, masq_err *err)
{
	struct stat sb;
	char *parent, *slash;
	int r;

	if (stat(db->blobdir, &sb) == 0) {
		if (!S_ISDIR(sb.st_mode))
			return masq_err_set(err, MASQ_ERR_IO, "%s: not a directory", db->blobdir);
		return 0;
	}
	if (mkdir(db->blobdir, 0777) < 0 && errno != EEXIST)
		return masq_err_set(err, MASQ_ERR_IO, "%s: cannot create directory: %s", db->blobdir,
		    strerror(errno));
	parent = xstrdup(db->blobdir);
	slash = strrchr(parent, '/');
	if (slash == NULL)
		strcpy(parent, ".");
	else if (slash == parent)
		slash[1] = '\0';
	else
		*slash = '\0';
	r = sdb_fsync_dir(parent, err);
	free(parent);
	return r;
}

/* Write all n bytes of p to fd. */
static int
sdb_write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n > 0) {
		ssize_t w = write(fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Store the file at src as DB.blobs/<sha256>: copy it to a temporary file
 * in the blob directory while hashing it (one read, so the name matches
 * what was copied), fsync, rename to its hash, fsync the directory.  When a
 * blob of that hash is already there and intact, the copy is dropped. */
int
sdb_blob_put_file(sdb *db, const char *src, char sha[65], masq_err *err)
{
	enum { BUFSZ = 64 * 1024 };
	char *tmp = NULL, *dst = NULL, *buf = NULL, have[65];
	int in = -1, fd = -1, r = -1;
	sha256_ctx c;
	struct stat sb;

	if (sdb_blob_dir_make(db, err) < 0)
		return -1;
	in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return masq_err_set(err, MASQ_ERR_IO, "%s: %s", src, strerror(errno));
	tmp = masq_path_join(db->blobdir, ".tmp-XXXXXX");
	fd = mkstemp(tmp);
	if (fd < 0) {
		masq_err_set(err, MASQ_ERR_IO, "%s: cannot create a temporary file: %s", db->blobdir,
		    strerror(errno));
		free(tmp);
		tmp = NULL;
		goto out;
	}
	buf = xmalloc(BUFSZ);
	sha256_init(&c);
	for (;;) {
		ssize_t got = read(in, buf, BUFSZ);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			masq_err_set(err, MASQ_ERR_IO, "%s: read error: %s", src, strerror(errno));
			goto out;
		}
		if (got == 0)
			break;
		sha256_update(&c, buf, (size_t)got);
		if (sdb_write_all(fd, buf, (size_t)got) < 0) {
			masq_err_set(err, MASQ_ERR_IO, "%s: write error: %s", tmp, strerror(errno));
			goto out;
		}
	}
	sha256_hex(&c, sha);
	/* blobs are content-addressed: read-only, to discourage edits */
	if (fchmod(fd, 0444) < 0 || fsync(fd) < 0) {
		masq_err_set(err, MASQ_ERR_IO, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	if (close(fd) < 0) {
		fd = -1;
		masq_err_set(err, MASQ_ERR_IO, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	fd = -1;
	dst = masq_path_join(db->blobdir, sha);
	if (stat(dst, &sb) == 0 && sha256_file(dst, have, NULL) == 0 && strcmp(have, sha) == 0) {
		/* already stored and intact; tmp is removed below.  Marked as
		 * in use again (its time set SDB_GC_HOLD seconds ahead): a
		 * collection in another process must not take it before this
		 * command's event names it */
		struct timespec ts[2];
		clock_gettime(CLOCK_REALTIME, &ts[0]);
		ts[1] = ts[0];
		ts[1].tv_sec += SDB_GC_HOLD;
		utimensat(AT_FDCWD, dst, ts, 0);
		r = 0;
		goto out;
	}
	if (rename(tmp, dst) < 0) {
		masq_err_set(err, MASQ_ERR_IO, "%s: cannot rename to %s: %s", tmp, dst, strerror(errno));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	r = sdb_fsync_dir(db->blobdir, err);
out:
	if (fd >= 0)
		close(fd);
	if (tmp != NULL)
		unlink(tmp);
	close(in);
	free(tmp);
	free(dst);
	free(buf);
	return r;
}

/* Path of blob sha (a new string) once it is known to exist and still hash
 * to sha; MASQ_ERR_FORMAT when altered or sha is not a sha256,
 * MASQ_ERR_IO when missing or unreadable. */
char *
sdb_blob_path(sdb *db, const char *sha, masq_err *err)
{
	char *p, got[65];
	struct stat sb;

	if (!sdb_sha_valid(sha)) {
		masq_err_set(err, MASQ_ERR_FORMAT, "blob name '%.80s' is not a sha256 (64 lowercase hex digits)",
		    sha);
		return NULL;
	}
	p = masq_path_join(db->blobdir, sha);
	if (stat(p, &sb) < 0) {
		if (errno == ENOENT)
			masq_err_set(err, MASQ_ERR_IO, "blob %s is missing (%s)", sha, p);
		else
			masq_err_set(err, MASQ_ERR_IO, "%s: %s", p, strerror(errno));
		free(p);
		return NULL;
	}
	if (sha256_file(p, got, err) < 0) {
		free(p);
		return NULL;
	}
	if (strcmp(got, sha) != 0) {
		masq_err_set(err, MASQ_ERR_FORMAT, "blob %s was altered (%s now hashes to %s)", sha, p,
		    got);
		free(p);
		return NULL;
	}
	return p;
}

/* ---- what the blobs cost, and what may go -------------------------------------- */

/* A set of sha256 names, sorted for bsearch. */
struct shaset {
	char (*v)[65];
	int n, cap;
};

static void
shaset_add(struct shaset *s, const char *sha)
{
	if (s->n == s->cap)
		s->v = xrealloc(s->v, xmul((size_t)(s->cap = s->cap ? 2 * s->cap : 64), sizeof *s->v));
	memcpy(s->v[s->n++], sha, 65);
}

static int
sha_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

static int
shaset_has(const struct shaset *s, const char *sha)
{
	return s->n > 0 && bsearch(sha, s->v, (size_t)s->n, sizeof *s->v, sha_cmp) != NULL;
}

/* Every 64-hex run of every event's payload (the blobs the events name,
 * whatever the key) into keep, except the checkpoints of next-layer results
 * that a later next-layer of the same session superseded: resume needs a
 * session's latest checkpoint only, and replay recomputes. */
static int
blob_refs(sdb *db, struct shaset *keep, struct shaset *gone, masq_err *err)
{
	sqlite3_stmt *st = sdb_prepare(db,
	    "SELECT payload, kind = 'result' AND name = 'next-layer' AND seq < "
	    "(SELECT max(seq) FROM events x WHERE x.session = e.session AND x.kind = 'result' AND "
	    "x.name = 'next-layer') FROM events e", err);
	if (st == NULL)
		return -1;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *p = (const char *)sqlite3_column_text(st, 0);
		int superseded = sqlite3_column_int(st, 1);
		const char *ck = NULL;
		if (p == NULL)
			continue;
		if (superseded && (ck = strstr(p, "\"checkpoint\":\"")) != NULL) {
			ck += 14;
			if (strlen(ck) >= 64) {
				char sha[65];
				memcpy(sha, ck, 64);
				sha[64] = '\0';
				if (sdb_sha_valid(sha))
					shaset_add(gone, sha);
			}
		}
		for (const char *q = p; *q != '\0'; q++) {
			size_t n = 0;
			while (n < 65 && ((q[n] >= '0' && q[n] <= '9') || (q[n] >= 'a' && q[n] <= 'f')))
				n++;
			if (n == 64 && (q == p || !isxdigit((unsigned char)q[-1])) && q != ck) {
				char sha[65];
				memcpy(sha, q, 64);
				sha[64] = '\0';
				shaset_add(keep, sha);
			}
			if (n > 0)
				q += n - 1;
		}
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return sdb_fail(db->h, db->path, "reading the events for their blobs", err);
	if (keep->n > 0)
		qsort(keep->v, (size_t)keep->n, sizeof *keep->v, sha_cmp);
	if (gone->n > 0)
		qsort(gone->v, (size_t)gone->n, sizeof *gone->v, sha_cmp);
	return 0;
}

int
sdb_blob_gc(sdb *db, int dry, sdb_gc_report *rep, masq_err *err)
{
	struct shaset keep = {0}, gone = {0};
	time_t now = time(NULL);
	char **names;
	int n, rc = -1;

	memset(rep, 0, sizeof *rep);
	if (blob_refs(db, &keep, &gone, err) < 0)
		goto out;
	struct stat sb;
	if (stat(db->blobdir, &sb) < 0) {
		rc = 0;	/* no blobs at all */
		goto out;
	}
	if ((n = masq_dir_list(db->blobdir, &names, err)) < 0)
		goto out;
	for (int i = 0; i < n; i++) {
		char *p = masq_path_join(db->blobdir, names[i]);
		if (sdb_sha_valid(names[i]) && lstat(p, &sb) == 0 && S_ISREG(sb.st_mode)) {
			/* superseded: a checkpoint only a superseded next-layer names;
			 * else unnamed, and old enough not to be another process's
			 * blob whose event is still being written */
			int go = !shaset_has(&keep, names[i]) && sb.st_mtime <= now && (shaset_has(&gone, names[i]) ||
			    now - sb.st_mtime > SDB_GC_MIN_AGE);
			if (!go) {
				rep->kept++;
				rep->kept_bytes += (uint64_t)sb.st_size;
			} else if (dry || unlink(p) == 0) {
				rep->removed++;
				rep->removed_bytes += (uint64_t)sb.st_size;
			}
		}
		free(p);
	}
	masq_dir_list_free(names, n);
	if (!dry && rep->removed > 0)
		sdb_fsync_dir(db->blobdir, NULL);
	rc = 0;
out:
	free(keep.v);
	free(gone.v);
	return rc;
}

int
sdb_checkpoint_release(sdb *db, int64_t session, masq_err *err)
{
	/* the checkpoint of the session's last next-layer but one */
	sqlite3_stmt *st = sdb_prepare(db,
	    "SELECT seq, json_extract(payload, '$.checkpoint') FROM events WHERE session = ?1 AND kind = 'result' "
	    "AND name = 'next-layer' ORDER BY seq DESC LIMIT 1 OFFSET 1", err);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, session);
	char sha[65] = "";
	int64_t seq = 0;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && sqlite3_column_text(st, 1) != NULL) {
		seq = sqlite3_column_int64(st, 0);
		snprintf(sha, sizeof sha, "%s", (const char *)sqlite3_column_text(st, 1));
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return sdb_fail(db->h, db->path, "finding the superseded checkpoint", err);
	if (!sdb_sha_valid(sha))
		return 0;
	/* any other event naming it keeps it (another session reached the
	 * same hidden states) */
	int64_t others = 0;
	st = sdb_prepare(db, "SELECT count(*) FROM events WHERE instr(payload, ?1) > 0 AND NOT (session = ?2 AND seq = ?3)",
	    err);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, sha, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, session);
	sqlite3_bind_int64(st, 3, seq);
	if ((rc = sqlite3_step(st)) == SQLITE_ROW)
		others = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW)
		return sdb_fail(db->h, db->path, "checking who needs the superseded checkpoint", err);
	char *p = masq_path_join(db->blobdir, sha);
	struct stat sb;
	/* a time ahead of now: stored again by a command not recorded yet */
	if (others == 0 && stat(p, &sb) == 0 && sb.st_mtime <= time(NULL))
		unlink(p);
	free(p);
	return 0;
}
