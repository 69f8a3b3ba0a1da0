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
#include <unistd.h>

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
		r = 0;		/* already stored and intact; tmp is removed below */
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
