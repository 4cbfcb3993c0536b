/**
 * Spool files: each version is downloaded into a file instead of memory,
 * checked by {@linkcode BundleScanner} while it streams, and read back object
 * by object when it is sent.
 */
import { accessSync, close, closeSync, constants as fsConstants, fchmodSync, openSync, readdirSync, readSync, rmSync, statSync, writeSync } from "node:fs";
import { join } from "node:path";
import { RunError } from "./errors.ts";
import type { Logger } from "./log.ts";
import { isProcessAlive } from "./processes.ts";
import { BundleScanner, type ScannedBundle } from "./scan.ts";

/** Name suffix of spool files; `.gitignore` lists it. */
export const SPOOL_SUFFIX = ".spool";

// citalid-<version id>-<pid>-<8 hex digits>.spool
const SPOOL_NAME = /^citalid-.*-(\d+)-[0-9a-f]{8}\.spool$/;

/** A spool file that cannot be written, such as on a full disk. The next run may succeed. */
export class SpoolWriteError extends RunError {
  override name = "SpoolWriteError";
}

/** A spool folder that is missing or not writable. */
export class SpoolFolderError extends Error {
  override name = "SpoolFolderError";
}

/**
 * Checks that `folder` exists and is writable by this process. Raises
 * SpoolFolderError naming the folder and the setting to change.
 */
export function checkSpoolFolder(folder: string): void {
  const stats = statSync(folder, { throwIfNoEntry: false });
  if (stats === undefined) {
    throw new SpoolFolderError(`Spool folder ${folder} does not exist: create it or set CONNECTOR_SPOOL_DIR to an existing folder`);
  }
  if (!stats.isDirectory()) {
    throw new SpoolFolderError(`Spool folder ${folder} is not a folder: set CONNECTOR_SPOOL_DIR to an existing folder`);
  }
  try {
    accessSync(folder, fsConstants.W_OK);
  } catch {
    throw new SpoolFolderError(`Spool folder ${folder} is not writable by this user: fix its permissions or set CONNECTOR_SPOOL_DIR elsewhere`);
  }
}

/**
 * Removes the spool files that a killed connector left in `folder`: those
 * named with this process's pid or with the pid of a process that is gone.
 * Files of a live process are kept, in case another connector shares the
 * folder. Returns the paths removed; a file that cannot be removed is logged
 * and skipped.
 */
export function removeLeftoverSpoolFiles(folder: string, logger: Logger): string[] {
  const removed: string[] = [];
  for (const name of readdirSync(folder)) {
    const match = SPOOL_NAME.exec(name);
    if (match === null) {
      continue;
    }
    const pid = Number(match[1]);
    if (pid !== process.pid && isProcessAlive(pid)) {
      continue;
    }
    const path = join(folder, name);
    try {
      rmSync(path, { force: true });
      removed.push(path);
    } catch (error) {
      logger.warn("Cannot remove a leftover spool file", { path, reason: (error as Error).message });
    }
  }
  if (removed.length > 0) {
    logger.info("Removed spool files left by an earlier connector process", { folder, files: removed.length });
  }
  return removed;
}

/**
 * One version's spool file, created with mode 0600. Writes append; reads
 * take byte ranges. {@linkcode SpoolFile.remove} closes and deletes it.
 */
export class SpoolFile {
  readonly path: string;
  #fd: number | undefined;
  #size = 0;

  private constructor(path: string, fd: number) {
    this.path = path;
    this.#fd = fd;
  }

  /** Creates an empty spool file in `folder` for `versionId`. Raises the file system's error. */
  static create(folder: string, versionId: string): SpoolFile {
    const safeId = versionId.replace(/[^A-Za-z0-9._-]/g, "_").slice(0, 64);
    const random = crypto.getRandomValues(new Uint32Array(1))[0]!.toString(16).padStart(8, "0");
    const path = join(folder, `citalid-${safeId}-${process.pid}-${random}${SPOOL_SUFFIX}`);
    return new SpoolFile(path, openPrivate(path));
  }

  /** Bytes written so far. */
  get size(): number {
    return this.#size;
  }

  /** Appends `chunk`. Raises the file system's error, such as ENOSPC. */
  write(chunk: Uint8Array): void {
    const fd = this.#open();
    let done = 0;
    while (done < chunk.length) {
      done += writeSync(fd, chunk, done, chunk.length - done, this.#size + done);
    }
    this.#size += chunk.length;
  }

  /**
   * Empties the file, for a new download attempt. A file with bytes is
   * replaced by a new one at the same path. Truncating it to 0 bytes would
   * make ext4 allocate and write back its delayed blocks when it is closed
   * (the `auto_da_alloc` mount option, on by default), even once deleted.
   * After a 200 MB version, that close took about 125 ms instead of 11 ms.
   */
  clear(): void {
    if (this.#size === 0) {
      return;
    }
    const fd = this.#open();
    this.#fd = undefined;
    closeSync(fd);
    rmSync(this.path, { force: true });
    this.#fd = openPrivate(this.path);
    this.#size = 0;
  }

  /** Reads bytes [start, end) into `target` at `offset`. Raises when the file is shorter. */
  readInto(start: number, end: number, target: Uint8Array, offset = 0): void {
    const fd = this.#open();
    let done = 0;
    const length = end - start;
    while (done < length) {
      const read = readSync(fd, target, offset + done, length - done, start + done);
      if (read === 0) {
        throw new Error(`Spool file ${this.path} ends at byte ${start + done}, before byte ${end}`);
      }
      done += read;
    }
  }

  /**
   * Deletes the file, then closes it. Safe to call more than once. The
   * name is gone on return. The close frees the file's cached pages, about
   * 11 ms for a 200 MB file on the benchmark's machine, so it runs on Bun's
   * thread pool.
   */
  remove(): void {
    try {
      rmSync(this.path, { force: true });
    } finally {
      if (this.#fd !== undefined) {
        close(this.#fd, () => {});
        this.#fd = undefined;
      }
    }
  }

  #open(): number {
    if (this.#fd === undefined) {
      throw new Error(`Spool file ${this.path} was removed`);
    }
    return this.#fd;
  }
}

// Creates the file at `path`, which must not exist, for reading and
// writing by its owner only, and returns its descriptor.
function openPrivate(path: string): number {
  const fd = openSync(path, "wx+", 0o600);
  // The umask can only remove permissions, but a mode set by the caller's
  // file system defaults is not trusted either.
  fchmodSync(fd, 0o600);
  return fd;
}

/** A file that {@linkcode SpoolReader} reads byte ranges of, such as a {@linkcode SpoolFile}. */
export interface RangeFile {
  /** Size in bytes. */
  readonly size: number;
  /** Reads bytes [start, end) into `target` at `offset`. */
  readInto(start: number, end: number, target: Uint8Array, offset?: number): void;
}

/** Options of {@linkcode SpoolReader}. */
export interface SpoolReaderOptions {
  /** Size of a cached block, in bytes. @default 1048576 */
  blockBytes?: number;
  /** Blocks kept in memory, least recently used dropped first. @default 8 */
  blocks?: number;
}

/**
 * Reads byte ranges of a spool file as UTF-8 text through a small cache of
 * aligned blocks, so that objects read in dependency order, which is mostly
 * the file's order, cost one read per block rather than one per object.
 * Memory is at most `blockBytes × blocks` plus the range being read.
 */
export class SpoolReader {
  readonly #file: RangeFile;
  readonly #blockBytes: number;
  // The cache: for each slot, the block it holds (-1 for none), that
  // block's bytes (a view of `#memory`, shorter for the file's last block),
  // and when it was last used. A handful of slots is searched in order,
  // which allocates nothing per read.
  readonly #slotBlock: Int32Array;
  readonly #slotBytes: Buffer[] = [];
  readonly #slotMemory: Buffer[] = [];
  readonly #slotUsed: Float64Array;
  #clock = 0;

  constructor(file: RangeFile, options: SpoolReaderOptions = {}) {
    this.#file = file;
    this.#blockBytes = options.blockBytes ?? 1 << 20;
    const slots = Math.max(1, options.blocks ?? 8);
    this.#slotBlock = new Int32Array(slots).fill(-1);
    this.#slotUsed = new Float64Array(slots);
  }

  /** Decodes bytes [start, end) as UTF-8; invalid sequences become U+FFFD, as `Response.text()` does. */
  text(start: number, end: number): string {
    if (end <= start) {
      return "";
    }
    const first = Math.floor(start / this.#blockBytes);
    const last = Math.floor((end - 1) / this.#blockBytes);
    if (first !== last) {
      // A range across a block boundary is read on its own.
      const bytes = Buffer.allocUnsafe(end - start);
      this.#file.readInto(start, end, bytes);
      return bytes.toString("utf8");
    }
    const block = this.#block(first);
    const base = first * this.#blockBytes;
    return block.toString("utf8", start - base, end - base);
  }

  /**
   * Returns bytes [start, end) as a view of a cached block, or of a new
   * buffer for a range across blocks. The view is valid until the next call.
   */
  bytes(start: number, end: number): Uint8Array {
    if (end <= start) {
      return new Uint8Array(0);
    }
    const first = Math.floor(start / this.#blockBytes);
    const last = Math.floor((end - 1) / this.#blockBytes);
    if (first !== last) {
      const bytes = Buffer.allocUnsafe(end - start);
      this.#file.readInto(start, end, bytes);
      return bytes;
    }
    const base = first * this.#blockBytes;
    return this.#block(first).subarray(start - base, end - base);
  }

  /** Drops the cached blocks. */
  clear(): void {
    this.#slotBlock.fill(-1);
    this.#slotBytes.length = 0;
    this.#slotMemory.length = 0;
  }

  #block(index: number): Buffer {
    const slots = this.#slotBlock.length;
    let oldest = 0;
    for (let slot = 0; slot < slots; slot++) {
      if (this.#slotBlock[slot] === index) {
        this.#slotUsed[slot] = ++this.#clock;
        return this.#slotBytes[slot]!;
      }
      if (this.#slotUsed[slot]! < this.#slotUsed[oldest]!) {
        oldest = slot;
      }
    }

    // The least recently used slot's memory is reused, so reading a whole
    // version allocates one buffer per slot, not one per block.
    const start = index * this.#blockBytes;
    const end = Math.min(start + this.#blockBytes, this.#file.size);
    const memory = this.#slotMemory[oldest] ?? Buffer.allocUnsafe(this.#blockBytes);
    const bytes = memory.subarray(0, end - start);
    this.#file.readInto(start, end, bytes);
    this.#slotMemory[oldest] = memory;
    this.#slotBytes[oldest] = bytes;
    this.#slotBlock[oldest] = index;
    this.#slotUsed[oldest] = ++this.#clock;
    return bytes;
  }
}

/**
 * The target of one version's download: each chunk goes to the spool file
 * and through the scanner, so a body that is not JSON stops the download at
 * its first invalid byte. {@linkcode VersionSpool.begin} starts each attempt
 * afresh.
 */
export class VersionSpool {
  readonly file: SpoolFile;
  #scanner = new BundleScanner();
  #head: Uint8Array[] = [];
  #headBytes = 0;
  #sinceCollection = 0;

  /** Creates the spool file in `folder`. Raises SpoolWriteError when it cannot be created. */
  constructor(folder: string, versionId: string) {
    try {
      this.file = SpoolFile.create(folder, versionId);
    } catch (error) {
      throw new SpoolWriteError(
        `Cannot create a spool file for version ${versionId} in ${folder}: ${(error as Error).message}. Check that the folder exists and is writable, or set CONNECTOR_SPOOL_DIR`,
        { cause: error },
      );
    }
  }

  /** Empties the file and resets the scanner for a new attempt. */
  begin(): void {
    this.file.clear();
    this.#scanner = new BundleScanner();
    this.#head = [];
    this.#headBytes = 0;
  }

  /**
   * Writes and scans the next chunk. Raises JsonScanError when the bytes
   * cannot be JSON, and SpoolWriteError when the write fails.
   */
  write(chunk: Uint8Array): void {
    if (this.#headBytes < HEAD_BYTES) {
      const part = chunk.slice(0, HEAD_BYTES - this.#headBytes);
      this.#head.push(part);
      this.#headBytes += part.length;
    }
    try {
      this.file.write(chunk);
    } catch (error) {
      throw new SpoolWriteError(
        `Cannot write the spool file ${this.file.path} at byte ${this.file.size}: ${(error as Error).message}. Free disk space there or set CONNECTOR_SPOOL_DIR to a larger folder`,
        { cause: error },
      );
    }
    this.#scanner.write(chunk);
    // fetch hands over each chunk in a new buffer, garbage once written,
    // and the scanner's index arrays leave their smaller copies behind as
    // they grow. A full collection every 64 MB frees both: on an 800 MB
    // version it kept the scan at about 185 MB RSS instead of 315 MB, for
    // 160 ms of collections in all (bench/RESULTS.md has the machine).
    this.#sinceCollection += chunk.length;
    if (this.#sinceCollection >= COLLECT_EVERY_BYTES) {
      this.#sinceCollection = 0;
      Bun.gc(true);
    }
  }

  /** Checks that the body is complete and returns its index. Raises JsonScanError when it is cut short. */
  end(): ScannedBundle {
    const scan = this.#scanner.end();
    // The download's buffers and the index's old arrays are garbage now.
    Bun.gc(true);
    return scan;
  }

  /** Returns the first bytes of the body as text, for an error message. */
  head(): string {
    return Buffer.concat(this.#head).toString("utf8");
  }

  /** Closes and deletes the spool file. */
  remove(): void {
    this.file.remove();
  }
}

// Bytes of the body kept for error messages.
const HEAD_BYTES = 512;
// Bytes downloaded between two full collections.
const COLLECT_EVERY_BYTES = 64 * 1024 * 1024;
