/**
 * The single executable built by scripts/build.ts, run with an empty
 * environment except PATH and the connector's variables (`env -i`) against
 * the fake Citalid API and the fake OpenCTI platform. Probe programs
 * compiled with the same flags check what the flags promise.
 */
import { afterEach, beforeAll, beforeEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { copyFileSync, existsSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import packageJson from "../package.json" with { type: "json" };
import { HELP } from "../lib/cli.ts";
import { type FakeCitalid, startFakeCitalid } from "./fakes/citalid.ts";
import { type FakeOpenCTI, startFakeOpenCTI } from "./fakes/opencti.ts";
import { fixtureCitalidVersions } from "./fixtures/versions.ts";
import { buildBinary, compileWithBuildFlags } from "./helpers/binary.ts";
import { TEST_SECRETS, connectorEnv, runConnectorOnce, startConnector, tempDir } from "./helpers/connector.ts";

// The build in beforeAll and the subprocesses take longer than Bun's default 5 s on a loaded machine.
setDefaultTimeout(60_000);

const CONNECTOR_ID = "0b4f5a2c-7d1e-4c3b-9a8f-1e2d3c4b5a69";

let binary: string;

beforeAll(async () => {
  binary = await buildBinary();
}, 120_000);

/** Returns the command that runs `executable` through `env -i` with only PATH and `variables`. */
function withEmptyEnvironment(executable: string, variables: Record<string, string>): string[] {
  const assignments = Object.entries({ ...variables, PATH: "/usr/bin:/bin" }).map(([name, value]) => `${name}=${value}`);
  return ["/usr/bin/env", "-i", ...assignments, executable];
}

/** Runs the binary to its end with `env -i`, in `cwd` (a fresh folder by default). */
function runBinary(args: string[], variables: Record<string, string> = {}, options: { cwd?: string; executable?: string } = {}) {
  const command = withEmptyEnvironment(options.executable ?? binary, variables);
  return runConnectorOnce({ PATH: "/usr/bin:/bin" }, args, { command, cwd: options.cwd ?? tempDir() });
}

describe("binary without services", () => {
  test("--version prints the package version", async () => {
    const run = await runBinary(["--version"]);

    expect(run.code).toBe(0);
    expect(run.stdout()).toBe(`citalid-connector ${packageJson.version} (Bun ${Bun.version})\n`);
  });

  test("--help prints the help text", async () => {
    const run = await runBinary(["--help"]);

    expect(run.code).toBe(0);
    expect(run.stdout()).toBe(HELP);
  });

  test("unknown option exits 2", async () => {
    const run = await runBinary(["--frobnicate"]);

    expect(run.code).toBe(2);
    expect(run.lines.join("\n")).toContain("Unknown option '--frobnicate'");
  });

  test("missing settings exit 2", async () => {
    const run = await runBinary(["--once"]);

    expect(run.code).toBe(2);
    expect(run.lines.join("\n")).toContain("OPENCTI_URL (opencti.url) is missing");
  });

  test("missing --config file exits 2", async () => {
    const run = await runBinary(["--check", "--config", "/nonexistent/config.yml"]);

    expect(run.code).toBe(2);
    expect(run.lines.join("\n")).toContain("--config /nonexistent/config.yml: file not found");
  });
});

describe("binary against the fakes", () => {
  let citalid: FakeCitalid;
  let opencti: FakeOpenCTI;
  let stateDir: string;

  beforeEach(async () => {
    citalid = await startFakeCitalid({ versions: fixtureCitalidVersions(), password: TEST_SECRETS.citalidPassword });
    opencti = await startFakeOpenCTI({ token: TEST_SECRETS.openctiToken });
    stateDir = tempDir();
  });

  afterEach(async () => {
    await citalid.stop();
    await opencti.stop();
  });

  /** Returns the connector's variables without PATH and HOME, which `env -i` replaces. */
  function variables(extra: Record<string, string> = {}): Record<string, string> {
    const { PATH: _path, HOME: _home, ...rest } = connectorEnv(citalid, opencti, stateDir, extra);
    return rest;
  }

  test("--check passes and imports nothing", async () => {
    const run = await runBinary(["--check"], variables());

    expect(run.code).toBe(0);
    expect(run.stdout()).toContain("All checks passed.");
    expect(opencti.registrations).toEqual([]);
    expect(opencti.works).toEqual([]);
    expect(opencti.pushes).toEqual([]);
    expect(citalid.counts.downloadsTotal).toBe(0);
  });

  test("--once imports every version", async () => {
    const run = await runBinary(["--once"], variables());

    expect(run.code).toBe(0);
    expect(opencti.pushes).toHaveLength(4);
    expect(opencti.works).toHaveLength(1);
    expect(opencti.works[0]!.status).toBe("complete");
    expect(JSON.parse(opencti.connectors.get(CONNECTOR_ID)!.state!).last_loaded_bundle_id).toBe("20250301");
    expect(JSON.parse(readFileSync(join(stateDir, "state.json"), "utf8")).last_loaded_bundle_id).toBe("20250301");
  });

  test("second --once imports nothing", async () => {
    await runBinary(["--once"], variables());

    const second = await runBinary(["--once"], variables());

    expect(second.code).toBe(0);
    expect(opencti.works).toHaveLength(1);
    expect(opencti.pushes).toHaveLength(4);
  });

  test("serves metrics with prom-client", async () => {
    const probe = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
    const port = probe.port!;
    probe.stop(true);
    const command = withEmptyEnvironment(
      binary,
      variables({ CONNECTOR_DURATION_PERIOD: "PT1H", CONNECTOR_EXPOSE_METRICS: "true", CONNECTOR_METRICS_PORT: String(port) }),
    );
    const connector = startConnector({ PATH: "/usr/bin:/bin" }, [], { command, cwd: stateDir });

    let text: string;
    try {
      await connector.waitForLog("Schedule next run of connector");
      text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    } finally {
      connector.proc.kill("SIGTERM");
    }

    expect(await connector.exited).toBe(0);
    expect(text).toContain("\nruns_total 1\n");
    expect(text).toContain("\nversions_imported_total 4\n");
  });

  describe("config.yml lookup", () => {
    // Settings that only config.yml sets: the Citalid credentials.
    function configText(): string {
      return `citalid:\n  customer_sub_domain_url: ${citalid.url}\n  user: ${JSON.stringify(citalid.user)}\n  password: ${JSON.stringify(citalid.password)}\n`;
    }

    function variablesWithoutCitalid(): Record<string, string> {
      const { CITALID_CUSTOMER_SUB_DOMAIN_URL: _url, CITALID_USER: _user, CITALID_PASSWORD: _password, ...rest } = variables();
      return rest;
    }

    test("reads the file given with --config", async () => {
      const path = join(tempDir(), "settings.yml");
      writeFileSync(path, configText(), { mode: 0o600 });

      const run = await runBinary(["--check", "--config", path], variablesWithoutCitalid());

      expect(run.code).toBe(0);
      expect(run.stdout()).toContain(`read from ${path}`);
    });

    test("reads config.yml in the working directory", async () => {
      const cwd = tempDir();
      writeFileSync(join(cwd, "config.yml"), configText(), { mode: 0o600 });

      const run = await runBinary(["--check"], variablesWithoutCitalid(), { cwd });

      expect(run.code).toBe(0);
      expect(run.stdout()).toContain(`read from ${join(cwd, "config.yml")}`);
    });

    test("reads config.yml beside the executable", async () => {
      const folder = tempDir();
      const executable = join(folder, "citalid-connector");
      copyFileSync(binary, executable);
      writeFileSync(join(folder, "config.yml"), configText(), { mode: 0o600 });

      const run = await runBinary(["--check"], variablesWithoutCitalid(), { executable });

      expect(run.code).toBe(0);
      expect(run.stdout()).toContain(`read from ${join(folder, "config.yml")}`);
    });

    test("symlink reads config.yml beside its target", async () => {
      const folder = tempDir();
      const executable = join(folder, "citalid-connector");
      copyFileSync(binary, executable);
      writeFileSync(join(folder, "config.yml"), configText(), { mode: 0o600 });
      const link = join(tempDir(), "citalid-connector");
      symlinkSync(executable, link);

      const run = await runBinary(["--check"], variablesWithoutCitalid(), { executable: link });

      expect(run.code).toBe(0);
      expect(run.stdout()).toContain(`read from ${join(folder, "config.yml")}`);
    });

    test("working directory wins over the executable's", async () => {
      const folder = tempDir();
      const executable = join(folder, "citalid-connector");
      copyFileSync(binary, executable);
      writeFileSync(join(folder, "config.yml"), "connector:\n  name: beside the executable\n", { mode: 0o600 });
      const cwd = tempDir();
      writeFileSync(join(cwd, "config.yml"), configText(), { mode: 0o600 });

      const run = await runBinary(["--check"], variablesWithoutCitalid(), { cwd, executable });

      expect(run.stdout()).toContain(`read from ${join(cwd, "config.yml")}`);
    });

    test("embeds no config.yml", async () => {
      const run = await runBinary(["--check"], variables());

      expect(run.code).toBe(0);
      expect(run.stdout()).toContain("no config.yml found");
    });
  });

  test("ignores .env in the working directory", async () => {
    const cwd = tempDir();
    // Loaded, this would make the settings invalid and the check exit 2.
    writeFileSync(join(cwd, ".env"), "CONNECTOR_QUEUE_PROTOCOL=carrier-pigeon\n");

    const run = await runBinary(["--check"], variables(), { cwd });

    expect(run.code).toBe(0);
  });

  test("ignores bunfig.toml in the working directory", async () => {
    const cwd = tempDir();
    const marker = join(cwd, "preloaded");
    writeFileSync(join(cwd, "preload.ts"), `require("node:fs").writeFileSync(${JSON.stringify(marker)}, "yes");\n`);
    writeFileSync(join(cwd, "bunfig.toml"), 'preload = ["./preload.ts"]\n');

    const run = await runBinary(["--check"], variables(), { cwd });

    expect(run.code).toBe(0);
    expect(existsSync(marker)).toBe(false);
  });
});

describe("build flags", () => {
  const PROBE = [
    "function fail(): never {",
    '  throw new Error("probe failure");',
    "}",
    "await Promise.resolve();",
    'console.log(JSON.stringify({ dotenv: process.env.PROBE_FROM_DOTENV ?? null }));',
    "try {",
    "  fail();",
    "} catch (error) {",
    "  console.log((error as Error).stack);",
    "}",
    "",
  ].join("\n");

  /** Compiles the probe, copies the executable alone into a folder with .env and bunfig.toml, and runs it there. */
  async function runProbe(adjust?: (flags: string[]) => string[]) {
    const source = tempDir();
    writeFileSync(join(source, "probe.ts"), PROBE);
    await compileWithBuildFlags(join(source, "probe.ts"), join(source, "out", "probe"), adjust);

    const cwd = tempDir();
    copyFileSync(join(source, "out", "probe"), join(cwd, "probe"));
    writeFileSync(join(cwd, ".env"), "PROBE_FROM_DOTENV=loaded\n");
    writeFileSync(join(cwd, "preload.ts"), 'console.log("PRELOADED");\n');
    writeFileSync(join(cwd, "bunfig.toml"), 'preload = ["./preload.ts"]\n');
    const probe = Bun.spawn(["/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "./probe"], { cwd, stdout: "pipe", stderr: "pipe" });
    const [code, stdout] = await Promise.all([probe.exited, new Response(probe.stdout).text()]);
    return { code, stdout };
  }

  test("stack shows TypeScript lines without a .map file", async () => {
    const { code, stdout } = await runProbe();

    expect(code).toBe(0);
    expect(stdout).toMatch(/at fail \(\S*probe\.ts:2:\d+\)/);
    expect(stdout).toMatch(/at \S*probe\.ts:7:\d+/);
  });

  test("probe skips .env and bunfig.toml", async () => {
    const { stdout } = await runProbe();

    expect(stdout).toContain('{"dotenv":null}');
    expect(stdout).not.toContain("PRELOADED");
  });

  test("without the flags both load", async () => {
    const { stdout } = await runProbe((flags) => flags.filter((flag) => !flag.startsWith("--no-compile-autoload")));

    expect(stdout).toContain('{"dotenv":"loaded"}');
    expect(stdout).toContain("PRELOADED");
  });

  test("full minification loses function names", async () => {
    const { stdout } = await runProbe((flags) => [...flags.filter((flag) => !flag.startsWith("--minify")), "--minify"]);

    expect(stdout).not.toContain("at fail (");
  });
});
