/*
 * reply.c: how long the cache files of a zero-copy reply stay held.
 *
 * op_read_buf answers with spans of cache files (cache_file_map), which libfuse
 * splices to the kernel after the handler has returned, in the same thread. Each span
 * keeps its file leased, so that no other process can change it, until the reply is
 * written. The session's device I/O goes through the hooks below: a thread lets go of
 * its last reply's spans right after it writes a reply to the device, and before it
 * reads the next request (whatever happened in between).
 */
#define FUSE_USE_VERSION 312
#include <fuse.h>
#include <fuse_lowlevel.h>

#include "fs.h"
#include "fs_private.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

/* The spans of the reply a FUSE thread is sending. */
struct sent {
	struct cache *cache;
	int n;
	struct cache_span sp[FS_SPANS_MAX];
};

static pthread_key_t sent_key;
static pthread_once_t sent_once = PTHREAD_ONCE_INIT;
static int sent_key_ok;

static void sent_release(struct sent *s)
{
	/* each span leaves the list before it is released: never released twice */
	while (s->n > 0) {
		struct cache_span sp = s->sp[--s->n];
		cache_span_release(s->cache, &sp);
	}
}

static void sent_free(void *p)
{
	sent_release(p);
	free(p);
}

static void sent_key_make(void)
{
	sent_key_ok = pthread_key_create(&sent_key, sent_free) == 0;
}

int fs_sent_keep(struct fs *fs, const struct cache_span *sp, int n)
{
	struct sent *s;

	pthread_once(&sent_once, sent_key_make);
	if (!sent_key_ok)
		return -ENOMEM;
	s = pthread_getspecific(sent_key);
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s || pthread_setspecific(sent_key, s) != 0) {
			free(s);
			return -ENOMEM;
		}
	}
	sent_release(s);
	s->cache = fs->cache;
	for (int i = 0; i < n && i < FS_SPANS_MAX; i++)
		s->sp[s->n++] = sp[i];
	return 0;
}

void fs_sent_release(void)
{
	struct sent *s;

	if (!sent_key_ok)
		return;
	s = pthread_getspecific(sent_key);
	if (s && s->n)
		sent_release(s);
}

/* ---- the session's device I/O ---- */

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	ssize_t ret = writev(fd, iov, count);
	int saved = errno;

	(void)userdata;
	fs_sent_release();
	errno = saved;
	return ret;
}

static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
	(void)userdata;
	fs_sent_release();
	return read(fd, buf, len);
}

static ssize_t io_splice_receive(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
				 unsigned int flags, void *userdata)
{
	(void)userdata;
	fs_sent_release();
	return splice(fdin, offin, fdout, offout, len, flags);
}

static ssize_t io_splice_send(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
			      unsigned int flags, void *userdata)
{
	ssize_t ret = splice(fdin, offin, fdout, offout, len, flags);
	int saved = errno;

	(void)userdata;
	fs_sent_release();
	errno = saved;
	return ret;
}

int fs_reply_hooks(struct fuse *fuse)
{
	static const struct fuse_custom_io io = {
		.writev = io_writev,
		.read = io_read,
		.splice_receive = io_splice_receive,
		.splice_send = io_splice_send,
	};
	struct fuse_session *se = fuse_get_session(fuse);

	pthread_once(&sent_once, sent_key_make);
	return fuse_session_custom_io(se, &io, fuse_session_fd(se));
}
