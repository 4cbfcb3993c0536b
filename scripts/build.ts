/**
 * Builds the single executable `dist/citalid-connector` with
 * `bun build --compile`: minified, with an embedded source map so stack
 * traces show TypeScript lines, and without the automatic loading of `.env`
 * and `bunfig.toml` from the working directory.
 */
import { join } from "node:path";

const root = join(import.meta.dir, "..");
const outfile = join(root, "dist", "citalid-connector");

const command = [
  process.execPath,
  "build",
  "--compile",
  "--minify",
  "--sourcemap",
  "--bytecode",
  "--format=esm",
  "--no-compile-autoload-dotenv",
  "--no-compile-autoload-bunfig",
  join(root, "main.ts"),
  "--outfile",
  outfile,
];

const build = Bun.spawnSync(command, { cwd: root, stdout: "inherit", stderr: "inherit" });
if (build.exitCode !== 0) {
  console.error(`bun build failed with exit code ${build.exitCode}: ${command.join(" ")}`);
  process.exit(build.exitCode ?? 1);
}
console.log(`Built ${outfile}`);
