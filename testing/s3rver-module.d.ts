/**
 * The few parts of `s3rver` (3.7.x, which ships no types) that the harness in `./s3rver.ts` uses.
 * Written by hand from the package's `lib/s3rver.js`; only what is called is declared.
 *
 * @module
 */
declare module "s3rver" {
  import type { Server } from "node:http";
  import type { AddressInfo } from "node:net";

  /** Constructor options of s3rver 3.x (a subset). */
  interface S3rverOptions {
    /** Address to listen on. */
    address?: string;
    /** Port to listen on; 0 picks a free one. */
    port?: number;
    /** Suppress its request log. */
    silent?: boolean;
    /** Where buckets and objects are stored. */
    directory?: string;
    /** Wipe `directory` when the server closes. */
    resetOnClose?: boolean;
    /** Buckets created before the server starts listening. */
    configureBuckets?: { name: string; configs?: (string | Uint8Array)[] }[];
  }

  /** A Koa application that speaks enough of the S3 REST API for tests. */
  class S3rver {
    constructor(options?: S3rverOptions);
    /** Start listening; resolves with the bound address. */
    run(): Promise<AddressInfo>;
    /** Stop listening (proxies `httpServer.close()`). */
    close(): Promise<void>;
    /** The node:http server, set once `run()` resolved. */
    httpServer: Server | undefined;
  }
  export = S3rver;
}
