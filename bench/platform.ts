/**
 * The platform side of benchmark runs, in a process of its own: the fake
 * Citalid serving one version file, the fake OpenCTI validating each push
 * and keeping counts only, and a sink that drops uploaded bytes. The
 * benchmark starts one such process per measured run. No run then meets a
 * platform whose heap an earlier run has grown, and the CPU time of this
 * process is the platform side's work for that run alone.
 *
 * Once listening, it prints one JSON line: `{"citalidUrl", "citalidUser",
 * "openctiUrl", "graphqlUrl", "sinkUrl"}`. Each line then read on standard
 * input is a command, and each command gets one reply line:
 *   seed <connector id>  stores a connector, as registration would; prints `ok`
 *   report               prints `{"bundles", "objects", "bytes", "cpuMs"}`: the pushes
 *                        received and the CPU time since the JSON line
 * It exits when standard input closes.
 *
 * Usage: bun bench/platform.ts <version file> <version id> <citalid password> <opencti token>
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { startFakeCitalid } from "../tests/fakes/citalid.ts";
import { startFakeOpenCTI } from "../tests/fakes/opencti.ts";

const [versionFile, versionId, citalidPassword, openctiToken] = process.argv.slice(2) as [string, string, string, string];

const citalid = await startFakeCitalid({ password: citalidPassword });
citalid.setVersions([{ id: versionId, bodyFile: versionFile }]);
const opencti = await startFakeOpenCTI({ token: openctiToken, recordBodies: false, keepPushes: false, maxBodyBytes: 4_000_000_000 });

const sink = createServer((req, res) => {
  req.on("data", () => {});
  req.on("end", () => {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("ok");
  });
});
await new Promise<void>((resolve) => sink.listen(0, "127.0.0.1", resolve));

const cpuAtStart = process.cpuUsage();
console.log(
  JSON.stringify({
    citalidUrl: citalid.url,
    citalidUser: citalid.user,
    openctiUrl: opencti.url,
    graphqlUrl: opencti.graphqlUrl,
    sinkUrl: `http://127.0.0.1:${(sink.address() as AddressInfo).port}/`,
  }),
);

let pending = "";
const decoder = new TextDecoder();
for await (const chunk of Bun.stdin.stream()) {
  pending += decoder.decode(chunk, { stream: true });
  let newline = pending.indexOf("\n");
  while (newline >= 0) {
    runCommand(pending.slice(0, newline).trim());
    pending = pending.slice(newline + 1);
    newline = pending.indexOf("\n");
  }
}

await citalid.stop();
await opencti.stop();
sink.close();
process.exit(0);

// Runs one command line and prints its reply line.
function runCommand(command: string): void {
  const [verb, argument] = command.split(" ");
  if (verb === "seed" && argument !== undefined) {
    opencti.seedConnector({ id: argument });
    console.log("ok");
    return;
  }
  if (verb === "report") {
    const cpu = process.cpuUsage(cpuAtStart);
    console.log(JSON.stringify({ ...opencti.pushTotals, cpuMs: (cpu.user + cpu.system) / 1000 }));
    return;
  }
  console.log(JSON.stringify({ error: `invalid command ${JSON.stringify(command)}: use "seed <connector id>" or "report"` }));
}
