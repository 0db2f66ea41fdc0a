/**
 * The prebuilt shim as an embedded file. `bun build --compile` puts the `.so` inside the binary and
 * this module's default export becomes its internal path (`/$bunfs/root/libbloom_lss_shim-<hash>.so`);
 * run from source it is the file's absolute path.
 *
 * Only `src/io/shim.ts` loads this module, through `require()` inside try/catch: the static import
 * below throws at module load when the prebuilt library does not exist, and that must not break
 * anything that never uses io_uring.
 *
 * @module
 */
// @ts-ignore -- no ambient module type for "*.so"; Bun's `file` loader makes the default export a path string.
import embeddedShimPath from "../../prebuilt/linux-x64/libbloom_lss_shim.so" with { type: "file" };

/** Path of the embedded (or on-disk) prebuilt shim. */
const path: string = String(embeddedShimPath);
export default path;
