/**
 * The connector's validated configuration. Every field has already been
 * parsed, defaulted and checked; nothing downstream re-validates it.
 */
export interface Config {
  opencti: {
    /** Platform base URL without a trailing slash, for example `https://opencti.example.org`. */
    url: string;
    token: string;
    /** Verify the platform's TLS certificate. @default true */
    sslVerify: boolean;
    /** JSON log lines (true) or readable lines (false). @default true */
    jsonLogging: boolean;
  };
  connector: {
    /** UUID that identifies this connector on the platform. */
    id: string;
    type: "EXTERNAL_IMPORT";
    /** @default "Citalid" */
    name: string;
    /** @default ["citalid"] */
    scope: string[];
    /** @default false */
    runAndTerminate: boolean;
    /** @default "info" */
    logLevel: LogLevel;
    /** Time between two runs in milliseconds; 0 means one run, then exit. @default 86400000 */
    durationPeriodMs: number;
    /** Push queue size in MB above which a scheduled run is postponed. @default 500 */
    queueThresholdMb: number;
    /** @default "api" */
    queueProtocol: "api" | "amqp";
    /** Absolute path of the JSON state file. */
    stateFile: string;
    /** Largest bundle sent in one `stixBundlePush`, in MB. @default 10 */
    pushMaxMb: number;
    /** @default false */
    exposeMetrics: boolean;
    /** @default 9095 */
    metricsPort: number;
    /** @default "127.0.0.1" */
    metricsHost: string;
    /** @default "" */
    metricsNamespace: string;
    /** @default "" */
    metricsSubsystem: string;
  };
  citalid: {
    /** Customer base URL with scheme and without a trailing slash. */
    url: string;
    user: string;
    password: string;
    /** Value of the `Accept-Language` header. @default "en" */
    language: string;
  };
  /** RabbitMQ overrides (`MQ_*`) applied to what `registerConnector` returns. */
  mq: {
    host?: string;
    port?: number;
    vhost?: string;
    useSsl?: boolean;
    user?: string;
    pass?: string;
    /** Verify the broker's TLS certificate. @default true */
    rejectUnauthorized: boolean;
  };
  /** Extra CA certificates (PEM file) trusted for both services, or undefined. */
  caFile?: string;
}

export type LogLevel = "debug" | "info" | "warn" | "error";
