import assert from "node:assert/strict";
import { test } from "node:test";

import { createNanoBanana } from "../src/index.js";
import { baseUrl, clientFor, failure, photo, session, startProxy, unavailable } from "./support.js";

test("a 429 is surfaced with retryAfterSeconds, not waited out", async (t) => {
  const s = session("limits");
  const perHour = Number(process.env["NANO_BANANA_TEST_RATE_PER_HOUR"]);
  const proxy = await startProxy(t, () => ({ kind: "forward" }));
  const client = clientFor(s, { baseUrl: proxy.baseUrl });
  const create = () => client.createJob({ projectId: s.projectId, image: photo(), prompt: "one more", variantCount: 1 });
  for (let i = 0; i < perHour; i++) await create();
  const error = await failure(create());
  assert.equal(error.status, 429);
  assert.equal(error.code, "rate_limited");
  assert.ok(error.retryAfterSeconds !== null && error.retryAfterSeconds > 10, `an hour's window: ${error.retryAfterSeconds}`);
  assert.equal(error.details["retryAfterSeconds"], error.retryAfterSeconds);
  assert.match(error.requestId ?? "", /\S/);
  const posts = proxy.seen.filter((r) => r.method === "POST");
  assert.equal(posts.length, perHour + 1, "a Retry-After longer than the retry budget is not slept on");
});

test("creation is repeated with the same Idempotency-Key when its answer is lost", async (t) => {
  const s = session("retries");
  let posts = 0;
  const proxy = await startProxy(t, (req) =>
    req.method === "POST" && posts++ === 0 ? { kind: "drop-answer" } : { kind: "forward" },
  );
  const client = clientFor(s, { baseUrl: proxy.baseUrl });
  const created = await client.createJob({ projectId: s.projectId, image: photo(), prompt: "lost answer" });
  const tries = proxy.seen.filter((r) => r.method === "POST");
  assert.equal(tries.length, 2);
  assert.equal(tries[0]?.status, 202, "the server made the job the first time");
  assert.equal(tries[1]?.idempotencyKey, tries[0]?.idempotencyKey);
  assert.equal(tries[1]?.idempotencyKey, created.idempotencyKey);
  assert.equal(created.replayed, true, "the second try was answered with the job made by the first");
  const ids: string[] = [];
  for await (const page of client.listJobs({ projectId: s.projectId })) ids.push(...page.jobs.map((j) => j.id));
  assert.deepEqual(ids, [created.jobId], "one job, not two");

  // A GET answered 503 + Retry-After is asked again after that wait; a cancel is never repeated.
  let gets = 0;
  const flaky = await startProxy(t, (req) =>
    (req.method === "GET" && gets++ === 0) || req.method === "POST" ? unavailable() : { kind: "forward" },
  );
  const viaFlaky = clientFor(s, { baseUrl: flaky.baseUrl });
  assert.equal((await viaFlaky.getJob(created.jobId)).id, created.jobId);
  assert.equal(flaky.seen.filter((r) => r.method === "GET").length, 2);
  const error = await failure(viaFlaky.cancel(created.jobId));
  assert.equal(error.status, 503);
  assert.equal(error.code, "unavailable");
  assert.equal(error.retryAfterSeconds, 1);
  assert.equal(error.requestId, "proxy-1");
  assert.equal(flaky.seen.filter((r) => r.method === "POST").length, 1);
});

test("errors carry the envelope's code and request id", async (t) => {
  const s = session("retries");
  const client = clientFor(s);
  const missing = await failure(client.getJob(crypto.randomUUID()));
  assert.equal(missing.status, 404);
  assert.equal(missing.code, "not_found");
  assert.match(missing.requestId ?? "", /\S/);

  const stranger = createNanoBanana({ baseUrl, getToken: () => "not-a-token" });
  const denied = await failure(stranger.getJob(crypto.randomUUID()));
  assert.equal(denied.status, 401);
  assert.equal(denied.code, "unauthenticated");

  const invalid = await failure(client.createJob({ projectId: s.projectId, image: photo(), prompt: "x", variantCount: 9 }));
  assert.equal(invalid.status, 422);
  assert.equal(invalid.code, "invalid_request");

  const closed = await startProxy(t, () => ({ kind: "forward" }));
  await closed.close(); // nothing listens there any more
  const unreachable = clientFor(s, { baseUrl: closed.baseUrl, retry: { maxAttempts: 2, baseDelayMs: 10 } });
  const network = await failure(unreachable.getJob(crypto.randomUUID()));
  assert.equal(network.status, 0);
  assert.equal(network.code, "network_error");
});

test("deleteJob deletes the job through the real route, once; a failed delete is not repeated", async (t) => {
  const s = session("retries");
  const client = clientFor(s);
  const created = await client.createJob({ projectId: s.projectId, image: photo(), prompt: "to be deleted", variantCount: 1 });
  await client.waitFor(created.jobId);
  assert.deepEqual(await client.deleteJob(created.jobId), { deleted: [created.jobId] });
  assert.equal((await failure(client.getJob(created.jobId))).status, 404);
  const again = await failure(client.deleteJob(created.jobId));
  assert.equal(again.status, 404, "a second DELETE is 404");
  assert.equal(again.code, "not_found");

  let deletes = 0;
  const proxy = await startProxy(t, (req) => (req.method === "DELETE" && ++deletes ? unavailable() : { kind: "forward" }));
  const viaProxy = clientFor(s, { baseUrl: proxy.baseUrl });
  const jobId = crypto.randomUUID();
  assert.equal((await failure(viaProxy.deleteJob(jobId))).status, 503);
  assert.equal(deletes, 1, "a failed delete is not repeated automatically");
  assert.equal(proxy.seen[0]?.path, `${new URL(proxy.baseUrl).pathname}/jobs/${jobId}`);
});
