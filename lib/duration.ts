/**
 * ISO 8601 durations (`PT24H`, `P1D`, `P1DT2H`) as used by
 * `CONNECTOR_DURATION_PERIOD`, converted to and from milliseconds.
 *
 * Calendar units have fixed lengths, as in pydantic 2, whose `timedelta`
 * parsing comes from speedate (`src/duration.rs`): a week is 7 days, a month
 * 30 days and a year 365 days. Only the last component may have a fraction.
 */

const MS_PER_SECOND = 1000;
const MS_PER_MINUTE = 60 * MS_PER_SECOND;
const MS_PER_HOUR = 60 * MS_PER_MINUTE;
const MS_PER_DAY = 24 * MS_PER_HOUR;

const EXAMPLES = "PT24H (24 hours), P1D (1 day), PT30M (30 minutes) or PT0S (run once)";

// P[nY][nM][nW][nD][T[nH][nM][nS]], each n a decimal number such as 1 or 1.5.
const AMOUNT = String.raw`(\d+(?:\.\d+)?)`;
const ISO_DURATION = new RegExp(
  `^P(?:${AMOUNT}Y)?(?:${AMOUNT}M)?(?:${AMOUNT}W)?(?:${AMOUNT}D)?` +
    `(?:T(?:${AMOUNT}H)?(?:${AMOUNT}M)?(?:${AMOUNT}S)?)?$`,
);

// Milliseconds per unit, in the order of the capture groups of ISO_DURATION.
const UNIT_MS = [
  365 * MS_PER_DAY,
  30 * MS_PER_DAY,
  7 * MS_PER_DAY,
  MS_PER_DAY,
  MS_PER_HOUR,
  MS_PER_MINUTE,
  MS_PER_SECOND,
];

const BARE_NUMBER = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$/;

/** Error raised by {@linkcode parseDuration} for text that is not a valid duration. */
export class DurationError extends Error {
  /** The rejected text, as given. */
  readonly value: string;
  /** Explanation of the problem and of the fix, without the value. */
  readonly reason: string;

  constructor(value: string, reason: string) {
    super(`${JSON.stringify(value)} is not a valid duration: ${reason}`);
    this.name = "DurationError";
    this.value = value;
    this.reason = reason;
  }
}

/**
 * Parses an ISO 8601 duration such as `PT24H`, `P1D`, `P1DT2H` or `PT1.5H`
 * and returns it in milliseconds, rounded to the nearest millisecond. The
 * text `"0"` is accepted as 0, as pycti's `schedule_iso` accepts it. Letters
 * may be in any case and surrounding whitespace is ignored.
 *
 * @throws {DurationError} for empty text, negative durations, bare numbers
 * other than 0 (which have no unit), a fraction before the last component,
 * a non-zero duration shorter than 1 ms, or anything else that is not an
 * ISO 8601 duration. The message names the text and shows valid examples.
 *
 * @example
 * ```ts
 * parseDuration("PT6H"); // 21600000
 * parseDuration("P1W"); // 604800000
 * ```
 */
export function parseDuration(text: string): number {
  const trimmed = text.trim();

  if (trimmed === "") {
    throw new DurationError(text, `the value is empty. Use ${EXAMPLES}`);
  }

  if (trimmed === "0") {
    return 0;
  }

  if (trimmed.startsWith("-")) {
    throw new DurationError(
      text,
      `negative durations are not allowed. Use ${EXAMPLES}`,
    );
  }

  if (BARE_NUMBER.test(trimmed)) {
    const number = trimmed.replace(/^\+/, "");
    throw new DurationError(
      text,
      `a bare number has no unit. Write PT${number}H for ${number} hours or PT${number}S for ${number} seconds`,
    );
  }

  const upper = trimmed.toUpperCase();
  const match = ISO_DURATION.exec(upper);
  const components = match ? match.slice(1) : [];
  const isEmpty = components.every((value) => value === undefined);

  // "P1DT" matches the pattern, but ISO 8601 requires a component after T.
  const hasTimeComponent = components.slice(4).some((value) => value !== undefined);
  const hasDanglingT = upper.includes("T") && !hasTimeComponent;

  if (!upper.includes("T") && /[HS]/.test(upper)) {
    throw new DurationError(
      text,
      "hours, minutes and seconds must follow a T, as in PT6H or P1DT2H",
    );
  }

  if (!match || isEmpty || hasDanglingT) {
    throw new DurationError(text, `use an ISO 8601 duration such as ${EXAMPLES}`);
  }

  const present = components.filter((value) => value !== undefined);
  if (present.slice(0, -1).some((value) => value.includes("."))) {
    throw new DurationError(
      text,
      "only the last component may have a fraction, as in PT1.5H or PT1H30M",
    );
  }

  let milliseconds = 0;
  for (const [index, value] of components.entries()) {
    if (value !== undefined) {
      milliseconds += Number(value) * UNIT_MS[index]!;
    }
  }

  const rounded = Math.round(milliseconds);
  if (!Number.isSafeInteger(rounded)) {
    throw new DurationError(
      text,
      `the duration is too long. Use a shorter one such as ${EXAMPLES}`,
    );
  }
  if (rounded === 0 && milliseconds > 0) {
    throw new DurationError(
      text,
      "the duration is shorter than 1 millisecond. Use PT0S to run once or a longer duration such as PT30M",
    );
  }
  return rounded;
}

/**
 * Formats a duration in milliseconds as ISO 8601 for log lines: days, hours,
 * minutes and seconds, with milliseconds as a decimal fraction of seconds.
 * Weeks, months and years are written as days, so `P1W` comes back as `P7D`.
 *
 * @throws {RangeError} when `milliseconds` is negative, not finite or not an
 * integer.
 *
 * @example
 * ```ts
 * formatDuration(21600000); // "PT6H"
 * formatDuration(93600000); // "P1DT2H"
 * formatDuration(0); // "PT0S"
 * ```
 */
export function formatDuration(milliseconds: number): string {
  if (!Number.isSafeInteger(milliseconds) || milliseconds < 0) {
    throw new RangeError(
      `Cannot format ${milliseconds} as a duration: use a whole number of milliseconds, 0 or more`,
    );
  }

  if (milliseconds === 0) {
    return "PT0S";
  }

  const days = Math.floor(milliseconds / MS_PER_DAY);
  let rest = milliseconds % MS_PER_DAY;
  const hours = Math.floor(rest / MS_PER_HOUR);
  rest %= MS_PER_HOUR;
  const minutes = Math.floor(rest / MS_PER_MINUTE);
  rest %= MS_PER_MINUTE;
  const seconds = rest / MS_PER_SECOND;

  let text = "P";
  if (days > 0) {
    text += `${days}D`;
  }

  let time = "";
  if (hours > 0) {
    time += `${hours}H`;
  }
  if (minutes > 0) {
    time += `${minutes}M`;
  }
  if (seconds > 0) {
    time += `${seconds}S`;
  }
  if (time !== "") {
    text += `T${time}`;
  }
  return text;
}
