/**
 * Start-up with a state file or a lock file that the connector's user
 * cannot read or write, such as one left by a run under sudo, end to end.
 * The real connector runs as another user against the fakes, because root
 * passes every permission check.
 */
import { afterEach, beforeEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { chmodSync, chownSync, readFileSync, writeFileSync } from "node:fs";
import { runConnectorOnce } from "./helpers/connector.ts";
import { OTHER_UID, asOtherUser, otherUserUnavailable, warnIfOtherUserUnavailable } from "./helpers/other-user.ts";
import { type Scenario, smallVersions, startScenario } from "./helpers/scenario.ts";

setDefaultTimeout(60_000);
warnIfOtherUserUnavailable("state-access.test.ts");

const IDS = ["20250101", "20250105"];
const ROOT_STATE = '{"last_loaded_bundle_id":"20250101"}\n';

let scenario: Scenario;

beforeEach(async () => {
  scenario = await startScenario();
  scenario.citalid.setVersions(smallVersions(IDS));
});

afterEach(async () => {
  await scenario.stop();
});

/** Runs `--once` as the other user, in a state folder that this user owns. */
function runAsOtherUser() {
  chownSync(scenario.stateDir, OTHER_UID, OTHER_UID);
  return runConnectorOnce(scenario.env(), ["--once"], { command: asOtherUser(), cwd: scenario.stateDir });
}

describe.skipIf(otherUserUnavailable !== undefined)("start-up as another user", () => {
  test("imports with its own files", async () => {
    const run = await runAsOtherUser();

    expect(run.code).toBe(0);
    expect(scenario.fileState()?.last_loaded_bundle_id).toBe(IDS[1]);
  });

  test("state file of root exits 2", async () => {
    writeFileSync(scenario.statePath, ROOT_STATE, { mode: 0o600 });

    const run = await runAsOtherUser();

    expect(run.code).toBe(2);
    const errors = run.logs().filter((line) => line.level === "ERROR");
    expect(errors).toHaveLength(1);
    expect(errors[0]!.message).toBe(
      `State file ${scenario.statePath} belongs to uid 0 with mode 0600, so this user (uid ${OTHER_UID}) cannot read and write it: ` +
        `run "chown ${OTHER_UID} ${scenario.statePath}" and "chmod 600 ${scenario.statePath}" as root to give it to the user the connector runs as, ` +
        "or set CONNECTOR_STATE_FILE to another path",
    );
    expect(errors[0]!.attributes?.stack).toBeUndefined();
    expect(scenario.citalid.requests).toEqual([]);
    expect(scenario.opencti.requests).toEqual([]);
    expect(readFileSync(scenario.statePath, "utf8")).toBe(ROOT_STATE);
  });

  test("lock file of root exits 2", async () => {
    const lock = `${scenario.statePath}.lock`;
    writeFileSync(lock, "999999999", { mode: 0o600 });

    const run = await runAsOtherUser();

    expect(run.code).toBe(2);
    const errors = run.logs().filter((line) => line.level === "ERROR");
    expect(errors).toHaveLength(1);
    expect(errors[0]!.message).toContain(`State file lock ${lock} belongs to uid 0 with mode 0600`);
    expect(errors[0]!.message).toContain(`chown ${OTHER_UID} ${lock}`);
    expect(scenario.opencti.requests).toEqual([]);
  });
});

describe.skipIf(otherUserUnavailable !== undefined)("stop as another user", () => {
  // A state file of root that anyone may write passes start-up, but only
  // its owner may set its time when the connector stops.
  test("state file of root keeps the run's error", async () => {
    writeFileSync(scenario.statePath, ROOT_STATE);
    chmodSync(scenario.statePath, 0o666);
    chownSync(scenario.stateDir, OTHER_UID, OTHER_UID);
    await scenario.opencti.stop();

    const run = await runConnectorOnce(scenario.env({ CONNECTOR_ONCE_STARTUP_TIMEOUT_MS: "200" }), ["--once"], {
      command: asOtherUser(),
      cwd: scenario.stateDir,
    });

    expect(run.code).toBe(1);
    const error = run.logs().find((line) => line.level === "ERROR");
    expect(error?.message).toContain("OpenCTI was not reachable");
    const warning = run.logs().find((line) => line.level === "WARNING" && line.message.startsWith("State file"));
    expect(warning?.message).toContain(`so this user (uid ${OTHER_UID}) cannot update the time of it: run "chown ${OTHER_UID}`);
  });
});
