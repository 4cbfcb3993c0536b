/**
 * Benchmark of the connector on large versions. For each size it generates
 * a version from the ATT&CK for ICS fixtures (bench/generate.ts) and serves
 * it from the fake Citalid. Three pipelines then run on the same bytes,
 * each in its own process: the floor (bench/floor.ts), the naive pipeline
 * (bench/naive.ts) and the connector (`bun main.ts --once`, api protocol).
 * They push to the fake OpenCTI, which validates each push and keeps only
 * counts. Each measured run meets a platform process of its own
 * (bench/platform.ts: both fakes and the floor's sink), started for that
 * run. The naive pipeline is also measured against a platform process that
 * has already taken one naive push. The benchmark also measures the amqp
 * splitter alone (bench/split.ts) and the compiled binary's start-up time
 * and idle RSS, with the fakes in this process.
 *
 * Wall time is from spawn to exit, measured here. Peak RSS is the maximum
 * resident set size of the measured process, from `/usr/bin/time -f %M`
 * when present, else polled from /proc/<pid>/status (VmHWM). The fakes run
 * in other processes, so their memory is not counted.
 *
 * Each pipeline runs `--repeat` times on each version: the table shows the
 * median wall time and the highest peak RSS, because other processes on
 * the machine make single runs vary. The load average is recorded.
 *
 * One benchmark runs at a time: a second one exits 2 while the first holds
 * bench/out/bench.lock.
 *
 * Usage: bun bench/bench.ts [--smoke] [--sizes 50,200] [--repeat 5] [--keep]
 *   --smoke   the smallest size only, once, no splitter or binary runs, and
 *             bench/RESULTS.md is left as is; exits 1 when a run fails
 *   --sizes   only the versions of these sizes in MB, and RESULTS.md is
 *             left as is
 *   --repeat  runs of each pipeline per version @default 5, 1 with --smoke
 *   --keep    keep the generated versions in bench/out/
 */
import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statfsSync, writeFileSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { isProcessAlive } from "../lib/processes.ts";
import { startFakeCitalid } from "../tests/fakes/citalid.ts";
import { startFakeOpenCTI } from "../tests/fakes/opencti.ts";
import { FIXTURE_VERSIONS, fixtureCitalidVersions } from "../tests/fixtures/versions.ts";
import { type GeneratedVersion, generateVersion } from "./generate.ts";

const ROOT = join(import.meta.dir, "..");
const OUT = join(import.meta.dir, "out");
const LOCK = join(OUT, "bench.lock");
const RESULTS = join(import.meta.dir, "RESULTS.md");
const TIME = "/usr/bin/time";
const VERSION_ID = "20250301";
const CITALID_PASSWORD = "bench-citalid-password";
const OPENCTI_TOKEN = "bench-opencti-token";
const BINARY = join(ROOT, "dist", "citalid-connector");

/** One version the benchmark runs the pipelines on. */
interface Case {
  name: string;
  megabytes: number;
  withoutAuthor: boolean;
}

/** A finished process: exit code, wall time, peak RSS and output. */
interface Measured {
  code: number;
  wallMs: number;
  /** Wall times of every run, when the figure is the median of several. */
  wallsMs?: number[];
  peakRssMb: number;
  /** CPU time of the platform process while the measured one ran: the platform side's work. */
  fakesCpuMs: number;
  /** Pushes the platform process received during the run. */
  pushes: PushTotals;
  stdout: string;
  stderr: string;
}

/** Counts of the pushes a platform process received. */
interface PushTotals {
  bundles: number;
  objects: number;
  bytes: number;
}

/** The endpoints of the fakes a run talks to. */
interface Endpoints {
  citalidUrl: string;
  citalidUser: string;
  openctiUrl: string;
  graphqlUrl: string;
  sinkUrl: string;
}

/** A platform process of bench/platform.ts. */
interface Platform extends Endpoints {
  /** Sends one command line and returns the reply line. */
  command(line: string): Promise<string>;
  /** Closes the process's input and waits for it to exit. */
  close(): Promise<void>;
}

interface CaseResult {
  case: Case;
  version?: GeneratedVersion;
  skipped?: string;
  floor?: Measured & { downloadMs: number; uploadMs: number };
  /** Each run against a platform process started for it. */
  naive?: Measured;
  /** Runs against one platform process that took one naive push before them. */
  naiveWarm?: Measured;
  connector?: Measured & {
    pushed: number;
    bundles: number;
    versionMs: number;
    /** From "Processing version" to the first push, from the log timestamps: download, scan and checks. */
    downloadMs: number;
    /** From the first push to "Version sent and stored as the connector state". */
    pushMs: number;
    ok: boolean;
    problem?: string;
  };
  split?: { whole: SplitFigures; spooled: SplitFigures };
}

interface SplitFigures {
  objects: number;
  messages: number;
  /** Time from the file to the splitter's input: parse and checks (whole), or scan, checks and light objects (spooled). */
  loadMs: number;
  inputMs?: number;
  splitMs: number;
  /** Time to serialize every message, reading each object back from the file in the spooled form. */
  renderMs: number;
  objectsPerSecond: number;
  peakRssMb: number;
}

const USAGE = "Usage: bun bench/bench.ts [--smoke] [--sizes 50,200,800] [--repeat N] [--keep]";
let flags: { smoke?: boolean; keep?: boolean; sizes?: string; repeat?: string };
try {
  flags = parseArgs({
    options: { smoke: { type: "boolean" }, keep: { type: "boolean" }, sizes: { type: "string" }, repeat: { type: "string" } },
  }).values;
} catch (error) {
  console.error(`${(error as Error).message}\n${USAGE}`);
  process.exit(2);
}
const ALL_CASES: Case[] = [
  { name: "50 MB", megabytes: 50, withoutAuthor: false },
  { name: "200 MB", megabytes: 200, withoutAuthor: false },
  { name: "200 MB, no author", megabytes: 200, withoutAuthor: true },
  { name: "800 MB", megabytes: 800, withoutAuthor: false },
];
const sizes = flags.sizes?.split(",").map(Number);
const unknownSizes = sizes?.filter((size) => !ALL_CASES.some((benchCase) => benchCase.megabytes === size));
if (unknownSizes !== undefined && unknownSizes.length > 0) {
  console.error(`Invalid --sizes ${JSON.stringify(flags.sizes)}: the sizes are 50, 200 and 800 (MB), comma-separated.\n${USAGE}`);
  process.exit(2);
}
if (flags.repeat !== undefined && !(Number.isInteger(Number(flags.repeat)) && Number(flags.repeat) >= 1)) {
  console.error(`Invalid --repeat ${JSON.stringify(flags.repeat)}: give a whole number of runs, 1 or more.\n${USAGE}`);
  process.exit(2);
}
// A partial run prints its figures but leaves bench/RESULTS.md as it is.
const partial = flags.smoke === true || sizes !== undefined;
const smoke = flags.smoke === true;
const REPEAT = Math.max(1, Number(flags.repeat ?? (smoke ? 1 : 5)));
const CASES: Case[] = smoke ? ALL_CASES.slice(0, 1) : ALL_CASES.filter((benchCase) => sizes === undefined || sizes.includes(benchCase.megabytes));

mkdirSync(OUT, { recursive: true });
takeLock();
const loadAtStart = loadavg()[0]!;

// Processes this benchmark started and has not seen exit. A SIGTERM or
// SIGINT stops them with their children (`/usr/bin/time` does not pass a
// signal on to the program it measures), removes the generated versions
// unless --keep, and exits.
const children = new Set<number>();
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => {
    for (const pid of children) {
      killTree(pid);
    }
    if (!flags.keep) {
      for (const benchCase of CASES) {
        rmSync(versionPath(benchCase), { force: true });
      }
    }
    // The state folders and time files of the runs that were stopped.
    for (const name of readdirSync(OUT)) {
      if (name.startsWith("state-") || name.startsWith("time-")) {
        rmSync(join(OUT, name), { recursive: true, force: true });
      }
    }
    releaseLock();
    console.error(`Benchmark stopped by ${signal}`);
    process.exit(signal === "SIGINT" ? 130 : 143);
  });
}
const citalid = await startFakeCitalid({ password: CITALID_PASSWORD });
const opencti = await startFakeOpenCTI({ token: OPENCTI_TOKEN, recordBodies: false, keepPushes: false, maxBodyBytes: 4_000_000_000 });
const local: Endpoints = { citalidUrl: citalid.url, citalidUser: citalid.user, openctiUrl: opencti.url, graphqlUrl: opencti.graphqlUrl, sinkUrl: "" };

const results: CaseResult[] = [];
let failed = false;
try {
  for (const benchCase of CASES) {
    const result = await runCase(benchCase);
    results.push(result);
    printCase(result);
    if (result.connector?.ok !== true) {
      failed = true;
    }
  }

  let releases: { release: string; whole: SplitFigures; spooled: SplitFigures }[] = [];
  let binary: BinaryFigures | undefined;
  if (!partial) {
    releases = FIXTURE_VERSIONS.map((version) => ({
      release: version.file.replace(/\.json\.gz$/, ""),
      whole: splitFigures("whole", join(ROOT, "tests", "fixtures", version.file)),
      spooled: splitFigures("spooled", join(ROOT, "tests", "fixtures", version.file)),
    }));
    binary = await measureBinary(results.find((result) => result.case.megabytes === 50));
    writeResults(results, releases, binary);
    console.log(`Wrote ${RESULTS}`);
  }
} finally {
  await citalid.stop();
  await opencti.stop();
  if (!flags.keep) {
    for (const benchCase of CASES) {
      rmSync(versionPath(benchCase), { force: true });
    }
  }
  releaseLock();
}
process.exit(failed ? 1 : 0);

/**
 * Creates bench/out/bench.lock with this process's pid, or exits 2 when a
 * live benchmark holds it: two runs would share the version files in
 * bench/out/ and the two cores, and each would measure the other. A lock
 * whose process is gone is taken over.
 */
function takeLock(): void {
  for (;;) {
    try {
      writeFileSync(LOCK, `${process.pid}\n`, { flag: "wx" });
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") {
        throw error;
      }
    }
    const holderPid = Number(readFileSync(LOCK, "utf8").trim());
    if (Number.isInteger(holderPid) && holderPid > 0 && isProcessAlive(holderPid)) {
      console.error(`Benchmark already running (pid ${holderPid}, lock ${LOCK}): wait for it to end or stop it, then run again.`);
      process.exit(2);
    }
    rmSync(LOCK, { force: true });
  }
}

function releaseLock(): void {
  rmSync(LOCK, { force: true });
}

/** Records a spawned process in `children` until it exits, and returns it. */
function tracked<T extends Bun.Subprocess>(proc: T): T {
  children.add(proc.pid);
  void proc.exited.then(() => children.delete(proc.pid));
  return proc;
}

// Sends SIGTERM to a process and to its descendants, read from /proc.
function killTree(pid: number): void {
  let descendants: number[] = [];
  try {
    descendants = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    // The process has exited, or /proc does not list children here.
  }
  for (const child of descendants) {
    killTree(child);
  }
  try {
    process.kill(pid, "SIGTERM");
  } catch {
    // Already gone.
  }
}

function versionPath(benchCase: Case): string {
  return join(OUT, `version-${benchCase.megabytes}${benchCase.withoutAuthor ? "-no-author" : ""}.json`);
}

async function runCase(benchCase: Case): Promise<CaseResult> {
  const path = versionPath(benchCase);
  // The version file, the connector's spool file of the same size, and room.
  const needed = benchCase.megabytes * 1_000_000 * 2.5;
  const disk = statfsSync(OUT);
  if (disk.bavail * disk.bsize < needed) {
    return { case: benchCase, skipped: `${Math.round((disk.bavail * disk.bsize) / 1e9)} GB free in ${OUT}, ${Math.round(needed / 1e9)} GB needed` };
  }

  const version = generateVersion({ path, targetBytes: benchCase.megabytes * 1_000_000, withoutAuthor: benchCase.withoutAuthor });
  const result: CaseResult = { case: benchCase, version };

  // The three pipelines run in turns, so that a slow spell of the machine
  // falls on each of them alike, and a pipeline that failed is not run again.
  const floorRuns: Measured[] = [];
  const connectorRuns: NonNullable<CaseResult["connector"]>[] = [];
  const naiveRuns: Measured[] = [];
  for (let round = 0; round < REPEAT; round++) {
    if (stillPassing(floorRuns)) {
      floorRuns.push(
        await freshRun(() =>
          onPlatform(path, (platform) =>
            measureOn(platform, [process.execPath, join(import.meta.dir, "floor.ts"), platform.citalidUrl, platform.citalidUser, CITALID_PASSWORD, VERSION_ID, path, platform.sinkUrl]),
          ),
        ),
      );
    }
    if (stillPassing(connectorRuns)) {
      connectorRuns.push(await freshRun(() => onPlatform(path, (platform) => measureConnector(platform, version))));
    }
    if (stillPassing(naiveRuns)) {
      naiveRuns.push(await freshRun(() => onPlatform(path, (platform) => measureNaive(platform))));
    }
  }
  const floor = summarize(floorRuns);
  result.floor = { ...floor, ...(floor.code === 0 ? (JSON.parse(floor.stdout) as { downloadMs: number; uploadMs: number }) : { downloadMs: NaN, uploadMs: NaN }) };
  result.connector = summarize(connectorRuns);
  result.naive = summarize(naiveRuns);
  if (result.naive.code === 0) {
    result.naiveWarm = await onPlatform(path, async (platform) => {
      await measureNaive(platform);
      return repeated(() => measureNaive(platform));
    });
  }

  if (!smoke && benchCase.megabytes === 200 && !benchCase.withoutAuthor) {
    result.split = { whole: splitFigures("whole", path), spooled: splitFigures("spooled", path) };
  }
  if (!flags.keep) {
    rmSync(path, { force: true });
  }
  return result;
}

/**
 * Runs a measurement REPEAT times and returns {@linkcode summarize} of the
 * runs. A run that fails ends the series, because failing again only takes
 * time.
 */
async function repeated<T extends Measured>(run: () => Promise<T>): Promise<T> {
  const runs: T[] = [];
  while (runs.length < REPEAT && stillPassing(runs)) {
    runs.push(await freshRun(run));
  }
  return summarize(runs);
}

// Runs one measurement after a full collection of this process.
function freshRun<T>(run: () => Promise<T>): Promise<T> {
  Bun.gc(true);
  return run();
}

// True while no run of the series has failed.
function stillPassing(runs: Measured[]): boolean {
  return runs.every((run) => run.code === 0);
}

/**
 * Returns the run with the median wall time, with every wall time and the
 * highest peak RSS, or the failed run when one failed.
 */
function summarize<T extends Measured>(runs: T[]): T {
  const failedRun = runs.find((run) => run.code !== 0);
  if (failedRun !== undefined) {
    return failedRun;
  }
  const sorted = [...runs].sort((a, b) => a.wallMs - b.wallMs);
  const median = sorted[Math.floor(sorted.length / 2)]!;
  return { ...median, wallsMs: runs.map((item) => item.wallMs), peakRssMb: Math.max(...runs.map((item) => item.peakRssMb)) };
}

async function measureConnector(platform: Platform, version: GeneratedVersion): Promise<NonNullable<CaseResult["connector"]>> {
  const stateDir = mkdtempSync(join(OUT, "state-"));
  try {
    // Debug level logs each push, which dates the phases; it is one line per bundle.
    const run = await measureOn(platform, [process.execPath, join(ROOT, "main.ts"), "--once"], connectorEnv(stateDir, platform, { CONNECTOR_LOG_LEVEL: "debug" }));
    const pushed = run.pushes.objects;
    const bundles = run.pushes.bundles;
    const lines = logLines(run.stderr);
    const sent = lines.find((line) => line.message === "Version sent and stored as the connector state");
    const versionMs = Number(sent?.attributes?.ms ?? Number.NaN);
    const at = (message: string) => Date.parse(lines.find((line) => line.message === message)?.timestamp ?? "");
    const firstPush = at("Pushing a bundle through the API");
    const downloadMs = firstPush - at("Processing version");
    const pushMs = at("Version sent and stored as the connector state") - firstPush;
    // Each bundle repeats the author identity and the marking definition.
    let problem: string | undefined;
    if (run.code !== 0) {
      problem = `exit code ${run.code}: ${run.stderr.split("\n").filter((line) => line.includes('"ERROR"')).slice(0, 2).join(" ")}`;
    } else if (pushed < version.objects) {
      problem = `${pushed} objects pushed, fewer than the ${version.objects} served`;
    }
    return { ...run, pushed, bundles, versionMs, downloadMs, pushMs, ok: problem === undefined, problem };
  } finally {
    rmSync(stateDir, { recursive: true, force: true });
  }
}

// Runs the naive pipeline against the platform process, with a connector
// seeded for its push.
async function measureNaive(platform: Platform): Promise<Measured> {
  const naiveConnector = randomUUID();
  await platform.command(`seed ${naiveConnector}`);
  return measureOn(platform, [
    process.execPath,
    join(import.meta.dir, "naive.ts"),
    platform.citalidUrl,
    platform.citalidUser,
    CITALID_PASSWORD,
    VERSION_ID,
    platform.graphqlUrl,
    OPENCTI_TOKEN,
    naiveConnector,
  ]);
}

function connectorEnv(stateDir: string, endpoints: Endpoints, extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: process.env.HOME ?? "/root",
    OPENCTI_URL: endpoints.openctiUrl,
    OPENCTI_TOKEN,
    CONNECTOR_ID: randomUUID(),
    CONNECTOR_STATE_FILE: join(stateDir, "state.json"),
    CONNECTOR_LOG_LEVEL: "info",
    CONNECTOR_QUEUE_PROTOCOL: "api",
    CITALID_CUSTOMER_SUB_DOMAIN_URL: endpoints.citalidUrl,
    CITALID_USER: endpoints.citalidUser,
    CITALID_PASSWORD,
    ...extra,
  };
}

/**
 * Starts a platform process (bench/platform.ts) serving the version file,
 * runs `run` against it, and stops it. Raises an Error when the process
 * exits before it listens.
 */
async function onPlatform<T>(path: string, run: (platform: Platform) => Promise<T>): Promise<T> {
  const proc = tracked(
    Bun.spawn([process.execPath, join(import.meta.dir, "platform.ts"), path, VERSION_ID, CITALID_PASSWORD, OPENCTI_TOKEN], {
      cwd: ROOT,
      stdin: "pipe",
      stdout: "pipe",
      stderr: "inherit",
    }),
  );
  const lines = readLines(proc.stdout);
  const nextLine = async (): Promise<string> => {
    const next = await lines.next();
    if (next.done) {
      throw new Error(`bench/platform.ts exited with code ${await proc.exited} before its reply`);
    }
    return next.value;
  };
  const endpoints = JSON.parse(await nextLine()) as Endpoints;
  const platform: Platform = {
    ...endpoints,
    async command(line) {
      proc.stdin.write(`${line}\n`);
      await proc.stdin.flush();
      return nextLine();
    },
    async close() {
      await proc.stdin.end();
      await proc.exited;
    },
  };
  try {
    return await run(platform);
  } finally {
    await platform.close();
  }
}

async function* readLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of stream) {
    pending += decoder.decode(chunk, { stream: true });
    let newline = pending.indexOf("\n");
    while (newline >= 0) {
      yield pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      newline = pending.indexOf("\n");
    }
  }
}

/** Runs `command` against the platform process and adds the platform's CPU time and the pushes it received. */
async function measureOn(platform: Platform, command: string[], env?: Record<string, string>): Promise<Measured> {
  const before = JSON.parse(await platform.command("report")) as PushTotals & { cpuMs: number };
  const run = await measure(command, env);
  const after = JSON.parse(await platform.command("report")) as PushTotals & { cpuMs: number };
  return {
    ...run,
    fakesCpuMs: after.cpuMs - before.cpuMs,
    pushes: { bundles: after.bundles - before.bundles, objects: after.objects - before.objects, bytes: after.bytes - before.bytes },
  };
}

/** Runs `command` to its end and returns its exit code, wall time, peak RSS and output. */
async function measure(
  command: string[],
  env: Record<string, string> = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root" },
): Promise<Omit<Measured, "fakesCpuMs" | "pushes">> {
  const useTime = existsSync(TIME);
  const timeFile = join(OUT, `time-${randomUUID()}.txt`);
  const argv = useTime ? [TIME, "-f", "%M", "-o", timeFile, ...command] : command;
  const started = performance.now();
  const proc = tracked(Bun.spawn(argv, { cwd: ROOT, env, stdout: "pipe", stderr: "pipe" }));

  let polledKb = 0;
  const poller = useTime
    ? undefined
    : setInterval(() => {
        polledKb = Math.max(polledKb, readStatusKb(proc.pid, "VmHWM") ?? 0);
      }, 20);
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  const wallMs = performance.now() - started;
  clearInterval(poller);

  let peakKb = polledKb;
  if (useTime) {
    // The last line; earlier ones are time's notes, such as a signal.
    const lines = readFileSync(timeFile, "utf8").trim().split("\n");
    peakKb = Number(lines.at(-1));
    rmSync(timeFile, { force: true });
  }
  return { code, wallMs, peakRssMb: peakKb / 1024, stdout, stderr };
}

function splitFigures(mode: "whole" | "spooled", path: string): SplitFigures {
  const run = Bun.spawnSync([process.execPath, join(import.meta.dir, "split.ts"), mode, path], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  if (run.exitCode !== 0) {
    throw new Error(`bench/split.ts ${mode} ${path} failed: ${run.stderr.toString()}`);
  }
  return JSON.parse(run.stdout.toString()) as SplitFigures;
}

/** Resident memory of an idle process, in MB: the total, then the anonymous and the file-backed parts. */
interface IdleMemory {
  rss: number;
  anonymous: number;
  file: number;
}

interface BinaryFigures {
  startupMs: number[];
  sourceStartupMs: number[];
  /** Median of REPEAT runs each, by total RSS, with the environment the systemd units set. */
  idleRssMb: { afterNothing: IdleMemory; afterFixtures: IdleMemory; afterLarge?: IdleMemory; afterLargeWithoutUnitEnvironment?: IdleMemory };
  /** Variables of the units' Environment= lines. */
  unitEnvironment: Record<string, string>;
}

/**
 * Returns the variables that a systemd unit sets with Environment= lines,
 * such as the allocator option, so that the binary is measured as the
 * units run it.
 */
function unitEnvironment(path: string): Record<string, string> {
  const environment: Record<string, string> = {};
  for (const line of readFileSync(path, "utf8").split("\n")) {
    const match = /^Environment=([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line.trim());
    if (match) {
      environment[match[1]!] = match[2]!;
    }
  }
  return environment;
}

async function measureBinary(fifty: CaseResult | undefined): Promise<BinaryFigures> {
  const build = Bun.spawnSync([process.execPath, "run", "build"], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  if (build.exitCode !== 0) {
    throw new Error(`bun run build failed: ${build.stderr.toString()}`);
  }

  const units = unitEnvironment(join(ROOT, "deploy", "citalid-connector.service"));
  citalid.setVersions([]);
  const startupMs: number[] = [];
  const sourceStartupMs: number[] = [];
  for (let round = 0; round < 7; round++) {
    startupMs.push(await timeToFirstRequest([BINARY, "--once"], units));
    sourceStartupMs.push(await timeToFirstRequest([process.execPath, join(ROOT, "main.ts"), "--once"], units));
  }

  citalid.setVersions([]);
  const afterNothing = await medianIdle(units);
  citalid.setVersions(fixtureCitalidVersions());
  const afterFixtures = await medianIdle(units);
  let afterLarge: IdleMemory | undefined;
  let afterLargeWithoutUnitEnvironment: IdleMemory | undefined;
  if (fifty?.version !== undefined) {
    const path = versionPath(fifty.case);
    generateVersion({ path, targetBytes: fifty.case.megabytes * 1_000_000 });
    citalid.setVersions([{ id: VERSION_ID, bodyFile: path }]);
    afterLarge = await medianIdle(units);
    afterLargeWithoutUnitEnvironment = await medianIdle({});
    if (!flags.keep) {
      rmSync(path, { force: true });
    }
  }
  return { startupMs, sourceStartupMs, idleRssMb: { afterNothing, afterFixtures, afterLarge, afterLargeWithoutUnitEnvironment }, unitEnvironment: units };
}

async function medianIdle(environment: Record<string, string>): Promise<IdleMemory> {
  const samples: IdleMemory[] = [];
  for (let round = 0; round < REPEAT; round++) {
    samples.push(await idleRss(environment));
  }
  return samples.sort((a, b) => a.rss - b.rss)[Math.floor(samples.length / 2)]!;
}

// Returns the milliseconds from spawning `command` to the first request the
// fake OpenCTI receives from it.
async function timeToFirstRequest(command: string[], environment: Record<string, string>): Promise<number> {
  const stateDir = mkdtempSync(join(OUT, "state-"));
  const seen = opencti.requests.length;
  const started = Date.now();
  const proc = tracked(Bun.spawn(command, { cwd: ROOT, env: connectorEnv(stateDir, local, environment), stdout: "ignore", stderr: "ignore" }));
  while (opencti.requests.length === seen && proc.exitCode === null) {
    await Bun.sleep(1);
  }
  const first = opencti.requests[seen];
  await proc.exited;
  rmSync(stateDir, { recursive: true, force: true });
  if (first === undefined) {
    throw new Error(`${command.join(" ")} exited with code ${proc.exitCode} before any request`);
  }
  return first.time - started;
}

// Runs the binary on a schedule with `environment` added, waits for the
// first run to end, and returns its resident memory 3 s later, in MB.
async function idleRss(environment: Record<string, string>): Promise<IdleMemory> {
  const stateDir = mkdtempSync(join(OUT, "state-"));
  const env = connectorEnv(stateDir, local, { ...environment, CONNECTOR_DURATION_PERIOD: "PT1H" });
  const proc = tracked(Bun.spawn([BINARY], { cwd: ROOT, env, stdout: "ignore", stderr: "pipe" }));
  try {
    // stderr is read to its end, so that the binary's later log lines never meet a closed pipe.
    let text = "";
    let idle!: () => void;
    const scheduled = new Promise<void>((resolve) => (idle = resolve));
    const drained = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of proc.stderr) {
        text += decoder.decode(chunk, { stream: true });
        if (text.includes("Schedule next run of connector")) {
          idle();
        }
      }
      idle();
    })();
    await scheduled;
    await Bun.sleep(3000);
    const kb = readStatusKb(proc.pid, "VmRSS");
    if (kb === undefined) {
      throw new Error(`the binary exited before it was idle: ${text.slice(-500)}`);
    }
    return { rss: kb / 1024, anonymous: (readStatusKb(proc.pid, "RssAnon") ?? Number.NaN) / 1024, file: (readStatusKb(proc.pid, "RssFile") ?? Number.NaN) / 1024 };
  } finally {
    proc.kill("SIGTERM");
    await proc.exited;
    rmSync(stateDir, { recursive: true, force: true });
  }
}

function readStatusKb(pid: number, field: string): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const match = new RegExp(`${field}:\\s+(\\d+) kB`).exec(status);
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

function logLines(text: string): { timestamp?: string; message: string; attributes?: Record<string, unknown> }[] {
  const lines: { timestamp?: string; message: string; attributes?: Record<string, unknown> }[] = [];
  for (const line of text.split("\n")) {
    const start = line.indexOf("{");
    if (start < 0) {
      continue;
    }
    try {
      lines.push(JSON.parse(line.slice(start)));
    } catch {
      // Not a JSON log line.
    }
  }
  return lines;
}

// Returns the wall time of a measurement, with the range over its runs.
function wall(measured: Measured | undefined): string {
  if (measured === undefined) {
    return "–";
  }
  if (measured.code !== 0) {
    return `failed: ${failure(measured)}`;
  }
  const walls = measured.wallsMs;
  if (walls === undefined || walls.length < 2) {
    return seconds(measured.wallMs);
  }
  return `${seconds(measured.wallMs)} (${seconds(Math.min(...walls))}–${seconds(Math.max(...walls))})`;
}

// Returns the error a failed process printed, such as "RangeError: Out of memory".
function failure(measured: Measured): string {
  const line = measured.stderr.split("\n").find((candidate) => /\b[A-Z]\w*Error\b/.test(candidate));
  return line?.trim().slice(0, 120) ?? `exit code ${measured.code}`;
}

function idle(memory: IdleMemory | undefined): string {
  if (memory === undefined) {
    return "–";
  }
  return `${megabytes(memory.rss)} MB (anonymous ${megabytes(memory.anonymous)} MB, file-backed ${megabytes(memory.file)} MB)`;
}

function seconds(ms: number | undefined): string {
  return ms === undefined || Number.isNaN(ms) ? "–" : (ms / 1000).toFixed(2);
}

function megabytes(mb: number | undefined): string {
  return mb === undefined || Number.isNaN(mb) ? "–" : mb.toFixed(0);
}

function ratio(a: number | undefined, b: number | undefined): string {
  return a === undefined || b === undefined || Number.isNaN(a) || Number.isNaN(b) || b === 0 ? "–" : (a / b).toFixed(2);
}

function printCase(result: CaseResult): void {
  if (result.skipped) {
    console.log(`${result.case.name}: skipped, ${result.skipped}`);
    return;
  }
  const connector = result.connector!;
  console.log(
    `${result.case.name}: ${result.version!.objects} objects, ${(result.version!.bytes / 1e6).toFixed(0)} MB; ` +
      `connector ${seconds(connector.wallMs)} s (download and scan ${seconds(connector.downloadMs)} s, pushes ${seconds(connector.pushMs)} s), ` +
      `${megabytes(connector.peakRssMb)} MB peak, ${connector.bundles} bundles${connector.ok ? "" : `, FAILED: ${connector.problem}`}; ` +
      `floor ${seconds(result.floor?.wallMs)} s; naive ${seconds(result.naive?.wallMs)} s, ${megabytes(result.naive?.peakRssMb)} MB peak${result.naive?.code === 0 ? "" : ", FAILED"}, ` +
      `${seconds(result.naiveWarm?.wallMs)} s against a warm platform; ` +
      `platform CPU: connector ${seconds(connector.fakesCpuMs)} s, naive ${seconds(result.naive?.fakesCpuMs)} s, naive warm ${seconds(result.naiveWarm?.fakesCpuMs)} s, floor ${seconds(result.floor?.fakesCpuMs)} s`,
  );
}


interface TargetRow {
  target: string;
  measured: string;
  verdict: string;
}

// Checks the measured figures against the connector's targets.
function targetRows(cases: CaseResult[], binary: BinaryFigures | undefined): TargetRow[] {
  const rows: TargetRow[] = [];
  const check = (target: string, value: number | undefined, limit: number | undefined, unit: string, inclusive: boolean) => {
    if (value === undefined || limit === undefined || Number.isNaN(value) || Number.isNaN(limit)) {
      rows.push({ target, measured: "not measured", verdict: "–" });
      return;
    }
    const met = inclusive ? value <= limit : value < limit;
    // One decimal for MB, so that a figure just over its limit does not read as equal to it.
    let decimals = 0;
    if (unit === "s") {
      decimals = 2;
    } else if (unit === "MB") {
      decimals = 1;
    }
    const formatted = (figure: number) => figure.toFixed(decimals);
    rows.push({
      target,
      measured: `${formatted(value)} ${unit} (limit ${formatted(limit)} ${unit})`,
      verdict: met ? "met" : `missed by ${formatted(value - limit)} ${unit}`,
    });
  };
  const two = cases.find((result) => result.case.megabytes === 200 && !result.case.withoutAuthor && !result.skipped);
  const eight = cases.find((result) => result.case.megabytes === 800 && !result.skipped);
  check("200 MB version: peak RSS at most 200 MB", two?.connector?.peakRssMb, 200, "MB", true);
  const naiveMs = two?.naive?.code === 0 ? two.naive.wallMs : undefined;
  const warmMs = two?.naiveWarm?.code === 0 ? two.naiveWarm.wallMs : undefined;
  const connectorSeconds = two ? two.connector!.wallMs / 1000 : undefined;
  check("200 MB version: wall time at most 0.35 × the naive pipeline's", connectorSeconds, naiveMs === undefined ? undefined : (0.35 * naiveMs) / 1000, "s", true);
  check("the same, against the naive pipeline on a warm platform", connectorSeconds, warmMs === undefined ? undefined : (0.35 * warmMs) / 1000, "s", true);
  check("800 MB version completes with peak RSS below 400 MB", eight?.connector?.ok ? eight.connector.peakRssMb : undefined, 400, "MB", false);
  if (binary) {
    const median = [...binary.startupMs].sort((a, b) => a - b)[Math.floor(binary.startupMs.length / 2)]!;
    check("compiled binary: idle RSS between runs at most 60 MB (after the 50 MB version)", binary.idleRssMb.afterLarge?.rss, 60, "MB", true);
    check("compiled binary: start-up to the first request under 100 ms (median)", median, 100, "ms", false);
  }
  return rows;
}

function writeResults(cases: CaseResult[], releases: { release: string; whole: SplitFigures; spooled: SplitFigures }[], binary: BinaryFigures | undefined): void {
  const lines: string[] = [];
  const push = (...text: string[]) => lines.push(...text);
  const cpu = cpus();
  push(
    `Measured ${new Date().toISOString().slice(0, 10)} with \`bun run bench\` on ${cpu.length} cores (${cpu[0]?.model.trim() ?? "unknown CPU"}), ` +
      `${(totalmem() / 2 ** 30).toFixed(0)} GiB of memory, Bun ${Bun.version}, Linux. Peak RSS from ${existsSync(TIME) ? "`/usr/bin/time -f %M`" : "/proc/<pid>/status VmHWM"}. ` +
      `Each pipeline ran ${REPEAT} time(s) per version: wall times are medians with the range in brackets, peak RSS the highest of the runs. ` +
      `Load average (1 min) ${loadAtStart.toFixed(2)} at the start and ${loadavg()[0]!.toFixed(2)} at the end, as other processes shared the machine.`,
    "",
    "### Import of one version (api protocol, `CONNECTOR_PUSH_MAX_MB=10`)",
    "",
    "| version | objects | connector wall s | connector peak RSS MB | objects/s | MB/s | floor wall s | naive wall s | naive wall s, warm platform | naive peak RSS MB | wall ÷ floor | wall ÷ naive | wall ÷ naive, warm platform | RSS ÷ floor | RSS ÷ naive |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  );
  for (const result of cases) {
    if (result.skipped) {
      push(`| ${result.case.name} | skipped: ${result.skipped} |||||||||||||| |`);
      continue;
    }
    const connector = result.connector!;
    const wallSeconds = connector.wallMs / 1000;
    const status = connector.ok ? "" : ` (failed: ${connector.problem})`;
    const naiveOk = result.naive?.code === 0;
    const warmOk = result.naiveWarm?.code === 0;
    push(
      `| ${result.case.name}${status} | ${result.version!.objects} | ${wall(connector)} | ${megabytes(connector.peakRssMb)} | ` +
        `${Math.round(result.version!.objects / wallSeconds)} | ${(result.version!.bytes / 1e6 / wallSeconds).toFixed(0)} | ` +
        `${wall(result.floor)} | ${wall(result.naive)} | ${wall(result.naiveWarm)} | ${megabytes(result.naive?.peakRssMb)} | ` +
        `${ratio(connector.wallMs, result.floor?.wallMs)} | ${naiveOk ? ratio(connector.wallMs, result.naive?.wallMs) : "–"} | ` +
        `${warmOk ? ratio(connector.wallMs, result.naiveWarm?.wallMs) : "–"} | ` +
        `${ratio(connector.peakRssMb, result.floor?.peakRssMb)} | ${naiveOk ? ratio(connector.peakRssMb, result.naive?.peakRssMb) : "–"} |`,
    );
  }
  push(
    "",
    "Details: the connector's time for the version and its two phases are from its log lines (debug level); the platform's CPU is the CPU time of the platform process (both fakes) during the run shown.",
    "",
    "| version | bytes | bundles pushed | connector's time for the version s | of which download and scan s | of which pushes s | platform CPU, connector run s | platform CPU, naive run s | platform CPU, naive run, warm platform s | floor: download s | floor: upload s | floor peak RSS MB |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
  );
  for (const result of cases.filter((candidate) => !candidate.skipped)) {
    push(
      `| ${result.case.name} | ${result.version!.bytes} | ${result.connector!.bundles} | ${seconds(result.connector!.versionMs)} | ` +
        `${seconds(result.connector!.downloadMs)} | ${seconds(result.connector!.pushMs)} | ` +
        `${seconds(result.connector!.fakesCpuMs)} | ${seconds(result.naive?.fakesCpuMs)} | ${seconds(result.naiveWarm?.fakesCpuMs)} | ` +
        `${seconds(result.floor?.downloadMs)} | ${seconds(result.floor?.uploadMs)} | ${megabytes(result.floor?.peakRssMb)} |`,
    );
  }
  push("", "### Targets", "", "| target | measured | verdict |", "|---|---|---|");
  for (const row of targetRows(cases, binary)) {
    push(`| ${row.target} | ${row.measured} | ${row.verdict} |`);
  }

  push(
    "",
    "### The amqp splitter alone",
    "",
    "`whole` parses the version and splits its objects; `spooled` scans the file, splits the light objects built from the index, then reads each message's object back from the file to serialize it (render). Read is the time from the file to the splitter's input.",
    "",
    "| version | objects | messages | form | read s | split s | objects/s | render s | peak RSS MB |",
    "|---|---|---|---|---|---|---|---|---|",
  );
  const splitRows: { name: string; figures: { whole: SplitFigures; spooled: SplitFigures } }[] = [
    ...releases.map((release) => ({ name: release.release, figures: release })),
    ...cases.filter((result) => result.split).map((result) => ({ name: result.case.name, figures: result.split! })),
  ];
  for (const row of splitRows) {
    for (const form of ["whole", "spooled"] as const) {
      const figures = row.figures[form];
      push(
        `| ${row.name} | ${figures.objects} | ${figures.messages} | ${form} | ${seconds(figures.loadMs + (figures.inputMs ?? 0))} | ${seconds(figures.splitMs)} | ${Math.round(figures.objectsPerSecond)} | ${seconds(figures.renderMs)} | ${megabytes(figures.peakRssMb)} |`,
      );
    }
  }

  if (binary) {
    const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
    push(
      "",
      "### The compiled binary",
      "",
      `Measured with the environment that the systemd units set: ${Object.entries(binary.unitEnvironment).map(([name, value]) => `\`${name}=${value}\``).join(", ") || "none"}, except in the last row.`,
      "",
      "| figure | value |",
      "|---|---|",
      `| start-up to the first request, binary, median of ${binary.startupMs.length} (min–max) | ${median(binary.startupMs)} ms (${Math.min(...binary.startupMs)}–${Math.max(...binary.startupMs)}) |`,
      `| the same for \`bun main.ts\` | ${median(binary.sourceStartupMs)} ms (${Math.min(...binary.sourceStartupMs)}–${Math.max(...binary.sourceStartupMs)}) |`,
      `| idle RSS between runs, after a run with nothing to import | ${idle(binary.idleRssMb.afterNothing)} |`,
      `| idle RSS between runs, after importing the four ICS releases | ${idle(binary.idleRssMb.afterFixtures)} |`,
      `| idle RSS between runs, after importing the 50 MB version | ${idle(binary.idleRssMb.afterLarge)} |`,
      `| the same without the units' environment | ${idle(binary.idleRssMb.afterLargeWithoutUnitEnvironment)} |`,
    );
  }

  const generated = lines.join("\n");
  const start = "<!-- bench:start -->";
  const end = "<!-- bench:end -->";
  const previous = existsSync(RESULTS) ? readFileSync(RESULTS, "utf8") : `# Benchmark results\n\n${start}\n${end}\n`;
  const from = previous.indexOf(start);
  const to = previous.indexOf(end);
  const text = from >= 0 && to > from ? previous.slice(0, from + start.length) + "\n" + generated + "\n" + previous.slice(to) : `${previous}\n${start}\n${generated}\n${end}\n`;
  writeFileSync(RESULTS, text);
  writeFileSync(join(OUT, "results.json"), JSON.stringify({ cases, releases, binary }, null, 2));
}
