import packageJson from "../package.json" with { type: "json" };

/** The connector's version, from package.json, embedded at build time. */
export const CONNECTOR_VERSION: string = packageJson.version;

/** The `User-Agent` sent to both services. */
export const USER_AGENT = `citalid-connector/${CONNECTOR_VERSION}`;
