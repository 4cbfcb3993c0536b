import { afterEach, describe, expect, test } from "bun:test";

import { createLogger, silentLogger } from "../lib/log.ts";
import { Scheduler, type SchedulerOptions } from "../lib/schedule.ts";

// Long enough that no scheduled run fires during a test that uses it.
const LONG_PERIOD_MS = 60_000;
const SHORT_PERIOD_MS = 300;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` every 10 ms until it is true. The timeout only catches a scheduler that never gets there. */
async function waitFor(description: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting until ${description}`);
    }
    await sleep(10);
  }
}

/** A promise with its resolve function, to hold a run open until the test releases it. */
function gate() {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

const schedulers: Scheduler[] = [];

afterEach(async () => {
  for (const scheduler of schedulers.splice(0)) {
    await scheduler.stop();
  }
});

function createScheduler(options: Partial<SchedulerOptions> & Pick<SchedulerOptions, "periodMs">): Scheduler {
  const scheduler = new Scheduler({
    run: async () => true,
    isBuffering: async () => false,
    logger: silentLogger,
    ...options,
  });
  schedulers.push(scheduler);
  return scheduler;
}

describe("Scheduler", () => {
  const invalidPeriods = [0, -1, Number.NaN];

  for (const periodMs of invalidPeriods) {
    test(`rejects period ${periodMs}`, () => {
      expect(() => createScheduler({ periodMs })).toThrow(RangeError);
    });
  }

  test("starts first run at once", () => {
    let runs = 0;
    const scheduler = createScheduler({
      periodMs: LONG_PERIOD_MS,
      run: async () => {
        runs++;
        return true;
      },
    });

    scheduler.start();

    expect(runs).toBe(1);
    expect(scheduler.running).toBe(true);
  });

  test("skips queue check before first run", () => {
    let runs = 0;
    let checks = 0;
    const scheduler = createScheduler({
      periodMs: LONG_PERIOD_MS,
      run: async () => {
        runs++;
        return true;
      },
      isBuffering: async () => {
        checks++;
        return true;
      },
    });

    scheduler.start();

    expect(runs).toBe(1);
    expect(checks).toBe(0);
  });

  test("runs once per period", async () => {
    let runs = 0;
    let checks = 0;
    const scheduler = createScheduler({
      periodMs: SHORT_PERIOD_MS,
      run: async () => {
        runs++;
        return true;
      },
      isBuffering: async () => {
        checks++;
        return false;
      },
    });

    scheduler.start();
    await waitFor("three runs started", () => runs >= 3);

    // Every scheduled run after the first checks the queue once.
    expect(checks).toBe(runs - 1);
  });

  test("never overlaps long runs", async () => {
    let runs = 0;
    let active = 0;
    let maxActive = 0;
    const scheduler = createScheduler({
      periodMs: SHORT_PERIOD_MS,
      run: async () => {
        runs++;
        active++;
        maxActive = Math.max(maxActive, active);
        await sleep(SHORT_PERIOD_MS * 2);
        active--;
        return true;
      },
    });

    scheduler.start();
    await waitFor("three runs started", () => runs >= 3);

    expect(maxActive).toBe(1);
  });

  test("postpones run while buffering", async () => {
    let runs = 0;
    const checks: { runs: number; buffering: boolean }[] = [];
    const lines: string[] = [];
    const scheduler: Scheduler = createScheduler({
      periodMs: SHORT_PERIOD_MS,
      bufferingRecheckMs: 100,
      logger: createLogger({ journald: false, write: (line) => lines.push(line) }),
      run: async () => {
        runs++;
        return true;
      },
      isBuffering: async () => {
        checks.push({ runs, buffering: scheduler.buffering });
        return checks.length <= 3;
      },
    });

    scheduler.start();
    await waitFor("second run started", () => runs >= 2);

    expect(checks).toEqual([
      { runs: 1, buffering: false },
      { runs: 1, buffering: true },
      { runs: 1, buffering: true },
      { runs: 1, buffering: true },
    ]);
    expect(scheduler.buffering).toBe(false);
    const waiting = lines.filter((line) => line.includes("queue threshold"));
    expect(waiting).toHaveLength(1);
  });

  test("reports buffering while postponed", async () => {
    let checks = 0;
    const scheduler = createScheduler({
      periodMs: SHORT_PERIOD_MS,
      bufferingRecheckMs: 100,
      isBuffering: async () => {
        checks++;
        return true;
      },
    });

    scheduler.start();
    await waitFor("two queue checks", () => checks >= 2);

    expect(scheduler.buffering).toBe(true);
    expect(scheduler.nextRun).toBeInstanceOf(Date);
  });

  test("reruns after runNow during run", async () => {
    let runs = 0;
    const first = gate();
    const scheduler = createScheduler({
      periodMs: LONG_PERIOD_MS,
      run: async () => {
        runs++;
        if (runs === 1) {
          await first.promise;
        }
        return true;
      },
    });

    scheduler.start();
    scheduler.runNow();
    scheduler.runNow();

    expect(runs).toBe(1);
    first.open();
    await waitFor("second run started", () => runs >= 2);
    await waitFor("second run ended", () => !scheduler.running);
    // Two calls during one run ask for one more run, not two.
    await sleep(100);
    expect(runs).toBe(2);
  });

  test("runNow between runs starts one", async () => {
    let runs = 0;
    const scheduler = createScheduler({
      periodMs: LONG_PERIOD_MS,
      run: async () => {
        runs++;
        return true;
      },
    });
    scheduler.start();
    await waitFor("first run ended", () => !scheduler.running);

    scheduler.runNow();

    expect(runs).toBe(2);
  });

  test("stop waits for run under way", async () => {
    const release = gate();
    const scheduler = createScheduler({
      periodMs: LONG_PERIOD_MS,
      run: async () => {
        await release.promise;
        return true;
      },
    });
    scheduler.start();

    let stopped = false;
    const stopping = scheduler.stop().then(() => {
      stopped = true;
    });
    await sleep(50);

    expect(stopped).toBe(false);
    release.open();
    await stopping;
    expect(stopped).toBe(true);
    expect(scheduler.running).toBe(false);
  });

  test("starts no run after stop", async () => {
    let runs = 0;
    const release = gate();
    const scheduler = createScheduler({
      periodMs: SHORT_PERIOD_MS,
      run: async () => {
        runs++;
        await release.promise;
        return true;
      },
    });
    scheduler.start();

    const stopping = scheduler.stop();
    release.open();
    await stopping;
    scheduler.runNow();
    await sleep(SHORT_PERIOD_MS * 3);

    expect(runs).toBe(1);
    expect(scheduler.nextRun).toBeNull();
  });

  test("cancels scheduled run on stop", async () => {
    let runs = 0;
    const scheduler = createScheduler({
      periodMs: SHORT_PERIOD_MS,
      run: async () => {
        runs++;
        return true;
      },
    });
    scheduler.start();
    await waitFor("next run scheduled", () => scheduler.nextRun !== null);

    await scheduler.stop();
    await sleep(SHORT_PERIOD_MS * 3);

    expect(runs).toBe(1);
  });

  test("sets lastRun and nextRun", async () => {
    const release = gate();
    const scheduler = createScheduler({
      periodMs: LONG_PERIOD_MS,
      run: async () => {
        await release.promise;
        return true;
      },
    });

    expect(scheduler.lastRun).toBeNull();
    expect(scheduler.nextRun).toBeNull();

    scheduler.start();

    expect(scheduler.lastRun).toBeInstanceOf(Date);
    expect(scheduler.nextRun).toBeNull();

    release.open();
    await waitFor("first run ended", () => !scheduler.running);

    // A run shorter than the period leaves the next start one period after this one.
    expect(scheduler.nextRun!.getTime()).toBe(scheduler.lastRun!.getTime() + LONG_PERIOD_MS);
  });

  test("moves lastRun on each run", async () => {
    let runs = 0;
    const starts: (Date | null)[] = [];
    const scheduler: Scheduler = createScheduler({
      periodMs: SHORT_PERIOD_MS,
      run: async () => {
        runs++;
        starts.push(scheduler.lastRun);
        return true;
      },
    });

    scheduler.start();
    await waitFor("second run started", () => runs >= 2);

    expect(starts[1]!.getTime()).toBeGreaterThan(starts[0]!.getTime());
  });
});
