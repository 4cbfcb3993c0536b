/**
 * Shared setup of the fault, crash and field-report tests: a fake Citalid
 * and a fake OpenCTI per test, small generated bundles, and readers for the
 * state the connector left on the platform and in its state file.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { type FakeCitalid, type FakeCitalidOptions, type FakeCitalidVersion, startFakeCitalid } from "../fakes/citalid.ts";
import { type FakeOpenCTI, type FakeOpenCTIOptions, startFakeOpenCTI } from "../fakes/opencti.ts";
import { TEST_SECRETS, connectorEnv, tempDir } from "./connector.ts";

/** `CONNECTOR_ID` that {@linkcode connectorEnv} sets. */
export const CONNECTOR_ID = "0b4f5a2c-7d1e-4c3b-9a8f-1e2d3c4b5a69";

/**
 * STIX id of the Citalid author, computed here as OpenCTI does rather than
 * taken from lib/: uuid5 in OpenCTI's namespace over the canonical JSON of
 * the lower-cased name and identity class.
 */
export const AUTHOR_ID = (() => {
  const namespace = Buffer.from("00abedb4aa42466c9c01fed23315a9b7", "hex");
  const hash = createHash("sha1").update(namespace).update('{"identity_class":"organization","name":"citalid"}').digest();
  hash[6] = (hash[6]! & 0x0f) | 0x50;
  hash[8] = (hash[8]! & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString("hex");
  return `identity--${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
})();

/** A STIX object of a generated bundle. */
export interface TestObject {
  type: string;
  id: string;
  [property: string]: unknown;
}

/** Returns a STIX id of `type` derived from `seed`, the same on every call. */
export function stixId(type: string, seed: string): string {
  const hex = createHash("sha256").update(seed).digest("hex");
  return `${type}--${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-8${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}

/**
 * Builds a bundle of `count` attack patterns for a version, each with a
 * description of `padding` characters, so tests control the bundle size.
 */
export function smallBundle(versionId: string, count = 3, padding = 40): { type: "bundle"; id: string; objects: TestObject[] } {
  const objects: TestObject[] = [];
  for (let index = 0; index < count; index++) {
    objects.push({
      type: "attack-pattern",
      spec_version: "2.1",
      id: stixId("attack-pattern", `${versionId}/${index}`),
      created: "2025-01-01T00:00:00.000Z",
      modified: "2025-01-01T00:00:00.000Z",
      name: `Technique ${index} of ${versionId}`,
      description: "x".repeat(padding),
    });
  }
  return { type: "bundle", id: stixId("bundle", versionId), objects };
}

/** Builds fake Citalid versions with small bundles, one per id. */
export function smallVersions(ids: readonly string[], count = 3): FakeCitalidVersion[] {
  return ids.map((id) => ({ id, body: smallBundle(id, count) }));
}

/** Both fakes and a state folder for one test. */
export interface Scenario {
  citalid: FakeCitalid;
  opencti: FakeOpenCTI;
  stateDir: string;
  /** Path of the connector's state file. */
  statePath: string;
  /** Environment for a connector run against both fakes, with `extra` on top. */
  env(extra?: Record<string, string>): Record<string, string>;
  /** Parsed state that the platform stores for the connector, or null. */
  platformState(): Record<string, unknown> | null;
  /** Parsed state file, or null when it does not exist. Throws on invalid JSON. */
  fileState(): Record<string, unknown> | null;
  /** Object ids pushed to the platform, over every push so far. */
  pushedIds(): Set<string>;
  /** Stops both fakes. */
  stop(): Promise<void>;
}

/** Starts both fakes with the test secrets. */
export async function startScenario(
  options: { citalid?: FakeCitalidOptions; opencti?: FakeOpenCTIOptions } = {},
): Promise<Scenario> {
  const citalid = await startFakeCitalid({ password: TEST_SECRETS.citalidPassword, ...options.citalid });
  const opencti = await startFakeOpenCTI({ token: TEST_SECRETS.openctiToken, ...options.opencti });
  const stateDir = tempDir();
  const statePath = join(stateDir, "state.json");

  return {
    citalid,
    opencti,
    stateDir,
    statePath,
    env: (extra = {}) => connectorEnv(citalid, opencti, stateDir, extra),
    platformState() {
      const stored = opencti.connectors.get(CONNECTOR_ID)?.state ?? null;
      return stored === null ? null : JSON.parse(stored);
    },
    fileState() {
      if (!existsSync(statePath)) {
        return null;
      }
      return JSON.parse(readFileSync(statePath, "utf8"));
    },
    pushedIds() {
      return new Set(opencti.pushes.flatMap((push) => push.bundle.objects.map((object) => object.id)));
    },
    async stop() {
      await citalid.stop();
      await opencti.stop();
    },
  };
}

/** Seeds the platform with a stored state for the test connector. */
export function seedState(opencti: FakeOpenCTI, state: Record<string, unknown> | string | null): void {
  opencti.seedConnector({ id: CONNECTOR_ID, state: state === null || typeof state === "string" ? state : JSON.stringify(state) });
}

/** Polls `condition` every 10 ms; rejects after `timeoutMs` so that a hang fails the test. */
export async function waitFor(condition: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await Bun.sleep(10);
  }
}

/** Returns true once the process has exited. */
export function hasExited(proc: Bun.Subprocess): boolean {
  return proc.exitCode !== null || proc.signalCode !== null;
}
