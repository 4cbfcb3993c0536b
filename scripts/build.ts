/**
 * Builds the single executable `dist/citalid-connector` with
 * `bun build --compile`: minified, with an embedded source map so stack
 * traces show TypeScript lines, and without the automatic loading of `.env`
 * and `bunfig.toml` from the working directory.
 *
 * Usage: `bun scripts/build.ts [--outfile PATH]`. `bun run build` runs it.
 */
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";

const root = join(import.meta.dir, "..");

/** Output path of the executable, relative to the repository root. */
export const DEFAULT_OUTFILE = "dist/citalid-connector";

/**
 * Returns the `bun build` arguments, after the bun executable, that compile
 * `entry` into `outfile`. The tests compile probe programs with them.
 */
export function buildArguments(entry: string, outfile: string): string[] {
  return [
    "build",
    "--compile",
    // Whitespace and syntax only: with --minify, which also renames
    // identifiers, stack frames show one-letter function names even
    // through the source map (Bun 1.4.5).
    "--minify-whitespace",
    "--minify-syntax",
    // With --compile, Bun embeds the source map in the executable; the .map
    // file it also writes beside the output is not needed at run time.
    "--sourcemap",
    // Bytecode needs ES modules here, because main.ts uses top-level await.
    "--bytecode",
    "--format=esm",
    "--no-compile-autoload-dotenv",
    "--no-compile-autoload-bunfig",
    entry,
    "--outfile",
    outfile,
  ];
}

/** Builds the connector's executable at `outfile` (absolute, or relative to the repository root). Exits on failure. */
function build(outfile: string): void {
  const command = [process.execPath, ...buildArguments(join(root, "main.ts"), resolve(root, outfile))];
  const result = Bun.spawnSync(command, { cwd: root, stdout: "inherit", stderr: "inherit" });
  if (result.exitCode !== 0) {
    console.error(`bun build failed with exit code ${result.exitCode}: ${command.join(" ")}`);
    process.exit(result.exitCode ?? 1);
  }
  console.log(`Built ${resolve(root, outfile)}`);
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { outfile: { type: "string" } }, strict: true });
  build(values.outfile ?? DEFAULT_OUTFILE);
}
