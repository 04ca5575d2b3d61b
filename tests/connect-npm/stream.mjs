// One server-streaming call (process.Process/Start) and one unary call
// (process.Process/List) through the npm Connect client over HTTP/1.1.
// Usage: node stream.mjs BASE_URL DESCRIPTOR_BASE64
// DESCRIPTOR_BASE64 is process/process.proto's FileDescriptorProto as E2B's
// SDK ships it. Prints a JSON summary on stdout.
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { fileDesc } from "@bufbuild/protobuf/codegenv2";

const [baseUrl, descriptor] = process.argv.slice(2);
const file = fileDesc(descriptor);
const service = file.services.find((s) => s.typeName === "process.Process");
const client = createClient(
  service,
  createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true }),
);

const events = [];
let stdout = "";
for await (const res of client.start({
  process: { cmd: "/bin/sh", args: ["-c", "echo from-npm; exit 5"] },
})) {
  const ev = res.event?.event;
  events.push(ev?.case);
  if (ev?.case === "data" && ev.value.output.case === "stdout") {
    stdout += new TextDecoder().decode(ev.value.output.value);
  }
  if (ev?.case === "end") {
    events.push(`exit:${ev.value.exitCode}`);
  }
}
const list = await client.list({});
console.log(JSON.stringify({ events, stdout, listed: list.processes.length }));
