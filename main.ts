#!/usr/bin/env bun
/**
 * Entry point of the Citalid connector: reads the command line and the
 * settings, then hands over to the connector's run loop, to the check or
 * to `--set-state`.
 */
import { dirname } from "node:path";
import { runCheck } from "./lib/check.ts";
import { HELP, UsageError, parseCommandLine } from "./lib/cli.ts";
import { ConfigError, loadConfig } from "./lib/config.ts";
import { EXIT, runConnector } from "./lib/connector.ts";
import { FatalError, StartupTimeoutError } from "./lib/errors.ts";
import { createLogger } from "./lib/log.ts";
import { configureProgress, stderrProgressTerminal } from "./lib/progress.ts";
import { runSetState } from "./lib/set-state.ts";
import { StateFileError } from "./lib/state.ts";
import { DEFAULT_TIMINGS, timingsFromEnv } from "./lib/timings.ts";
import { CONNECTOR_VERSION } from "./lib/version.ts";

async function main(argv: string[]): Promise<number> {
  let commandLine: ReturnType<typeof parseCommandLine>;
  try {
    commandLine = parseCommandLine(argv);
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`citalid-connector: ${error.message}\n`);
      return EXIT.config;
    }
    throw error;
  }
  if (commandLine.help) {
    process.stdout.write(HELP);
    return EXIT.ok;
  }
  if (commandLine.version) {
    process.stdout.write(`citalid-connector ${CONNECTOR_VERSION} (Bun ${Bun.version})\n`);
    return EXIT.ok;
  }

  // A compiled binary runs from Bun's virtual file system: its real folder is the executable's.
  const compiled = import.meta.path.startsWith("/$bunfs");
  const execDir = compiled ? dirname(process.execPath) : import.meta.dir;

  let loaded: ReturnType<typeof loadConfig>;
  try {
    loaded = loadConfig({ argvConfigPath: commandLine.configPath, env: process.env, cwd: process.cwd(), execDir });
  } catch (error) {
    if (error instanceof ConfigError) {
      const warnings = error.warnings.map((warning) => `warning: ${warning}\n`).join("");
      process.stderr.write(`${warnings}citalid-connector: invalid configuration:\n${error.message}\n`);
      return EXIT.config;
    }
    throw error;
  }

  const { config } = loaded;
  // On a terminal with readable logs, progress shows as a bar below the log lines.
  const terminal = stderrProgressTerminal(config.opencti.jsonLogging);
  configureProgress({ terminal });
  const logger = createLogger({
    level: config.connector.logLevel,
    json: config.opencti.jsonLogging,
    name: config.connector.name,
    write: terminal ? (line) => terminal.writeLine(line) : undefined,
  });
  logger.addSecrets(config.opencti.token, config.citalid.password, config.mq.pass);
  for (const warning of loaded.warnings) {
    logger.warn(warning, { config_file: loaded.source ?? null });
  }

  // A bad timing variable stops --check as it stops start-up: exit 2.
  let timings: ReturnType<typeof timingsFromEnv>;
  try {
    timings = timingsFromEnv(process.env);
  } catch (error) {
    if (error instanceof FatalError) {
      logger.error(error.message);
      return EXIT.config;
    }
    throw error;
  }

  if (commandLine.check) {
    return runCheck(config, logger, { source: loaded.source });
  }
  if (commandLine.setState !== undefined) {
    return runSetState(config, logger, commandLine.setState, { retryDelayMs: timings.retryDelayMs ?? DEFAULT_TIMINGS.retryDelayMs });
  }

  try {
    return await runConnector(config, logger, { once: commandLine.once, timings });
  } catch (error) {
    if (error instanceof FatalError || error instanceof StateFileError) {
      logger.error(error.message);
      return EXIT.config;
    }
    if (error instanceof StartupTimeoutError) {
      logger.error(error.message);
      return EXIT.failed;
    }
    logger.error("Connector stopped on an unexpected error", {
      reason: error instanceof Error ? error.message : String(error),
      stack: error instanceof Error ? error.stack : undefined,
    });
    return EXIT.failed;
  }
}

process.exitCode = await main(process.argv.slice(2));
// Open sockets or timers of libraries must not keep a finished process alive.
process.exit();
