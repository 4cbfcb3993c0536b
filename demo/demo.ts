/**
 * Demo: starts a fake Citalid API serving four MITRE ATT&CK for ICS releases
 * as Citalid versions and a fake OpenCTI platform, both on 127.0.0.1, runs
 * the connector once, prints what the platform received, then runs it again
 * to show that nothing is imported twice.
 *
 * Usage: bun demo/demo.ts [--binary PATH]   (default: bun main.ts)
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { startFakeCitalid } from "../tests/fakes/citalid.ts";
import { startFakeOpenCTI } from "../tests/fakes/opencti.ts";
import { FIXTURE_VERSIONS, fixtureCitalidVersions, parseFixtureBundle } from "../tests/fixtures/versions.ts";

const CONNECTOR_ID = "6f1c2b8e-3a4d-4e5f-9a6b-7c8d9e0f1a2b";
const root = join(import.meta.dir, "..");
const { values } = parseArgs({ args: process.argv.slice(2), options: { binary: { type: "string" } } });
// The connector runs in a temporary folder, so a relative path is resolved here.
const command = values.binary ? [resolve(values.binary)] : [process.execPath, join(root, "main.ts")];

const citalid = await startFakeCitalid({ versions: fixtureCitalidVersions() });
const opencti = await startFakeOpenCTI();
const stateDir = mkdtempSync(join(tmpdir(), "citalid-demo-"));

const env = {
  PATH: process.env.PATH ?? "/usr/bin:/bin",
  OPENCTI_URL: opencti.url,
  OPENCTI_TOKEN: opencti.token,
  OPENCTI_JSON_LOGGING: "false",
  CONNECTOR_ID,
  CONNECTOR_STATE_FILE: join(stateDir, "state.json"),
  CITALID_CUSTOMER_SUB_DOMAIN_URL: citalid.url,
  CITALID_USER: citalid.user,
  CITALID_PASSWORD: citalid.password,
};

let failures = 0;
function check(ok: boolean, what: string): void {
  if (!ok) {
    failures++;
    console.log(`  FAILED: ${what}`);
  }
}

async function runOnce(label: string): Promise<{ code: number; output: string; ms: number }> {
  console.log(`\n== ${label}: ${command.join(" ")} --once`);
  const started = performance.now();
  const proc = Bun.spawn([...command, "--once"], { cwd: stateDir, env, stdout: "pipe", stderr: "pipe" });
  const [stderr] = await Promise.all([new Response(proc.stderr).text(), new Response(proc.stdout).text()]);
  const code = await proc.exited;
  const ms = Math.round(performance.now() - started);
  for (const line of stderr.trim().split("\n")) {
    if (/ (INFO|WARNING|ERROR) /.test(line)) {
      console.log("  " + line.replace(/^\S+ /, ""));
    }
  }
  return { code, output: stderr, ms };
}

try {
  const first = await runOnce("First run");
  const pushed = opencti.pushes;
  const objects = pushed.reduce((sum, push) => sum + push.bundle.objects.length, 0);
  const bytes = pushed.reduce((sum, push) => sum + push.bytes, 0);
  const state = JSON.parse(readFileSync(join(stateDir, "state.json"), "utf8"));
  const work = opencti.works[0];

  console.log("\n== Report");
  console.log(`  versions imported:  ${FIXTURE_VERSIONS.filter((version) => (citalid.counts.downloads[version.id] ?? 0) > 0).length} of ${FIXTURE_VERSIONS.length} (${FIXTURE_VERSIONS.map((version) => version.id).join(", ")})`);
  console.log(`  bundles pushed:     ${pushed.length}`);
  console.log(`  objects pushed:     ${objects}`);
  console.log(`  bytes pushed:       ${bytes}`);
  console.log(`  time:               ${first.ms} ms`);
  console.log(`  work:               ${work?.name} -> ${work?.status}`);
  console.log(`  final state:        ${JSON.stringify(state)}`);

  check(first.code === 0, `first run exits 0 (got ${first.code})`);
  check(work?.status === "complete", "the work is complete");
  check(state.last_loaded_bundle_id === FIXTURE_VERSIONS.at(-1)!.id, "the state is the newest version");
  for (const version of FIXTURE_VERSIONS) {
    const served = parseFixtureBundle(version.file).objects;
    const received = new Set(pushed.flatMap((push) => push.bundle.objects.map((object) => `${push.workId}|${object.id}`)));
    const missing = served.filter((object) => !received.has(`${work?.id}|${object.id}`));
    check(missing.length === 0, `every object of version ${version.id} reached the platform (${missing.length} missing)`);
  }

  const second = await runOnce("Second run");
  check(second.code === 0, `second run exits 0 (got ${second.code})`);
  check(second.output.includes("already loaded"), "the second run reports that the dataset is already loaded");
  check(opencti.works.length === 1, "the second run creates no work");

  console.log(failures === 0 ? "\nDemo passed." : `\nDemo failed: ${failures} check(s).`);
} finally {
  await citalid.stop();
  await opencti.stop();
  rmSync(stateDir, { recursive: true, force: true });
}
process.exit(failures === 0 ? 0 : 1);
