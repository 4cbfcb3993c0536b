import type { Logger } from "./log.ts";

const DATE_PREFIX = /^(\d{4})(\d{2})(\d{2})/;

/** Returns true when the id starts with a real calendar date `YYYYMMDD`. */
export function hasDatePrefix(id: string): boolean {
  const match = DATE_PREFIX.exec(id);
  if (!match) {
    return false;
  }

  const [year, month, day] = [Number(match[1]), Number(match[2]), Number(match[3])];
  const date = new Date(Date.UTC(year, month - 1, day));
  return (
    date.getUTCFullYear() === year && date.getUTCMonth() === month - 1 && date.getUTCDate() === day
  );
}

/** Returns true when the id has a control character: U+0000 to U+001F, or DEL. */
export function hasControlCharacter(id: string): boolean {
  return CONTROL_CHARACTER.test(id);
}

const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/;

// Created on the first comparison of two ids of the same day, because an
// ICU collator stays resident in the idle process once created.
let collator: Intl.Collator | undefined;

/**
 * Compares two version ids: the `YYYYMMDD` date first, then the rest of the
 * id in natural order, so `20250105-2` sorts before `20250105-10`. Both ids
 * must have a date prefix.
 */
export function compareVersionIds(a: string, b: string): number {
  // Both prefixes are eight ASCII digits, so code-unit order is date order.
  const dateA = a.slice(0, 8);
  const dateB = b.slice(0, 8);
  if (dateA !== dateB) {
    return dateA < dateB ? -1 : 1;
  }

  collator ??= new Intl.Collator("en", { numeric: true, sensitivity: "variant" });
  const restOrder = collator.compare(a.slice(8), b.slice(8));
  if (restOrder !== 0) {
    return restOrder;
  }
  // Distinct ids that the collator ranks equal still need a fixed order.
  if (a < b) {
    return -1;
  }
  return a > b ? 1 : 0;
}

// Days after today (UTC) that a version id's date may be, in case Citalid
// dates its versions in a time zone ahead of UTC.
const FUTURE_TOLERANCE_DAYS = 1;

/** Returns the `YYYYMMDD` of `date` plus `days`, in UTC. */
function dayStamp(date: Date, days = 0): string {
  const shifted = new Date(date.getTime() + days * 86_400_000);
  return shifted.toISOString().slice(0, 10).replaceAll("-", "");
}

/** Returns true when the id's date is later than tomorrow, UTC, as seen at `today`. */
export function isDatedInFuture(id: string, today: Date): boolean {
  return id.slice(0, 8) > dayStamp(today, FUTURE_TOLERANCE_DAYS);
}

/**
 * Selects the versions to import: those after `lastLoaded` (all of them
 * when it is undefined or null), oldest first, without duplicates. Ids
 * without a valid date prefix, or with a control character, are skipped
 * with a warning naming them. So are ids dated after tomorrow (UTC) at
 * `today`: imported, such an id would become the state and hide every
 * version published before its date. It is imported once its date has
 * come. A `lastLoaded` dated after tomorrow gets a warning with the way to
 * reset it.
 */
export function selectNewVersions(
  ids: readonly string[],
  lastLoaded: string | null | undefined,
  logger: Logger,
  today: Date = new Date(),
): string[] {
  const valid = new Set<string>();
  for (const id of ids) {
    if (hasControlCharacter(id)) {
      // Ids are a date and a suffix, so a control character means a broken listing.
      logger.warn("Skipping a Citalid version whose id has a control character", {
        version_id: id,
      });
    } else if (!hasDatePrefix(id)) {
      logger.warn("Skipping a Citalid version whose id does not start with a YYYYMMDD date", {
        version_id: id,
      });
    } else if (isDatedInFuture(id, today)) {
      logger.warn("Skipping a Citalid version dated after tomorrow: it is imported once its date has come", {
        version_id: id,
        today: dayStamp(today),
      });
    } else {
      valid.add(id);
    }
  }

  if (typeof lastLoaded === "string" && hasDatePrefix(lastLoaded) && isDatedInFuture(lastLoaded, today)) {
    logger.warn(
      "The connector state is a version dated after tomorrow, so versions published before that date are not imported: " +
        "if it is a mistake, reset the connector state on the connector's page in the OpenCTI UI",
      { last_loaded_bundle_id: lastLoaded, today: dayStamp(today) },
    );
  }

  const sorted = [...valid].sort(compareVersionIds);
  if (lastLoaded === undefined || lastLoaded === null) {
    return sorted;
  }
  return sorted.filter((id) => compareVersionIds(id, lastLoaded) > 0);
}
