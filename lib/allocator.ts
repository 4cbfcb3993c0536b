/**
 * Allocator options of the compiled binary. mimalloc, Bun's allocator, reads
 * its options from the environment when the process starts, so the binary
 * replaces itself once with `process.execve` (same process id, same
 * arguments) when an option is missing from its environment. main.ts imports
 * this file first, so the replacement happens before the other modules load.
 * A variable that is already set keeps its value, and a source run
 * (`bun main.ts`) is left as it is.
 */

/**
 * Options that the connector sets. With the default interval of 100 ms, Bun's
 * mimalloc defers returning the free parts of recently used pages to the
 * system. After a run, those parts stayed resident while the binary idled:
 * about 3 MB after importing a 50 MB version, for the 50 s measured (Bun
 * 1.4.5). With 0, it returns them at once, which did not slow the import of a
 * 200 MB version.
 */
export const ALLOCATOR_OPTIONS: Readonly<Record<string, string>> = { MIMALLOC_PURGE_HOLES_MIN_INTERVAL: "0" };

/** Returns `env` with the allocator options it lacks, or undefined when it has them all. */
export function withAllocatorOptions(env: Record<string, string | undefined>): Record<string, string> | undefined {
  const missing = Object.entries(ALLOCATOR_OPTIONS).filter(([name]) => env[name] === undefined);
  if (missing.length === 0) {
    return undefined;
  }
  const complete: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (value !== undefined) {
      complete[name] = value;
    }
  }
  return { ...complete, ...Object.fromEntries(missing) };
}

// A compiled binary runs from Bun's virtual file system.
if (import.meta.path.startsWith("/$bunfs")) {
  const env = withAllocatorOptions(process.env);
  if (env !== undefined) {
    try {
      process.execve?.(process.execPath, [process.execPath, ...process.argv.slice(2)], env);
    } catch {
      // The connector works without the options, and only idles with more
      // memory, so a failed execve (such as one that a sandbox denies) is ignored.
    }
  }
}
