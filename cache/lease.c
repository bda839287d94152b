/*
 * lease.c: chunk files read under a read lease, so that bytes checked once stay the
 * bytes the kernel sends.
 *
 * A chunk file is checked (identity, or the CRC32C trailer) and then read, often by
 * the kernel itself after the FUSE handler has returned (zero-copy replies). Another
 * process could write or truncate the file in between. A read lease (fcntl
 * F_SETLEASE, F_RDLCK) closes that gap: it cannot be taken while anyone has the file
 * open for writing, and once taken, whoever opens the file for writing or truncates
 * it waits in the kernel until the lease goes, which is when the cache closes the fd:
 * right after the read, or after the reply is written. So the wait is short, and the
 * cache needs no word of it: the signal the kernel sends the holder (SIGIO) is
 * ignored. A writer that does not want to wait (O_NONBLOCK) gets EAGAIN meanwhile.
 *
 * Where leases do not work (a filesystem without them, a folder owned by another
 * user), the cache says so once and every read is copied and checked at read time:
 * a write racing that read can still be missed there.
 */
#include "cache_private.h"
#include "../blob/log.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

void cache_lease_start(struct cache *c)
{
	struct sigaction sa;

	/* the lease break's signal: its default action would end the process */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGIO, &sa, NULL);
	pthread_mutex_lock(&c->lock);
	c->lease_mode = 0;
	pthread_mutex_unlock(&c->lock);
}

int cache_lease_open(struct cache *c, const char *path, int *fd_out)
{
	int fd, mode, err;

	*fd_out = -1;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ENOENT : -errno;
	pthread_mutex_lock(&c->lock);
	mode = c->lease_mode;
	pthread_mutex_unlock(&c->lock);
	if (mode < 0) {
		*fd_out = fd;
		return 0;
	}
	if (fcntl(fd, F_SETLEASE, F_RDLCK) == 0) {
		if (mode == 0) {
			pthread_mutex_lock(&c->lock);
			c->lease_mode = 1;
			pthread_mutex_unlock(&c->lock);
		}
		*fd_out = fd;
		return 1;
	}
	err = errno;
	if (err == EAGAIN) {
		/* someone has the chunk file open for writing: it is not ours any more */
		close(fd);
		return -EBADMSG;
	}
	pthread_mutex_lock(&c->lock);
	if (c->lease_mode == 0 && err == EINVAL) {
		/* the filesystem does not do leases (others: this file only) */
		c->lease_mode = -1;
		LOG_INFO("the cache folder %s does not take file leases (%s): every read is "
			 "copied and checked", c->dir, strerror(err));
	}
	pthread_mutex_unlock(&c->lock);
	*fd_out = fd;
	return 0;
}
