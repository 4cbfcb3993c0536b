import { parseArgs } from "node:util";

/** Parsed command line. */
export interface CommandLine {
  configPath?: string;
  once: boolean;
  check: boolean;
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
  --version      Print the connector's version and exit.
  --help         Print this text and exit.

Exit codes: 0 success, 1 failed run or check, 2 invalid settings or command
line, or a problem a restart cannot fix (wrong OpenCTI URL or token).
`;

/** Parses the command line. Raises UsageError on an unknown option or a missing value. */
export function parseCommandLine(argv: string[]): CommandLine {
  try {
    const { values } = parseArgs({
      args: argv,
      options: {
        config: { type: "string" },
        once: { type: "boolean", default: false },
        check: { type: "boolean", default: false },
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
      version: values.version ?? false,
      help: values.help ?? false,
    };
  } catch (error) {
    throw new UsageError(`${(error as Error).message}. Run with --help for the list of options.`);
  }
}
