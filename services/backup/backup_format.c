/*
 * backup_format — the encrypted backup format (see backup.h): key derivation,
 * sealed chunks, the authenticated manifest, and careful file I/O.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup.h"

/* aad for chunk index or (index < 0) the manifest, into buf. */
static int backup_aad(char *buf, size_t size, const char *tenant_id, const char *backup_id,
		      long index);

/* The manifest's aad also binds the salt stored beside it in clear. */
static int backup_manifest_aad(char *buf, size_t size, const char *tenant_id,
			       const char *backup_id, const uint8_t salt[BACKUP_SALT_LEN])
{
	char hex[2 * BACKUP_SALT_LEN + 1];
	int n = backup_aad(buf, size, tenant_id, backup_id, -1), m;

	if (n < 0)
		return -1;
	crypto_hex(salt, BACKUP_SALT_LEN, hex);
	m = snprintf(buf + n, size - (size_t)n, "|%s", hex);
	return m > 0 && (size_t)m < size - (size_t)n ? n + m : -1;
}

static int backup_aad(char *buf, size_t size, const char *tenant_id, const char *backup_id,
		      long index)
{
	int n = index < 0 ? snprintf(buf, size, "ward-backup/1|%s|%s|manifest", tenant_id,
				     backup_id)
			  : snprintf(buf, size, "ward-backup/1|%s|%s|chunk|%ld", tenant_id,
				     backup_id, index);

	return n > 0 && (size_t)n < size ? n : -1;
}

int backup_key_derive(const uint8_t dek[CRYPTO_KEY_LEN], const uint8_t salt[BACKUP_SALT_LEN],
		      const char *tenant_id, const char *backup_id, uint8_t key[CRYPTO_KEY_LEN])
{
	char info[160];
	int n = snprintf(info, sizeof info, "ward backup v1|%s|%s", tenant_id, backup_id);

	if (n <= 0 || (size_t)n >= sizeof info)
		return -1;
	return crypto_hkdf(dek, CRYPTO_KEY_LEN, salt, BACKUP_SALT_LEN, info, key, CRYPTO_KEY_LEN);
}

int backup_chunk_seal(const uint8_t key[CRYPTO_KEY_LEN], uint32_t dek_version,
		      const char *tenant_id, const char *backup_id, uint32_t index,
		      const void *pt, size_t len, uint8_t **out_r, size_t *out_len_r)
{
	char aad[160];
	int n = backup_aad(aad, sizeof aad, tenant_id, backup_id, (long)index);

	if (n < 0 || len > BACKUP_CHUNK_MAX)
		return -1;
	return crypto_seal(key, dek_version, aad, (size_t)n, pt, len, out_r, out_len_r);
}

int backup_chunk_open(const uint8_t key[CRYPTO_KEY_LEN], const char *tenant_id,
		      const char *backup_id, uint32_t index, const uint8_t *in, size_t in_len,
		      uint8_t **out_r, size_t *out_len_r)
{
	char aad[160];
	int n = backup_aad(aad, sizeof aad, tenant_id, backup_id, (long)index);

	if (n < 0 || in_len > BACKUP_CHUNK_MAX + CRYPTO_SEAL_OVERHEAD)
		return -1;
	return crypto_open(key, aad, (size_t)n, in, in_len, out_r, out_len_r, NULL);
}

int backup_manifest_seal(const uint8_t key[CRYPTO_KEY_LEN], uint32_t dek_version,
			 const uint8_t salt[BACKUP_SALT_LEN], const char *tenant_id,
			 const char *backup_id, const char *json, uint8_t **out_r,
			 size_t *out_len_r)
{
	char aad[240];
	uint8_t *sealed = NULL, *out;
	size_t slen, len = strlen(json);
	int n = backup_manifest_aad(aad, sizeof aad, tenant_id, backup_id, salt);

	if (n < 0 || len > BACKUP_MANIFEST_MAX ||
	    crypto_seal(key, dek_version, aad, (size_t)n, json, len, &sealed, &slen) < 0)
		return -1;
	out = malloc(BACKUP_MAGIC_LEN + BACKUP_SALT_LEN + slen);
	if (out == NULL) {
		free(sealed);
		return -1;
	}
	memcpy(out, BACKUP_MAGIC, BACKUP_MAGIC_LEN);
	memcpy(out + BACKUP_MAGIC_LEN, salt, BACKUP_SALT_LEN);
	memcpy(out + BACKUP_MAGIC_LEN + BACKUP_SALT_LEN, sealed, slen);
	free(sealed);
	*out_r = out;
	*out_len_r = BACKUP_MAGIC_LEN + BACKUP_SALT_LEN + slen;
	return 0;
}

int backup_manifest_header(const uint8_t *in, size_t len, uint8_t salt[BACKUP_SALT_LEN],
			   uint32_t *dek_version_r)
{
	if (len < BACKUP_MAGIC_LEN + BACKUP_SALT_LEN + CRYPTO_SEAL_OVERHEAD ||
	    memcmp(in, BACKUP_MAGIC, BACKUP_MAGIC_LEN) != 0)
		return -1;
	memcpy(salt, in + BACKUP_MAGIC_LEN, BACKUP_SALT_LEN);
	return crypto_sealed_key_version(in + BACKUP_MAGIC_LEN + BACKUP_SALT_LEN,
					 len - BACKUP_MAGIC_LEN - BACKUP_SALT_LEN, dek_version_r);
}

int backup_manifest_open(const uint8_t key[CRYPTO_KEY_LEN], const char *tenant_id,
			 const char *backup_id, const uint8_t *in, size_t len, char **json_r)
{
	char aad[240];
	uint8_t *pt = NULL;
	size_t pt_len;
	const size_t head = BACKUP_MAGIC_LEN + BACKUP_SALT_LEN;
	int n = len >= head ? backup_manifest_aad(aad, sizeof aad, tenant_id, backup_id,
						  in + BACKUP_MAGIC_LEN)
			    : -1;

	if (n < 0 || len < head + CRYPTO_SEAL_OVERHEAD ||
	    len > head + CRYPTO_SEAL_OVERHEAD + BACKUP_MANIFEST_MAX ||
	    memcmp(in, BACKUP_MAGIC, BACKUP_MAGIC_LEN) != 0 ||
	    crypto_open(key, aad, (size_t)n, in + head, len - head, &pt, &pt_len, NULL) < 0)
		return -1;
	if (memchr(pt, '\0', pt_len) != NULL) {
		free(pt);
		return -1;
	}
	*json_r = (char *)pt; /* crypto_open NUL-terminates */
	return 0;
}

int backup_file_read(const char *path, size_t max, uint8_t **buf_r, size_t *len_r)
{
	struct stat st;
	uint8_t *buf = NULL;
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > max)
		goto fail;
	buf = malloc((size_t)st.st_size + 1);
	if (buf == NULL)
		goto fail;
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			goto fail;
		got += (size_t)r;
	}
	close(fd);
	*buf_r = buf;
	*len_r = got;
	return 0;
fail:
	free(buf);
	close(fd);
	return -1;
}

int backup_file_put(const char *path, const void *buf, size_t len, int durable)
{
	const uint8_t *p = buf;
	size_t done = 0;
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);

	if (fd < 0)
		return -1;
	while (done < len) {
		ssize_t w = write(fd, p + done, len - done);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			close(fd);
			return -1;
		}
		done += (size_t)w;
	}
	if (durable && fsync(fd) < 0) {
		close(fd);
		return -1;
	}
	/* Not durable: only a hint; whoever needs it durable fsyncs it later. */
	if (!durable)
		(void)sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
	return close(fd);
}

int backup_file_write(const char *path, const void *buf, size_t len)
{
	return backup_file_put(path, buf, len, 1);
}
