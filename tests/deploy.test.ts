/**
 * The deployment files against what the binary needs: the systemd units
 * (checked by `systemd-analyze` and by running the built binary the way the
 * units confine it), journald log lines, the Dockerfile and the compose file.
 */
import { beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { chmodSync, chownSync, closeSync, mkdirSync, openSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { parseCommandLine } from "../lib/cli.ts";
import { loadConfig } from "../lib/config.ts";
import { DEFAULT_TIMINGS } from "../lib/timings.ts";
import { isJournalStream } from "../lib/log.ts";
import { DEFAULT_OUTFILE } from "../scripts/build.ts";
import { type FakeCitalid, startFakeCitalid } from "./fakes/citalid.ts";
import { type FakeOpenCTI, startFakeOpenCTI } from "./fakes/opencti.ts";
import { fixtureCitalidVersions } from "./fixtures/versions.ts";
import { buildBinary } from "./helpers/binary.ts";
import { TEST_SECRETS, connectorEnv, runConnectorOnce, tempDir } from "./helpers/connector.ts";

// The build in beforeAll and the subprocesses take longer than Bun's default 5 s on a loaded machine.
setDefaultTimeout(60_000);

const REPO = join(import.meta.dir, "..");
const DEPLOY = join(REPO, "deploy");
const SERVICES = ["citalid-connector.service", "citalid-connector-once.service"];
const UNITS = [...SERVICES, "citalid-connector-once.timer"];
// The user the sandboxed runs use, as DynamicUser= would pick one.
const NOBODY = 65534;

/** Returns why a check cannot run here, or undefined when it can, and prints the reason once. */
function missing(checks: string, reason: string | undefined): string | undefined {
  if (reason !== undefined) {
    console.warn(`deploy.test.ts: skipping ${checks}: ${reason}`);
  }
  return reason;
}

const noSystemdAnalyze = missing("systemd-analyze checks", Bun.which("systemd-analyze") ? undefined : "systemd-analyze is not installed");
const noSandbox = missing(
  "sandboxed runs",
  process.getuid?.() !== 0
    ? "they need root to create a mount namespace and drop to another user"
    : !Bun.which("unshare") || !Bun.which("setpriv")
      ? "unshare or setpriv (util-linux) is not installed"
      : undefined,
);
const noStrace = missing("the system call trace", Bun.which("strace") ? undefined : "strace is not installed");

/** One unit file as sections of keys, each with its values in file order. */
type UnitFile = Map<string, Map<string, string[]>>;

function parseUnit(text: string): UnitFile {
  const unit: UnitFile = new Map();
  let section: Map<string, string[]> | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) {
      continue;
    }
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = new Map();
      unit.set(header[1]!, section);
      continue;
    }
    const equals = line.indexOf("=");
    const key = line.slice(0, equals);
    section!.set(key, [...(section!.get(key) ?? []), line.slice(equals + 1)]);
  }
  return unit;
}

function readUnit(name: string): UnitFile {
  return parseUnit(readFileSync(join(DEPLOY, name), "utf8"));
}

/** Returns the last value of a key, as systemd applies it, or undefined when the key is absent. */
function setting(unit: UnitFile, section: string, key: string): string | undefined {
  return unit.get(section)?.get(key)?.at(-1);
}

/** Copies the units into a fresh folder with `executable` in place of the installed binary path. */
function copyUnits(executable: string): string {
  const folder = tempDir("citalid-connector-units-");
  for (const name of UNITS) {
    const text = readFileSync(join(DEPLOY, name), "utf8").replaceAll("/usr/local/bin/citalid-connector", executable);
    writeFileSync(join(folder, name), text);
  }
  return folder;
}

function run(command: string[], cwd?: string) {
  const result = Bun.spawnSync(command, { cwd, stdout: "pipe", stderr: "pipe" });
  return { code: result.exitCode, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
}

let binary: string;

beforeAll(async () => {
  binary = await buildBinary();
}, 120_000);

describe("systemd units", () => {
  const HARDENING: [string, string][] = [
    ["DynamicUser", "yes"],
    ["StateDirectory", "citalid-connector"],
    ["NoNewPrivileges", "yes"],
    ["ProtectSystem", "strict"],
    ["ProtectHome", "yes"],
    ["PrivateTmp", "yes"],
    ["PrivateDevices", "yes"],
    ["RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"],
    ["CapabilityBoundingSet", ""],
    ["SystemCallFilter", "@system-service"],
  ];

  for (const name of SERVICES) {
    for (const [key, value] of HARDENING) {
      test(`${name} sets ${key}=${value}`, () => {
        expect(setting(readUnit(name), "Service", key)).toBe(value);
      });
    }

    test(`${name} sets the allocator option`, () => {
      expect(setting(readUnit(name), "Service", "Environment")).toBe("MIMALLOC_PURGE_HOLES_MIN_INTERVAL=0");
    });

    test(`${name} allows JIT memory`, () => {
      // Bun's JavaScript engine needs writable and executable memory.
      expect(setting(readUnit(name), "Service", "MemoryDenyWriteExecute")).not.toBe("yes");
    });

    test(`${name} passes config.yml as a credential`, () => {
      const unit = readUnit(name);

      expect(setting(unit, "Service", "LoadCredential")).toBe("config.yml:/etc/citalid-connector/config.yml");
      expect(setting(unit, "Service", "ExecStart")).toContain("--config ${CREDENTIALS_DIRECTORY}/config.yml");
    });

    test(`${name} ExecStart options parse`, () => {
      const [executable, ...args] = setting(readUnit(name), "Service", "ExecStart")!.split(/\s+/);
      const commandLine = parseCommandLine(args.map((arg) => arg.replace("${CREDENTIALS_DIRECTORY}", "/run/credentials/unit")));

      expect(executable).toBe("/usr/local/bin/citalid-connector");
      expect(commandLine.once).toBe(name.includes("-once"));
      expect(commandLine.configPath).toBe("/run/credentials/unit/config.yml");
    });

    test(`${name} stops after the shutdown grace`, () => {
      const stopSeconds = Number.parseInt(setting(readUnit(name), "Service", "TimeoutStopSec")!, 10);

      expect(stopSeconds * 1000).toBeGreaterThan(DEFAULT_TIMINGS.shutdownGraceMs);
    });
  }

  test("long-running unit restarts on failure", () => {
    const unit = readUnit("citalid-connector.service");

    expect(setting(unit, "Service", "Restart")).toBe("on-failure");
    expect(setting(unit, "Service", "RestartPreventExitStatus")).toBe("2");
  });

  test("one-shot unit is oneshot", () => {
    expect(setting(readUnit("citalid-connector-once.service"), "Service", "Type")).toBe("oneshot");
  });

  test("timer starts the one-shot unit", () => {
    const timer = readUnit("citalid-connector-once.timer");

    expect(setting(timer, "Timer", "Unit")).toBe("citalid-connector-once.service");
    expect(setting(timer, "Timer", "Persistent")).toBe("true");
    expect(setting(timer, "Install", "WantedBy")).toBe("timers.target");
  });

  test.skipIf(noSystemdAnalyze !== undefined)("systemd-analyze verify accepts the units", () => {
    const folder = copyUnits(binary);

    const result = run(["systemd-analyze", "verify", ...UNITS.map((name) => join(folder, name))], folder);

    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
  });

  test.skipIf(noSystemdAnalyze !== undefined)("systemd-analyze verify reports an unknown key", () => {
    const folder = copyUnits(binary);
    const path = join(folder, "citalid-connector.service");
    writeFileSync(path, readFileSync(path, "utf8").replace("ProtectSystem=strict", "ProtectSystm=strict"));

    const result = run(["systemd-analyze", "verify", path], folder);

    expect(result.stderr).toContain("Unknown key 'ProtectSystm'");
  });

  test.skipIf(noSystemdAnalyze !== undefined)("systemd-analyze verify needs the binary", () => {
    const folder = copyUnits("/nonexistent/citalid-connector");

    const result = run(["systemd-analyze", "verify", join(folder, "citalid-connector.service")], folder);

    expect(result.code).not.toBe(0);
  });

  for (const name of SERVICES) {
    test.skipIf(noSystemdAnalyze !== undefined)(`${name} exposure is at most 2.0`, () => {
      const folder = copyUnits(binary);

      // --threshold is on a 0 to 100 scale, ten times the printed level (systemd 252).
      const result = run(["systemd-analyze", "security", "--offline=yes", "--threshold=20", join(folder, name)], folder);

      expect(result.stdout).toContain(`Overall exposure level for ${name}`);
      expect(result.code).toBe(0);
    });
  }
});

describe("binary confined like the units", () => {
  let citalid: FakeCitalid;
  let opencti: FakeOpenCTI;

  /**
   * Prepares the folders the unit gives the service: a state folder owned by
   * the service's user and a credentials folder with config.yml (mode 0400).
   */
  async function prepare() {
    citalid = await startFakeCitalid({ versions: fixtureCitalidVersions().slice(0, 2), password: TEST_SECRETS.citalidPassword });
    opencti = await startFakeOpenCTI({ token: TEST_SECRETS.openctiToken });
    const root = tempDir("citalid-connector-sandbox-");
    chmodSync(root, 0o755);
    const stateDir = join(root, "state");
    const credentials = join(root, "credentials");
    mkdirSync(stateDir, { mode: 0o700 });
    mkdirSync(credentials, { mode: 0o700 });
    const config = join(credentials, "config.yml");
    writeFileSync(
      config,
      [
        "opencti:",
        `  url: ${opencti.url}`,
        `  token: ${TEST_SECRETS.openctiToken}`,
        "connector:",
        "  id: 0b4f5a2c-7d1e-4c3b-9a8f-1e2d3c4b5a69",
        "citalid:",
        `  customer_sub_domain_url: ${citalid.url}`,
        `  user: ${JSON.stringify(citalid.user)}`,
        `  password: ${JSON.stringify(citalid.password)}`,
        "",
      ].join("\n"),
      { mode: 0o400 },
    );
    for (const path of [stateDir, credentials, config]) {
      chownSync(path, NOBODY, NOBODY);
    }
    return { stateDir, config };
  }

  async function cleanUp() {
    await citalid?.stop();
    await opencti?.stop();
  }

  /**
   * Returns a command that runs `args` in a new mount namespace where the
   * root file system is read-only except `writable`, as user 65534 with no
   * capabilities and no_new_privs, as ProtectSystem=strict, DynamicUser=,
   * CapabilityBoundingSet= and NoNewPrivileges= do.
   */
  function confined(writable: string, args: string[]): string[] {
    const script = [
      'mount --bind "$1" "$1"',
      "mount -o remount,bind,ro /",
      "shift",
      `exec setpriv --reuid=${NOBODY} --regid=${NOBODY} --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs "$@"`,
    ].join(" && ");
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "confined", writable, ...args];
  }

  const environment = (stateDir: string) => ({ PATH: "/usr/bin:/bin", STATE_DIRECTORY: stateDir, CONNECTOR_RETRY_DELAY_MS: "20" });

  test.skipIf(noSandbox !== undefined)("--once imports with the state folder only", async () => {
    try {
      const { stateDir, config } = await prepare();

      const result = await runConnectorOnce(environment(stateDir), ["--once", "--config", config], { command: confined(stateDir, [binary]), cwd: stateDir });

      expect(result.code).toBe(0);
      expect(opencti.pushes).toHaveLength(2);
      const state = statSync(join(stateDir, "state.json"));
      expect(state.uid).toBe(NOBODY);
      expect(state.mode & 0o777).toBe(0o600);
      expect(JSON.parse(readFileSync(join(stateDir, "state.json"), "utf8")).last_loaded_bundle_id).toBe("20250105-2");
      expect(result.logs().some((line) => line.level === "WARNING")).toBe(false);
    } finally {
      await cleanUp();
    }
  });

  test.skipIf(noSandbox !== undefined)("--check passes confined", async () => {
    try {
      const { stateDir, config } = await prepare();

      const result = await runConnectorOnce(environment(stateDir), ["--check", "--config", config], { command: confined(stateDir, [binary]), cwd: stateDir });

      expect(result.stdout()).toContain("All checks passed.");
      expect(result.code).toBe(0);
    } finally {
      await cleanUp();
    }
  });

  test.skipIf(noSandbox !== undefined)("confinement blocks other writes", () => {
    const writable = tempDir("citalid-connector-sandbox-");
    chownSync(writable, NOBODY, NOBODY);
    const outside = join(tempDir("citalid-connector-sandbox-"), "outside");
    chmodSync(resolve(outside, ".."), 0o777);

    const result = run(confined(writable, ["sh", "-c", `touch ${outside} 2>&1; grep CapEff /proc/self/status; id -u`]));

    expect(result.stdout).toContain("Read-only file system");
    expect(result.stdout).toContain("CapEff:\t0000000000000000");
    expect(result.stdout.trim().endsWith(String(NOBODY))).toBe(true);
  });

  test.skipIf(noStrace !== undefined || noSystemdAnalyze !== undefined)("binary stays within the unit's filters", async () => {
    const citalidServer = await startFakeCitalid({ versions: fixtureCitalidVersions().slice(0, 1), password: TEST_SECRETS.citalidPassword });
    const openctiServer = await startFakeOpenCTI({ token: TEST_SECRETS.openctiToken });
    try {
      const stateDir = tempDir();
      const trace = join(tempDir(), "trace.txt");
      const port = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
      const metricsPort = port.port!;
      port.stop(true);
      const env = connectorEnv(citalidServer, openctiServer, stateDir, { CONNECTOR_EXPOSE_METRICS: "true", CONNECTOR_METRICS_PORT: String(metricsPort) });

      const result = await runConnectorOnce(env, ["--once"], { command: ["strace", "-f", "-qq", "-o", trace, binary], cwd: stateDir });

      expect(result.code).toBe(0);
      const lines = readFileSync(trace, "utf8").split("\n");
      const calls = new Set(lines.map((line) => /^\d+\s+([a-z0-9_]+)\(/.exec(line)?.[1]).filter((name) => name !== undefined));
      const allowed = expandSyscallGroup("@system-service");
      expect([...calls].filter((name) => !allowed.has(name))).toEqual([]);
      const families = new Set(lines.map((line) => /\bsocket\((AF_[A-Z0-9]+)/.exec(line)?.[1]).filter((name) => name !== undefined));
      expect([...families].filter((family) => !["AF_INET", "AF_INET6", "AF_UNIX"].includes(family))).toEqual([]);
      const written = lines
        .filter((line) => /\bopen(at)?\(.*O_(WRONLY|RDWR|CREAT)/.test(line) && !/= -1 /.test(line))
        .map((line) => /"([^"]+)"/.exec(line)?.[1] ?? line);
      expect(written.filter((path) => !path.startsWith(stateDir + "/"))).toEqual([]);
    } finally {
      await citalidServer.stop();
      await openctiServer.stop();
    }
  });
});

/** Returns the system calls of a `SystemCallFilter=` group, as this machine's systemd-analyze lists them. */
function expandSyscallGroup(group: string, seen = new Set<string>()): Set<string> {
  const names = new Set<string>();
  for (const line of run(["systemd-analyze", "syscall-filter", group]).stdout.split("\n").slice(1)) {
    const entry = line.trim();
    if (entry === "" || entry.startsWith("#")) {
      continue;
    }
    if (!entry.startsWith("@")) {
      names.add(entry);
    } else if (!seen.has(entry)) {
      seen.add(entry);
      for (const name of expandSyscallGroup(entry, seen)) {
        names.add(name);
      }
    }
  }
  return names;
}

describe("journald log lines", () => {
  let citalid: FakeCitalid;
  let opencti: FakeOpenCTI;

  /** Runs the binary with stderr in a file and returns the lines of that file. */
  async function runWithStderrFile(journalStream: (path: string) => string, extra: Record<string, string> = {}) {
    citalid = await startFakeCitalid({ versions: fixtureCitalidVersions().slice(0, 2), password: TEST_SECRETS.citalidPassword });
    opencti = await startFakeOpenCTI({ token: TEST_SECRETS.openctiToken });
    try {
      const stateDir = tempDir();
      const path = join(stateDir, "stderr.txt");
      writeFileSync(path, "");
      const env = { ...connectorEnv(citalid, opencti, stateDir, extra), JOURNAL_STREAM: journalStream(path) };
      const proc = Bun.spawn([binary, "--once"], { env, cwd: stateDir, stdout: "ignore", stderr: Bun.file(path) });
      const code = await proc.exited;
      return { code, lines: readFileSync(path, "utf8").trimEnd().split("\n") };
    } finally {
      await citalid.stop();
      await opencti.stop();
    }
  }

  const streamOf = (path: string) => {
    const stats = statSync(path, { bigint: true });
    return `${stats.dev}:${stats.ino}`;
  };

  test("prefixes each line with its priority", async () => {
    const { code, lines } = await runWithStderrFile(streamOf);

    expect(code).toBe(0);
    expect(lines.every((line) => /^<[3467]>\{/.test(line))).toBe(true);
    expect(lines.find((line) => line.includes('"message":"Starting the Citalid connector"'))).toStartWith("<6>{");
    expect(lines.find((line) => line.includes('"level":"DEBUG"'))).toStartWith("<7>{");
  });

  test("failed run logs at priority 3", async () => {
    const { code, lines } = await runWithStderrFile(streamOf, { CONNECTOR_RETRY_DELAY_MS: "20", CITALID_PASSWORD: "not-the-password" });

    expect(code).toBe(1);
    expect(lines.find((line) => line.includes('"message":"Run failed"'))).toStartWith("<3>{");
  });

  test("another stream gets no prefix", async () => {
    const { code, lines } = await runWithStderrFile(() => "1:1");

    expect(code).toBe(0);
    expect(lines.every((line) => line.startsWith("{"))).toBe(true);
  });

  test("isJournalStream matches the open file", () => {
    const path = join(tempDir(), "stream.txt");
    writeFileSync(path, "");
    const fd = openSync(path, "r");
    try {
      expect(isJournalStream(streamOf(path), fd)).toBe(true);
      expect(isJournalStream("1:1", fd)).toBe(false);
      expect(isJournalStream(undefined, fd)).toBe(false);
      expect(isJournalStream("", fd)).toBe(false);
      expect(isJournalStream("not-a-stream", fd)).toBe(false);
    } finally {
      closeSync(fd);
    }
  });
});

describe("Dockerfile", () => {
  interface Instruction {
    keyword: string;
    args: string;
  }

  /** Parses the Dockerfile into stages of instructions, with continuation lines joined. */
  function parseDockerfile(): Instruction[][] {
    const text = readFileSync(join(REPO, "Dockerfile"), "utf8").replace(/\\\n/g, " ");
    const stages: Instruction[][] = [];
    for (const raw of text.split("\n")) {
      const line = raw.trim();
      if (line === "" || line.startsWith("#")) {
        continue;
      }
      const [keyword, ...rest] = line.split(/\s+/);
      const instruction = { keyword: keyword!.toUpperCase(), args: rest.join(" ") };
      if (instruction.keyword === "FROM") {
        stages.push([]);
      }
      stages.at(-1)!.push(instruction);
    }
    return stages;
  }

  const stages = parseDockerfile();
  const [build, runtime] = [stages[0]!, stages.at(-1)!];
  const args = (stage: Instruction[], keyword: string) => stage.filter((instruction) => instruction.keyword === keyword).map((instruction) => instruction.args);

  test("has a build and a runtime stage", () => {
    expect(stages).toHaveLength(2);
    expect(args(build, "FROM")[0]).toMatch(/^oven\/bun:\S+ AS build$/);
    expect(args(runtime, "FROM")[0]).not.toContain("bun");
  });

  test("runtime sets the allocator option", () => {
    expect(args(runtime, "ENV")).toContain("MIMALLOC_PURGE_HOLES_MIN_INTERVAL=0");
  });

  test("builds with Bun of package.json", () => {
    const bunVersion = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")).devDependencies.bun;

    expect(args(build, "FROM")[0]).toStartWith(`oven/bun:${bunVersion}-`);
  });

  test("runs the build script", () => {
    expect(args(build, "RUN")).toContain("bun scripts/build.ts");
  });

  test("copies what the build reads", () => {
    const copied = args(build, "COPY").flatMap((line) => line.split(/\s+/).slice(0, -1));
    const needed = ["package.json", "bun.lock", "main.ts", "lib", "scripts"];

    expect(needed.filter((path) => !copied.includes(path))).toEqual([]);
  });

  test("lib imports nothing outside the copied paths", () => {
    const copied = new Set(["package.json", "main.ts", "lib", "scripts"]);
    const outside: string[] = [];
    for (const file of readdirSync(join(REPO, "lib")).filter((name) => name.endsWith(".ts"))) {
      for (const match of readFileSync(join(REPO, "lib", file), "utf8").matchAll(/from "(\.{1,2}\/[^"]+)"/g)) {
        const top = resolve(REPO, "lib", match[1]!).slice(REPO.length + 1).split("/")[0]!;
        if (!copied.has(top)) {
          outside.push(`${file}: ${match[1]}`);
        }
      }
    }

    expect(outside).toEqual([]);
  });

  test("copies the built executable", () => {
    const workdir = args(build, "WORKDIR")[0]!;
    const [source, target] = args(runtime, "COPY")[0]!.replace("--from=build ", "").split(/\s+/);

    expect(source).toBe(`${workdir}/${DEFAULT_OUTFILE}`);
    expect(args(runtime, "ENTRYPOINT")[0]).toContain(`"${target}"`);
  });

  test("runs as a non-root user", () => {
    const user = args(runtime, "USER").at(-1);

    expect(user).toBeDefined();
    expect(["root", "0"]).not.toContain(user!.split(":")[0]);
  });

  test("keeps the state in the volume", () => {
    const volume = JSON.parse(args(runtime, "VOLUME")[0]!) as string[];
    const stateFile = args(runtime, "ENV").find((line) => line.startsWith("CONNECTOR_STATE_FILE="))!.split("=")[1]!;

    expect(volume).toContain(stateFile.slice(0, stateFile.lastIndexOf("/")));
  });

  test("stops with SIGTERM", () => {
    expect(args(runtime, "STOPSIGNAL")).toEqual(["SIGTERM"]);
  });

  test("exposes the metrics port", () => {
    expect(args(runtime, "EXPOSE")).toEqual(["9095"]);
  });

  test(".dockerignore keeps local settings out", () => {
    const ignored = readFileSync(join(REPO, ".dockerignore"), "utf8").split("\n");

    for (const path of ["config.yml", ".env", "state.json", "node_modules", "dist"]) {
      expect(ignored).toContain(path);
    }
  });
});

describe("docker-compose.yml", () => {
  const compose = parseYaml(readFileSync(join(REPO, "docker-compose.yml"), "utf8"));
  const service = compose.services["connector-citalid"];
  const environment: Record<string, string> = Object.fromEntries(Object.entries(service.environment).map(([key, value]) => [key, String(value)]));

  test("sets the Python connector's variables", () => {
    const python = [
      "OPENCTI_URL",
      "OPENCTI_TOKEN",
      "CONNECTOR_ID",
      "CONNECTOR_NAME",
      "CONNECTOR_SCOPE",
      "CONNECTOR_RUN_AND_TERMINATE",
      "CONNECTOR_LOG_LEVEL",
      "CITALID_CUSTOMER_SUB_DOMAIN_URL",
      "CITALID_USER",
      "CITALID_PASSWORD",
    ];

    expect(python.filter((name) => !(name in environment))).toEqual([]);
  });

  test("uses the duration period, not the interval", () => {
    expect(environment.CONNECTOR_DURATION_PERIOD).toBe("PT24H");
    expect("CITALID_INTERVAL" in environment).toBe(false);
  });

  test("variables load once filled in", () => {
    const filled = Object.fromEntries(
      Object.entries(environment).map(([key, value]) => [key, value.replace("ChangeMe", key === "CONNECTOR_ID" ? "0b4f5a2c-7d1e-4c3b-9a8f-1e2d3c4b5a69" : "filled")]),
    );

    const { warnings } = loadConfig({ env: filled, cwd: tempDir() });

    expect(warnings).toEqual([]);
  });

  test("mounts the image's volume", () => {
    expect(service.volumes).toContain("citalid-state:/var/lib/citalid-connector");
  });

  test("grace period covers the shutdown", () => {
    const seconds = Number.parseInt(service.stop_grace_period, 10);

    expect(seconds * 1000).toBeGreaterThan(DEFAULT_TIMINGS.shutdownGraceMs);
  });
});
