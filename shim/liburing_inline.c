/*
 * liburing_inline.c — liburing 2.3's static-inline helpers as real (hidden) functions.
 *
 * liburing 2.3 defines io_uring_get_sqe, the io_uring_prep_* helpers and the CQ helpers as
 * `static inline` functions in <liburing.h>. Through Zig's @cImport they turn into references to
 * symbols that exist nowhere (dlopen then fails with "undefined symbol: _io_uring_get_sqe"), so
 * this file, compiled by build.zig into the same shared library, wraps each one we need in an
 * ordinary function. liburing_shim.zig declares them `extern` and builds the exported C ABI
 * (lss_*) on top of them.
 *
 * Every function here is hidden: the library's exported surface is exactly the lss_* functions
 * of liburing_shim.zig. `struct io_uring` stays opaque to Zig; lssc_ring_sizeof() tells it how
 * much memory to allocate for one.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <liburing.h>

#define LSSC_HIDDEN __attribute__((visibility("hidden")))

/* The completion layout liburing_shim.zig mirrors (extern struct Cqe); checked at compile time. */
_Static_assert(offsetof(struct io_uring_cqe, user_data) == 0, "cqe.user_data offset");
_Static_assert(offsetof(struct io_uring_cqe, res) == 8, "cqe.res offset");
_Static_assert(offsetof(struct io_uring_cqe, flags) == 12, "cqe.flags offset");

LSSC_HIDDEN size_t lssc_ring_sizeof(void) { return sizeof(struct io_uring); }

LSSC_HIDDEN size_t lssc_ring_alignof(void) { return _Alignof(struct io_uring); }

/* io_uring_queue_init is a real liburing function; wrapped only to keep Zig's side opaque. */
LSSC_HIDDEN int lssc_queue_init(unsigned entries, struct io_uring *ring) {
	return io_uring_queue_init(entries, ring, 0);
}

LSSC_HIDDEN void lssc_queue_exit(struct io_uring *ring) { io_uring_queue_exit(ring); }

LSSC_HIDDEN unsigned lssc_sq_entries(const struct io_uring *ring) { return ring->sq.ring_entries; }

LSSC_HIDDEN unsigned lssc_sq_space_left(const struct io_uring *ring) { return io_uring_sq_space_left(ring); }

LSSC_HIDDEN unsigned lssc_sq_ready(const struct io_uring *ring) { return io_uring_sq_ready(ring); }

LSSC_HIDDEN unsigned lssc_cq_ready(const struct io_uring *ring) { return io_uring_cq_ready(ring); }

LSSC_HIDDEN struct io_uring_sqe *lssc_get_sqe(struct io_uring *ring) { return io_uring_get_sqe(ring); }

LSSC_HIDDEN void lssc_prep_write(struct io_uring_sqe *sqe, int fd, uint64_t addr, unsigned len, uint64_t offset) {
	io_uring_prep_write(sqe, fd, (const void *)(uintptr_t)addr, len, (__u64)offset);
}

LSSC_HIDDEN void lssc_prep_read(struct io_uring_sqe *sqe, int fd, uint64_t addr, unsigned len, uint64_t offset) {
	io_uring_prep_read(sqe, fd, (void *)(uintptr_t)addr, len, (__u64)offset);
}

/* fsync_flags: 0 for fsync, IORING_FSYNC_DATASYNC (1) for fdatasync. */
LSSC_HIDDEN void lssc_prep_fsync(struct io_uring_sqe *sqe, int fd, unsigned fsync_flags) {
	io_uring_prep_fsync(sqe, fd, fsync_flags);
}

LSSC_HIDDEN void lssc_sqe_set_flags(struct io_uring_sqe *sqe, unsigned flags) { io_uring_sqe_set_flags(sqe, flags); }

LSSC_HIDDEN void lssc_sqe_set_data64(struct io_uring_sqe *sqe, uint64_t data) { io_uring_sqe_set_data64(sqe, data); }

/* Submit everything prepared and not yet consumed by the kernel; count submitted or -errno. */
LSSC_HIDDEN int lssc_submit(struct io_uring *ring) { return io_uring_submit(ring); }

/* 0 and *cqe_ptr set when a completion is ready, -EAGAIN when none is (never blocks). */
LSSC_HIDDEN int lssc_peek_cqe(struct io_uring *ring, struct io_uring_cqe **cqe_ptr) {
	return io_uring_peek_cqe(ring, cqe_ptr);
}

LSSC_HIDDEN void lssc_cqe_seen(struct io_uring *ring, struct io_uring_cqe *cqe) { io_uring_cqe_seen(ring, cqe); }

LSSC_HIDDEN void lssc_cq_advance(struct io_uring *ring, unsigned nr) { io_uring_cq_advance(ring, nr); }

/*
 * Block until at least `wait_nr` completions are ready or `timeout_us` microseconds pass.
 * 0 when they are ready, -ETIME on timeout, -EINTR on a signal, other -errno on failure.
 * On kernels with IORING_FEAT_EXT_ARG (5.11+) the timeout travels with io_uring_enter and no SQE
 * is used; on older ones liburing queues an internal timeout SQE whose completion (user_data
 * LIBURING_UDATA_TIMEOUT) io_uring_peek_cqe then filters out.
 */
LSSC_HIDDEN int lssc_wait_cqes(struct io_uring *ring, unsigned wait_nr, unsigned timeout_us) {
	struct __kernel_timespec ts;
	struct io_uring_cqe *cqe = NULL;
	ts.tv_sec = (long long)(timeout_us / 1000000u);
	ts.tv_nsec = (long long)(timeout_us % 1000000u) * 1000LL;
	return io_uring_wait_cqes(ring, &cqe, wait_nr, &ts, NULL);
}

/* Register an eventfd the kernel signals on every posted completion: 0 or -errno. */
LSSC_HIDDEN int lssc_register_eventfd(struct io_uring *ring, int fd) { return io_uring_register_eventfd(ring, fd); }
