//! liburing_shim.zig — the C ABI of bloom-lss's native I/O shim (libbloom_lss_shim.so).
//!
//! bun:ffi loads this library (src/io/shim.ts) and calls the `lss_*` functions exported here.
//! The ring work goes through liburing (linked statically from Debian's liburing.a); liburing's
//! static-inline helpers are wrapped as real functions in liburing_inline.c (`lssc_*`, hidden),
//! because through @cImport they would become references to symbols that do not exist.
//! File calls (open, close, flock, fstat, fallocate, ftruncate, fdatasync) are raw Linux syscalls
//! through std.os.linux, so every result is already "value or -errno".
//!
//! Rules every export keeps:
//!   * every failure comes back as a negative errno; nothing panics, nothing aborts;
//!   * ring handles are checked against a registry of live rings, so a stale, destroyed or
//!     made-up handle is -EBADF rather than a crash;
//!   * integers are little-endian x86_64; structs passed by pointer have the layouts below.
//!
//! Submission entry (40 bytes):  { u32 op (0 write, 1 read, 2 datasync); i32 fd; u64 addr;
//!                                 u32 len; u32 flags (bit0 = IOSQE_IO_LINK to the next op);
//!                                 u64 offset; u64 user_data }
//! Completion entry (16 bytes):  { u64 user_data; i32 res; u32 flags }

const std = @import("std");
const linux = std.os.linux;

// ---------------------------------------------------------------------------------------------
// Layouts shared with JavaScript.

/// One operation handed to `lss_submit`.
pub const Op = extern struct {
    op: u32,
    fd: i32,
    addr: u64,
    len: u32,
    flags: u32,
    offset: u64,
    user_data: u64,
};

/// One completion copied out by `lss_reap`.
pub const Completion = extern struct {
    user_data: u64,
    res: i32,
    flags: u32,
};

comptime {
    if (@sizeOf(Op) != 40) @compileError("Op must be 40 bytes");
    if (@offsetOf(Op, "addr") != 8 or @offsetOf(Op, "len") != 16 or @offsetOf(Op, "offset") != 24 or @offsetOf(Op, "user_data") != 32)
        @compileError("Op layout changed");
    if (@sizeOf(Completion) != 16) @compileError("Completion must be 16 bytes");
}

const OP_WRITE: u32 = 0;
const OP_READ: u32 = 1;
const OP_DATASYNC: u32 = 2;

/// Bits of `Op.flags` the shim understands.
const OP_FLAG_LINK: u32 = 1;
const OP_FLAGS_KNOWN: u32 = OP_FLAG_LINK;

/// IOSQE_IO_LINK from <linux/io_uring.h>.
const IOSQE_IO_LINK: u32 = 1 << 2;
/// IORING_FSYNC_DATASYNC from <linux/io_uring.h>.
const IORING_FSYNC_DATASYNC: u32 = 1;

/// ABI version of this library; bump on any incompatible change of an export.
const ABI_VERSION: i32 = 2;

/// Largest ring a caller may ask for (io_uring's own limit).
const MAX_RING_ENTRIES: u32 = 32768;

// ---------------------------------------------------------------------------------------------
// liburing, through liburing_inline.c.

const Ring = opaque {};
const Sqe = opaque {};
/// Leading fields of `struct io_uring_cqe` (static-asserted in liburing_inline.c).
const Cqe = extern struct {
    user_data: u64,
    res: i32,
    flags: u32,
};

extern fn lssc_ring_sizeof() usize;
extern fn lssc_ring_alignof() usize;
extern fn lssc_queue_init(entries: c_uint, ring: *Ring) c_int;
extern fn lssc_queue_exit(ring: *Ring) void;
extern fn lssc_sq_entries(ring: *const Ring) c_uint;
extern fn lssc_sq_space_left(ring: *const Ring) c_uint;
extern fn lssc_sq_ready(ring: *const Ring) c_uint;
extern fn lssc_cq_ready(ring: *const Ring) c_uint;
extern fn lssc_get_sqe(ring: *Ring) ?*Sqe;
extern fn lssc_prep_write(sqe: *Sqe, fd: c_int, addr: u64, len: c_uint, offset: u64) void;
extern fn lssc_prep_read(sqe: *Sqe, fd: c_int, addr: u64, len: c_uint, offset: u64) void;
extern fn lssc_prep_fsync(sqe: *Sqe, fd: c_int, fsync_flags: c_uint) void;
extern fn lssc_sqe_set_flags(sqe: *Sqe, flags: c_uint) void;
extern fn lssc_sqe_set_data64(sqe: *Sqe, data: u64) void;
extern fn lssc_submit(ring: *Ring) c_int;
extern fn lssc_peek_cqe(ring: *Ring, cqe_ptr: *?*Cqe) c_int;
extern fn lssc_cqe_seen(ring: *Ring, cqe: *Cqe) void;
extern fn lssc_wait_cqes(ring: *Ring, wait_nr: c_uint, timeout_us: c_uint) c_int;
extern fn lssc_register_eventfd(ring: *Ring, fd: c_int) c_int;

extern "c" fn posix_memalign(memptr: *?*anyopaque, alignment: usize, size: usize) c_int;
extern "c" fn free(ptr: ?*anyopaque) void;

const E = linux.E;

inline fn neg(e: E) i32 {
    return -@as(i32, @intFromEnum(e));
}

/// A raw syscall result (value, or -errno folded into usize) as a signed 64-bit integer.
inline fn sys64(rc: usize) i64 {
    return @as(i64, @bitCast(@as(u64, rc)));
}

/// A raw syscall result that fits in i32 (fds, 0, -errno).
inline fn sys32(rc: usize) i32 {
    const v = sys64(rc);
    if (v < std.math.minInt(i32) or v > std.math.maxInt(i32)) return neg(.OVERFLOW);
    return @intCast(v);
}

inline fn isErr(rc: usize, e: E) bool {
    return sys64(rc) == -@as(i64, @intFromEnum(e));
}

// ---------------------------------------------------------------------------------------------
// Registry of live rings: handles are validated before use, so misuse is -EBADF, not a crash.

const MAX_RINGS = 256;
var ring_slots: [MAX_RINGS]?*Ring = [_]?*Ring{null} ** MAX_RINGS;
var ring_lock: std.Thread.Mutex = .{};

fn lookupRing(handle: i64) ?*Ring {
    if (handle <= 0) return null;
    const addr: usize = @intCast(handle);
    ring_lock.lock();
    defer ring_lock.unlock();
    for (ring_slots) |slot| {
        if (slot) |r| {
            if (@intFromPtr(r) == addr) return r;
        }
    }
    return null;
}

fn registerRing(r: *Ring) bool {
    ring_lock.lock();
    defer ring_lock.unlock();
    for (&ring_slots) |*slot| {
        if (slot.* == null) {
            slot.* = r;
            return true;
        }
    }
    return false;
}

fn unregisterRing(handle: i64) ?*Ring {
    if (handle <= 0) return null;
    const addr: usize = @intCast(handle);
    ring_lock.lock();
    defer ring_lock.unlock();
    for (&ring_slots) |*slot| {
        if (slot.*) |r| {
            if (@intFromPtr(r) == addr) {
                slot.* = null;
                return r;
            }
        }
    }
    return null;
}

/// Heap memory for one `struct io_uring`, zeroed.
fn allocRingMemory() ?*Ring {
    const size = lssc_ring_sizeof();
    const alignment = @max(lssc_ring_alignof(), @sizeOf(usize));
    var p: ?*anyopaque = null;
    if (posix_memalign(&p, alignment, size) != 0) return null;
    const bytes: [*]u8 = @ptrCast(p.?);
    @memset(bytes[0..size], 0);
    return @ptrCast(p.?);
}

/// io_uring_submit, retried on EINTR.
fn submitRetry(r: *Ring) c_int {
    while (true) {
        const rc = lssc_submit(r);
        if (rc != neg(.INTR)) return rc;
    }
}

/// Push SQEs prepared earlier but not consumed by the kernel (after EAGAIN/EBUSY).
/// Returns 0 or a hard -errno; EAGAIN/EBUSY mean "try again later" and are not errors here.
fn flushSq(r: *Ring) i32 {
    if (lssc_sq_ready(r) == 0) return 0;
    const rc = submitRetry(r);
    if (rc < 0 and rc != neg(.AGAIN) and rc != neg(.BUSY)) return rc;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Exports: rings.

/// ABI version of the library (1). Lets the loader refuse a stale prebuilt.
export fn lss_abi_version() i32 {
    return ABI_VERSION;
}

/// 0 if an io_uring can be set up here (queue_init with 2 entries, then exit), else -errno
/// (-ENOSYS when the kernel lacks io_uring, -EPERM when seccomp or io_uring_disabled refuse it).
export fn lss_probe() i32 {
    const r = allocRingMemory() orelse return neg(.NOMEM);
    defer free(r);
    const rc = lssc_queue_init(2, r);
    if (rc < 0) return rc;
    lssc_queue_exit(r);
    return 0;
}

/// A new ring with `depth` SQ entries (rounded up to a power of two by the kernel; the CQ has
/// twice as many). Returns its handle (a heap address, > 0) or -errno.
export fn lss_ring_create(depth: u32) i64 {
    if (depth == 0 or depth > MAX_RING_ENTRIES) return neg(.INVAL);
    const r = allocRingMemory() orelse return neg(.NOMEM);
    const rc = lssc_queue_init(depth, r);
    if (rc < 0) {
        free(r);
        return rc;
    }
    if (!registerRing(r)) {
        lssc_queue_exit(r);
        free(r);
        return neg(.MFILE);
    }
    return @intCast(@intFromPtr(r));
}

/// Tear a ring down (the kernel finishes or cancels whatever is still in flight). -EBADF for a
/// handle that is not a live ring.
export fn lss_ring_destroy(ring: i64) i32 {
    const r = unregisterRing(ring) orelse return neg(.BADF);
    lssc_queue_exit(r);
    free(r);
    return 0;
}

/// Queue `count` ops from `ops` and submit them. Returns how many were queued and submitted
/// (fewer than `count` when the SQ is full; a link chain is never split, its ops all go in or
/// none do), or -errno, in which case nothing was queued:
///   -EBADF bad ring, -EFAULT null ops, -EINVAL unknown op code or flag bit, or a link chain
///   longer than the whole SQ; other -errno from io_uring_enter (the ring is then unusable).
/// `count == 0` only pushes SQEs a previous call could not submit (after EAGAIN/EBUSY).
export fn lss_submit(ring: i64, ops: ?[*]const Op, count: u32) i32 {
    const r = lookupRing(ring) orelse return neg(.BADF);
    if (count == 0) return flushSq(r);
    const list = ops orelse return neg(.FAULT);
    if (count > std.math.maxInt(i32)) return neg(.INVAL);

    for (list[0..count]) |op| {
        if (op.op > OP_DATASYNC) return neg(.INVAL);
        if (op.flags & ~OP_FLAGS_KNOWN != 0) return neg(.INVAL);
    }

    const space: u32 = lssc_sq_space_left(r);
    var n: u32 = @min(count, space);
    if (n < count) {
        // Do not split a link chain across submissions: stop after the last op that ends one.
        while (n > 0 and (list[n - 1].flags & OP_FLAG_LINK) != 0) n -= 1;
        if (n == 0) {
            // Nothing fits now. If even an empty SQ could not hold the first chain, it never will.
            if (space == lssc_sq_entries(r)) return neg(.INVAL);
            const frc = flushSq(r);
            if (frc < 0) return frc;
            return 0;
        }
    }

    var queued: u32 = 0;
    while (queued < n) : (queued += 1) {
        const op = list[queued];
        const sqe = lssc_get_sqe(r) orelse break; // cannot happen: space was checked
        switch (op.op) {
            OP_WRITE => lssc_prep_write(sqe, op.fd, op.addr, op.len, op.offset),
            OP_READ => lssc_prep_read(sqe, op.fd, op.addr, op.len, op.offset),
            else => lssc_prep_fsync(sqe, op.fd, IORING_FSYNC_DATASYNC),
        }
        lssc_sqe_set_flags(sqe, if ((op.flags & OP_FLAG_LINK) != 0) IOSQE_IO_LINK else 0);
        lssc_sqe_set_data64(sqe, op.user_data);
    }

    const rc = submitRetry(r);
    // EAGAIN/EBUSY: the SQEs stay in the SQ and go in with the next submit or wait.
    if (rc < 0 and rc != neg(.AGAIN) and rc != neg(.BUSY)) return rc;
    return @intCast(queued);
}

/// Copy up to `max` ready completions into `out` and mark them seen. Never blocks.
/// Returns the number copied, or -EBADF / -EFAULT.
export fn lss_reap(ring: i64, out: ?[*]Completion, max: u32) i32 {
    const r = lookupRing(ring) orelse return neg(.BADF);
    if (max == 0) return 0;
    const dst = out orelse return neg(.FAULT);
    const limit: u32 = @min(max, @as(u32, std.math.maxInt(i32)));
    var copied: u32 = 0;
    while (copied < limit) : (copied += 1) {
        var cqe: ?*Cqe = null;
        if (lssc_peek_cqe(r, &cqe) != 0) break;
        const c = cqe orelse break;
        dst[copied] = .{ .user_data = c.user_data, .res = c.res, .flags = c.flags };
        lssc_cqe_seen(r, c);
    }
    return @intCast(copied);
}

/// Wait until at least `min` completions are ready to reap, or `timeout_us` microseconds pass
/// (0 = do not block). First pushes SQEs left unsubmitted by an earlier EAGAIN/EBUSY.
/// Returns the number ready now (a timeout or a signal is not an error), or -errno.
export fn lss_wait(ring: i64, min: u32, timeout_us: u32) i32 {
    const r = lookupRing(ring) orelse return neg(.BADF);
    const frc = flushSq(r);
    if (frc < 0) return frc;
    const ready = lssc_cq_ready(r);
    if (min == 0 or ready >= min or timeout_us == 0) return @intCast(@min(ready, @as(c_uint, std.math.maxInt(i32))));
    const rc = lssc_wait_cqes(r, min, timeout_us);
    if (rc < 0 and rc != neg(.TIME) and rc != neg(.INTR) and rc != neg(.AGAIN) and rc != neg(.BUSY)) return rc;
    return @intCast(@min(lssc_cq_ready(r), @as(c_uint, std.math.maxInt(i32))));
}

/// A new eventfd (EFD_CLOEXEC) registered with the ring: the kernel adds 1 to it for every
/// completion it posts. JS waits for completions by reading it on Bun's thread pool, which keeps
/// the JS thread free for other work while I/O is in flight (a blocking io_uring_enter would
/// stall it). Returns the fd, or -errno; the ring's teardown unregisters it, lss_close closes it.
export fn lss_ring_eventfd(ring: i64) i32 {
    const r = lookupRing(ring) orelse return neg(.BADF);
    const rc = linux.eventfd(0, linux.EFD.CLOEXEC);
    const fd = sys32(rc);
    if (fd < 0) return fd;
    const reg = lssc_register_eventfd(r, fd);
    if (reg < 0) {
        _ = linux.close(fd);
        return reg;
    }
    return fd;
}

/// Add 1 to an eventfd (wakes a reader blocked on it): 0 or -errno.
export fn lss_eventfd_signal(fd: i32) i32 {
    var one: u64 = 1;
    while (true) {
        const rc = linux.write(fd, @ptrCast(&one), 8);
        if (!isErr(rc, .INTR)) {
            const v = sys32(rc);
            return if (v < 0) v else 0;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Exports: memory.

/// Allocations of at least this many bytes come straight from mmap: the kernel hands out zeroed
/// pages lazily, so a large buffer costs no up-front page faults (zeroing it with memset would
/// fault in every page), and free gives the memory back to the system at once.
const MMAP_THRESHOLD: u64 = 128 * 1024;

/// Live mmap allocations: address → mapped length. lss_free looks addresses up here to know
/// whether to munmap or free().
var big_allocs: std.AutoHashMapUnmanaged(usize, usize) = .{};
var big_lock: std.Thread.Mutex = .{};

/// `size` bytes of zeroed memory aligned to 4096 (page-aligned mmap for large sizes,
/// posix_memalign + memset for small ones), or 0 (size 0, or out of memory).
export fn lss_alloc(size: u64) u64 {
    if (size == 0 or size > std.math.maxInt(isize) - 4096) return 0;
    if (size >= MMAP_THRESHOLD) {
        const length: usize = @intCast((size + 4095) & ~@as(u64, 4095));
        const rc = linux.mmap(null, length, linux.PROT.READ | linux.PROT.WRITE, .{ .TYPE = .PRIVATE, .ANONYMOUS = true }, -1, 0);
        if (sys64(rc) < 0) return 0;
        big_lock.lock();
        defer big_lock.unlock();
        big_allocs.put(std.heap.c_allocator, rc, length) catch {
            _ = linux.munmap(@ptrFromInt(rc), length);
            return 0;
        };
        return rc;
    }
    var p: ?*anyopaque = null;
    if (posix_memalign(&p, 4096, @intCast(size)) != 0) return 0;
    const bytes: [*]u8 = @ptrCast(p orelse return 0);
    @memset(bytes[0..@intCast(size)], 0);
    return @intFromPtr(bytes);
}

/// Free memory from `lss_alloc` (0 is ignored).
export fn lss_free(ptr: u64) void {
    if (ptr == 0) return;
    const address: usize = @intCast(ptr);
    const length: ?usize = blk: {
        big_lock.lock();
        defer big_lock.unlock();
        const entry = big_allocs.fetchRemove(address) orelse break :blk null;
        break :blk entry.value;
    };
    if (length) |len| {
        _ = linux.munmap(@ptrFromInt(address), len);
    } else {
        free(@ptrFromInt(address));
    }
}

// ---------------------------------------------------------------------------------------------
// Exports: files. O_CLOEXEC is always added to the open flags.

/// open(path, flags | O_CLOEXEC, mode): fd or -errno. O_DIRECT is 0o40000 on x86_64.
export fn lss_open(path: ?[*:0]const u8, flags: i32, mode: i32) i32 {
    const p = path orelse return neg(.FAULT);
    if (mode < 0 or mode > 0o7777) return neg(.INVAL);
    const o_cloexec: u32 = 0o2000000;
    const bits: u32 = @as(u32, @bitCast(flags)) | o_cloexec;
    while (true) {
        const rc = linux.open(p, @bitCast(bits), @intCast(mode));
        if (!isErr(rc, .INTR)) return sys32(rc);
    }
}

/// close(fd): 0 or -errno (EINTR counts as closed, as it is on Linux).
export fn lss_close(fd: i32) i32 {
    const rc = linux.close(fd);
    if (isErr(rc, .INTR)) return 0;
    return sys32(rc);
}

/// fdatasync(fd): 0 or -errno.
export fn lss_datasync(fd: i32) i32 {
    while (true) {
        const rc = linux.fdatasync(fd);
        if (!isErr(rc, .INTR)) return sys32(rc);
    }
}

/// The file's size in bytes (fstat), or -errno.
export fn lss_file_size(fd: i32) i64 {
    var st: linux.Stat = undefined;
    const rc = linux.fstat(fd, &st);
    const v = sys64(rc);
    if (v < 0) return v;
    return st.size;
}

/// ftruncate(fd, len): 0 or -errno.
export fn lss_ftruncate(fd: i32, len: i64) i32 {
    if (len < 0) return neg(.INVAL);
    while (true) {
        const rc = linux.ftruncate(fd, len);
        if (!isErr(rc, .INTR)) return sys32(rc);
    }
}

/// fallocate(fd, mode, offset, len): 0 or -errno (-EOPNOTSUPP where the filesystem lacks it).
export fn lss_fallocate(fd: i32, mode: i32, offset: i64, len: i64) i32 {
    if (offset < 0 or len <= 0) return neg(.INVAL);
    while (true) {
        const rc = linux.fallocate(fd, mode, offset, len);
        if (!isErr(rc, .INTR)) return sys32(rc);
    }
}

const LOCK_SH: i32 = 1;
const LOCK_EX: i32 = 2;
const LOCK_NB: i32 = 4;
const LOCK_UN: i32 = 8;

/// flock(fd, exclusive ? LOCK_EX : LOCK_SH, nonblock ? LOCK_NB : 0): 0 or -errno
/// (-EWOULDBLOCK = -EAGAIN = -11 when another open file description holds it and nonblock).
export fn lss_lock(fd: i32, exclusive: i32, nonblock: i32) i32 {
    const op: i32 = (if (exclusive != 0) LOCK_EX else LOCK_SH) | (if (nonblock != 0) LOCK_NB else 0);
    while (true) {
        const rc = linux.flock(fd, op);
        if (!isErr(rc, .INTR)) return sys32(rc);
    }
}

/// flock(fd, LOCK_UN): 0 or -errno.
export fn lss_unlock(fd: i32) i32 {
    return sys32(linux.flock(fd, LOCK_UN));
}
