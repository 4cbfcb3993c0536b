import { parseArgs } from "node:util";
import { hasControlCharacter, hasDatePrefix } from "./versions.ts";

/** Parsed command line. */
export interface CommandLine {
  configPath?: string;
  once: boolean;
  check: boolean;
  /** Version id of `--set-state`, checked to start with a real `YYYYMMDD` date. */
  setState?: string;
  version: boolean;
  help: boolean;
}

/** An invalid command line; the program prints the message and exits with code 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** The `--help` text: each option with its default and the variables it mirrors. */
export const HELP = `Usage: citalid-connector [options]

Imports Citalid dataset versions into OpenCTI. Settings come from config.yml
and from environment variables, which win (see config.yml.sample).

Options:
  --config PATH  Read settings from PATH. Default: ./config.yml, else
                 config.yml beside the executable; neither is required.
  --once         Run one import, push the final state and exit: 0 on success,
                 1 on failure. Same as CONNECTOR_RUN_AND_TERMINATE=true
                 (connector.run_and_terminate) or CONNECTOR_DURATION_PERIOD=PT0S.
                 Default: run once per CONNECTOR_DURATION_PERIOD (PT24H).
  --check        Check the settings, the Citalid login and version list, and
                 the OpenCTI URL, token and version; print a report and exit
                 0 when all pass, 1 otherwise. Imports nothing.
  --set-state ID
                 Set the connector state to Citalid version ID, such as
                 20250105-2, on the platform and in the state file, and exit.
                 The next run imports the versions after ID, so this skips a
                 version that cannot be imported. Imports nothing, and fails
                 while a connector uses the state file. Exits 0 on success,
                 1 when the platform cannot be reached (nothing is changed).
  --version      Print the connector's version and exit.
  --help         Print this text and exit.

Exit codes: 0 success, 1 failed run, check or --set-state, 2 invalid settings
or command line, or a problem a restart cannot fix (wrong OpenCTI URL or
token, a state file in use).
`;

/**
 * Parses the command line. Raises UsageError on an unknown option, a missing
 * value, a `--set-state` id without a real `YYYYMMDD` date, or `--set-state`
 * with `--once` or `--check`.
 */
export function parseCommandLine(argv: string[]): CommandLine {
  const commandLine = parseOptions(argv);

  const { setState } = commandLine;
  if (setState !== undefined && (!hasDatePrefix(setState) || hasControlCharacter(setState))) {
    throw new UsageError(
      `--set-state is ${JSON.stringify(setState)}: expected a Citalid version id that starts with a real date YYYYMMDD and has no control character, such as 20250105 or 20250105-2. ` +
        "To clear the state instead, reset it on the connector's page in the OpenCTI UI.",
    );
  }
  if (setState !== undefined && (commandLine.once || commandLine.check)) {
    throw new UsageError(
      `--set-state cannot be combined with ${commandLine.once ? "--once" : "--check"}: it sets the state and exits. Run the two commands one after the other.`,
    );
  }
  return commandLine;
}

function parseOptions(argv: string[]): CommandLine {
  try {
    const { values } = parseArgs({
      args: argv,
      options: {
        config: { type: "string" },
        once: { type: "boolean", default: false },
        check: { type: "boolean", default: false },
        "set-state": { type: "string" },
        version: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
      allowPositionals: false,
    });
    return {
      configPath: values.config,
      once: values.once ?? false,
      check: values.check ?? false,
      setState: values["set-state"],
      version: values.version ?? false,
      help: values.help ?? false,
    };
  } catch (error) {
    throw new UsageError(`${(error as Error).message}. Run with --help for the list of options.`);
  }
}
