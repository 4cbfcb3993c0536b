/**
 * Builds the single executable for the tests, with scripts/build.ts, into a
 * temporary folder so that a test run never replaces a developer's dist/.
 */
import { chmodSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildArguments } from "../../scripts/build.ts";

const REPO = join(import.meta.dir, "..", "..");

let built: Promise<string> | undefined;

/**
 * Builds the connector's executable once per test file and returns its
 * absolute path. Its folder has mode 0755 so that other users can run it.
 * Raises an Error with bun build's output when the build fails.
 */
export function buildBinary(): Promise<string> {
  built ??= (async () => {
    const folder = mkdtempSync(join(tmpdir(), "citalid-connector-binary-"));
    chmodSync(folder, 0o755);
    const outfile = join(folder, "citalid-connector");
    const build = Bun.spawn([process.execPath, join(REPO, "scripts", "build.ts"), "--outfile", outfile], {
      cwd: REPO,
      stdout: "pipe",
      stderr: "pipe",
    });
    const [code, stdout, stderr] = await Promise.all([build.exited, new Response(build.stdout).text(), new Response(build.stderr).text()]);
    if (code !== 0) {
      throw new Error(`scripts/build.ts failed with exit code ${code}:\n${stdout}\n${stderr}`);
    }
    return outfile;
  })();
  return built;
}

/**
 * Compiles `entry` into `outfile` with the connector's build flags, or
 * with the flags that `adjust` returns from them. Raises an Error with
 * bun build's output when the build fails.
 */
export async function compileWithBuildFlags(entry: string, outfile: string, adjust: (flags: string[]) => string[] = (flags) => flags): Promise<void> {
  const build = Bun.spawn([process.execPath, ...adjust(buildArguments(entry, outfile))], { cwd: REPO, stdout: "pipe", stderr: "pipe" });
  const [code, stdout, stderr] = await Promise.all([build.exited, new Response(build.stdout).text(), new Response(build.stderr).text()]);
  if (code !== 0) {
    throw new Error(`bun build of ${entry} failed with exit code ${code}:\n${stdout}\n${stderr}`);
  }
}
