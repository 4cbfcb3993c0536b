/**
 * Suggestions for misspelt environment variable names, such as
 * `CONNECTOR_DURATION_PERIOD` for `CONNECTOR_DURATON_PERIOD`.
 *
 * Two names are close when they have the same prefix, which is the text up
 * to and including the first underscore, and the rests are equal or a few
 * edits apart. Before the comparison, the underscores are dropped and common
 * words are replaced by the ones this connector uses. The allowed edits grow
 * with the length of the known name, so that short names such as `MQ_PORT`
 * and `OPENCTI_URL` match only small slips. An unrelated variable of another
 * tool, such as `OPENCTI_BASE_URL` or `OPENCTI_ADMIN_EMAIL`, matches nothing.
 */

// Words that other tools use where this connector's names have a shorter
// one, so that MQ_PASSWORD gives MQ_PASS and CONNECTOR_SPOOL_DIRECTORY gives
// CONNECTOR_SPOOL_DIR.
const WORD_ALIASES = new Map([
  ["PASSWORD", "PASS"],
  ["PASSWD", "PASS"],
  ["USERNAME", "USER"],
  ["DIRECTORY", "DIR"],
  ["FOLDER", "DIR"],
  ["PATH", "FILE"],
]);

/**
 * Finds the known names that `name` is a likely misspelling of. Returns the
 * closest ones, several when they tie, in the order of `known`, or an empty
 * list when none is close. A name that is itself known gives an empty list.
 */
export function suggestNames(name: string, known: Iterable<string>): string[] {
  const prefix = prefixOf(name);
  const candidates = [...known].filter((candidate) => prefixOf(candidate) === prefix);
  if (prefix === undefined || candidates.includes(name)) {
    return [];
  }

  const typed = normalize(name.slice(prefix.length));
  let best: string[] = [];
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const meant = normalize(candidate.slice(prefix.length));
    const distance = editDistance(typed, meant);
    if (distance > allowedEdits(meant.length)) {
      continue;
    }

    if (distance < bestDistance) {
      best = [candidate];
      bestDistance = distance;
    } else if (distance === bestDistance) {
      best.push(candidate);
    }
  }
  return best;
}

/** Returns the text up to and including the first underscore, or undefined when there is none. */
function prefixOf(name: string): string | undefined {
  const underscore = name.indexOf("_");
  return underscore <= 0 ? undefined : name.slice(0, underscore + 1);
}

/** Replaces aliased words and drops the underscores, so `SPOOL_DIRECTORY` gives `SPOOLDIR`. */
function normalize(rest: string): string {
  return rest
    .split("_")
    .map((word) => WORD_ALIASES.get(word) ?? word)
    .join("");
}

/**
 * Returns the edits allowed between a typed name and a known one whose
 * normalized rest has `length` characters. Below 4 characters only the
 * underscores and aliased words may differ, up to 7 one edit is allowed,
 * and from 8 on two.
 */
function allowedEdits(length: number): number {
  if (length < 4) {
    return 0;
  }
  return length < 8 ? 1 : 2;
}

/**
 * Computes the optimal string alignment distance, which counts the
 * insertions, deletions, substitutions and swaps of two neighbouring
 * characters that turn `a` into `b`.
 */
function editDistance(a: string, b: string): number {
  // rows[i][j] is the distance between the first i characters of a and the first j of b.
  const rows: number[][] = [];
  for (let i = 0; i <= a.length; i++) {
    rows.push([i, ...Array<number>(b.length).fill(0)]);
  }
  for (let j = 0; j <= b.length; j++) {
    rows[0]![j] = j;
  }

  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let distance = Math.min(
        rows[i - 1]![j]! + 1,
        rows[i]![j - 1]! + 1,
        rows[i - 1]![j - 1]! + cost,
      );

      const swapped = i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1];
      if (swapped) {
        distance = Math.min(distance, rows[i - 2]![j - 2]! + 1);
      }
      rows[i]![j] = distance;
    }
  }
  return rows[a.length]![b.length]!;
}
