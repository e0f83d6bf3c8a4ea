// verifyWebhook against deliveries signed by the service's own signer (functions/nano_banana/usecases/
// notifying.signed_headers, which uses the official `standardwebhooks` PyPI package) and by Node's crypto.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "node:test";

import { WebhookVerificationError, verifyWebhook } from "../src/index.js";
import { clientFor, photo, session } from "./support.js";

const OLD = "whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZA==";
const NEW = "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldw==";
// Signed by the service with both secrets (a rotation in progress), at 2026-12-07T22:00:00Z.
const SIGNED_BY_THE_SERVICE = {
  body: '{"type":"job.succeeded","timestamp":"2026-12-07T22:00:00Z","data":{"id":"0b6c7e4e-2f7b-4d35-9d7e-1a2b3c4d5e6f","status":"succeeded","prompt":"café ☕"}}',
  headers: {
    "webhook-id": "msg_fixture",
    "webhook-timestamp": "1796680800",
    "webhook-signature": "v1,YtpBVpaR4Oka4GMeBhzLDqLDR0vmpdaq49TBAoARFDc= v1,L0GsLY2gHYjigmkxDQzkFFezFFgSw//f3H3Uj5ftxTk=",
  },
};
const AT_SIGNING = () => 1796680800 * 1000 + 30_000;

test("a delivery signed by the service verifies with either secret of a rotation", async () => {
  for (const secret of [OLD, NEW, [OLD, NEW], ["whsec_" + "A".repeat(44), NEW]]) {
    const payload = await verifyWebhook(SIGNED_BY_THE_SERVICE.body, SIGNED_BY_THE_SERVICE.headers, secret, { now: AT_SIGNING });
    assert.equal(payload.type, "job.succeeded");
    assert.equal(payload.data.status, "succeeded");
  }
  const asFetchHeaders = new Headers(SIGNED_BY_THE_SERVICE.headers);
  assert.equal((await verifyWebhook(SIGNED_BY_THE_SERVICE.body, asFetchHeaders, NEW, { now: AT_SIGNING })).data.prompt, "café ☕");
});

test("a changed body, another secret, a stale timestamp or a missing header is refused", async () => {
  const { body, headers } = SIGNED_BY_THE_SERVICE;
  const refused = async (b: string, h: Record<string, string>, secret: string, now = AT_SIGNING) =>
    assert.rejects(verifyWebhook(b, h, secret, { now }), WebhookVerificationError);
  await refused(body.replace("succeeded", "failed"), headers, NEW);
  await refused(body, headers, "whsec_" + "A".repeat(44));
  await refused(body, headers, NEW, () => 1796680800 * 1000 + 301_000);
  await refused(body, { ...headers, "webhook-id": "msg_other" }, NEW);
  await refused(body, { "webhook-id": "msg_fixture", "webhook-timestamp": "1796680800" }, NEW);
  await refused(body, { ...headers, "webhook-signature": "v1,not*base64" }, NEW);
});

test("an independent HMAC (node:crypto) of the scheme verifies", async () => {
  const id = "msg_node";
  const stamp = String(Math.floor(Date.now() / 1000));
  const body = JSON.stringify({ type: "job.failed", timestamp: new Date().toISOString(), data: { status: "failed" } });
  const key = Buffer.from(NEW.slice("whsec_".length), "base64");
  const signature = createHmac("sha256", key).update(`${id}.${stamp}.${body}`).digest("base64");
  const headers = { "Webhook-Id": id, "Webhook-Timestamp": stamp, "Webhook-Signature": `v1,${signature}` };
  assert.equal((await verifyWebhook(body, headers, [OLD, NEW])).type, "job.failed");
});

// `make dev` signs with this fixed development secret (functions/nano_banana/settings.py DEV_WEBHOOK_SECRET).
const DEV_SECRET = "whsec_bmFuby1iYW5hbmEtZGV2LXdlYmhvb2stc2VjcmV0ISE=";

test("a job created with webhookUrl is delivered to a Node receiver that verifies it", async (t) => {
  const received: { body: string; headers: http.IncomingHttpHeaders }[] = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => (body += chunk));
    req.on("end", () => {
      received.push({ body, headers: req.headers });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.after(() => server.close());
  const port = (server.address() as AddressInfo).port;
  const s = session("webhooks");
  const client = clientFor(s);
  const created = await client.createJob({
    projectId: s.projectId,
    image: photo(),
    prompt: "tell my server",
    variantCount: 1,
    webhookUrl: `http://127.0.0.1:${port}/hook`,
    webhookEvents: ["running", "succeeded"],
  });
  const job = await client.waitFor(created.jobId);
  assert.equal(job.status, "succeeded");
  const deadline = Date.now() + 20_000;
  while (received.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const types = [];
  for (const delivery of received) {
    const payload = await verifyWebhook(delivery.body, delivery.headers as Record<string, string>, DEV_SECRET);
    assert.equal(payload.data.id, created.jobId);
    types.push(payload.type);
  }
  assert.deepEqual(types.sort(), ["job.running", "job.succeeded"]);
  const shown = await client.getJob(created.jobId);
  assert.deepEqual(shown.webhook?.events, ["running", "succeeded"]);
});
