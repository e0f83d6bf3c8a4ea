import assert from "node:assert/strict";
import { test } from "node:test";

import type { JobStatus } from "../src/index.js";
import { clientFor, failure, isEventStream, photo, session, startProxy } from "./support.js";

test("cancel a running job; a second cancel is invalid_transition", async () => {
  const s = session("cancel");
  const client = clientFor(s);
  const created = await client.createJob({ projectId: s.projectId, image: photo(), prompt: "never mind" });
  const canceled = await client.cancel(created.jobId);
  assert.equal(canceled.status, "canceled");
  assert.equal((await client.waitFor(created.jobId)).status, "canceled");
  const again = await failure(client.cancel(created.jobId));
  assert.equal(again.status, 409);
  assert.equal(again.code, "invalid_transition");
});

test("refine a variant: a new job in the same thread", async () => {
  const s = session("refine");
  const client = clientFor(s);
  const first = await client.waitFor((await client.createJob({ projectId: s.projectId, image: photo(), prompt: "golden hour" })).jobId);
  assert.equal(first.status, "succeeded");
  const variant = first.variants[0]!;
  const refined = await client.refine({ jobId: first.id, variantId: variant.id, prompt: "now add birds" });
  assert.equal(refined.replayed, false);
  assert.equal(refined.threadId, first.threadId);
  const second = await client.waitFor(refined.jobId);
  assert.equal(second.status, "succeeded");
  assert.equal(second.parentJobId, first.id);
  assert.equal(second.sourceVariantId, variant.id);
  const thread = await client.thread(second.id);
  assert.equal(thread.threadId, first.threadId);
  assert.deepEqual(
    thread.messages.map((m) => [m.role, m.jobId]),
    [
      ["user", first.id],
      ["assistant", first.id],
      ["user", second.id],
      ["assistant", second.id],
    ],
  );
  const replay = await client.refine({ jobId: first.id, variantId: variant.id, prompt: "now add birds", idempotencyKey: refined.idempotencyKey });
  assert.equal(replay.replayed, true);
  assert.equal(replay.jobId, refined.jobId);
});

test("waitFor rejects with the signal's reason when aborted", async () => {
  const s = session("abort");
  const client = clientFor(s);
  const created = await client.createJob({ projectId: s.projectId, image: photo(), prompt: "wait for me" });

  const controller = new AbortController();
  const seen: JobStatus[] = [];
  const waiting = client.waitFor(created.jobId, {
    signal: controller.signal,
    onUpdate: (job) => {
      seen.push(job.status);
      controller.abort(); // the first update is the job as it is now, before it finishes
    },
  });
  await assert.rejects(waiting, (error: unknown) => error instanceof DOMException && error.name === "AbortError");
  assert.equal(seen.length, 1);
  assert.notEqual(seen[0], "succeeded");

  const reason = new Error("the page was closed");
  await assert.rejects(client.waitFor(created.jobId, { signal: AbortSignal.abort(reason) }), (e) => e === reason);

  const watch = client.watch(created.jobId, () => undefined);
  watch.stop();
  await assert.rejects(watch.done, (error: unknown) => error instanceof DOMException && error.name === "AbortError");
  assert.equal((await client.waitFor(created.jobId)).status, "succeeded", "aborting stopped watching, not the job");
});

test("a dropped stream reconnects and each state is reported once", async (t) => {
  const s = session("reconnect");
  let streams = 0;
  const proxy = await startProxy(t, (req) =>
    isEventStream(req) && streams++ === 0 ? { kind: "cut-after-first-event" } : { kind: "forward" },
  );
  const client = clientFor(s, { baseUrl: proxy.baseUrl });
  const created = await client.createJob({ projectId: s.projectId, image: photo(), prompt: "keep watching" });
  const updates: string[] = [];
  const job = await client.waitFor(created.jobId, { onUpdate: (j) => updates.push(`${j.status}@${j.updatedAt}`) });
  assert.equal(job.status, "succeeded");
  assert.ok(streams >= 2, `the stream was opened again after the cut (${streams})`);
  assert.deepEqual(updates, [...new Set(updates)], "no state twice after reconnecting");
  assert.equal(proxy.seen.filter((r) => r.method === "GET" && !isEventStreamPath(r.path)).length, 0, "no polling");
});

test("a stream that goes silent is given up after idleTimeoutMs and opened again", async (t) => {
  const s = session("silent");
  let streams = 0;
  const proxy = await startProxy(t, (req) =>
    isEventStream(req) && streams++ === 0 ? { kind: "silent-stream" } : { kind: "forward" },
  );
  const client = clientFor(s, { baseUrl: proxy.baseUrl });
  const created = await client.createJob({ projectId: s.projectId, image: photo(), prompt: "say something" });
  const job = await client.waitFor(created.jobId, { idleTimeoutMs: 300 });
  assert.equal(job.status, "succeeded");
  // The silent one never delivers: the job was seen to succeed only because another was opened.
  assert.ok(streams >= 2, `streams opened: ${streams}`);
});

test("when streaming keeps failing, it polls with If-None-Match and takes 304s", async (t) => {
  const s = session("polling");
  const proxy = await startProxy(t, (req) =>
    isEventStream(req)
      ? { kind: "respond", status: 502, headers: { "Content-Type": "text/html" }, body: "<h1>Bad Gateway</h1>" }
      : { kind: "forward" },
  );
  const client = clientFor(s, { baseUrl: proxy.baseUrl });
  const created = await client.createJob({ projectId: s.projectId, image: photo(), prompt: "poll me" });
  const statuses: JobStatus[] = [];
  const job = await client.waitFor(created.jobId, { pollIntervalMs: 100, onUpdate: (j) => statuses.push(j.status) });
  assert.equal(job.status, "succeeded");
  assert.equal(statuses.at(-1), "succeeded");
  assert.deepEqual(statuses, [...new Set(statuses)]);
  assert.equal(proxy.seen.filter((r) => isEventStreamPath(r.path)).length, 3, "three stream attempts, then polling");
  const polls = proxy.seen.filter((r) => r.method === "GET" && !isEventStreamPath(r.path));
  assert.equal(polls[0]?.ifNoneMatch, undefined);
  const revalidated = polls.filter((r) => r.status === 304);
  assert.ok(revalidated.length > 0, `an unchanged job came back as 304 (${polls.map((r) => r.status).join(", ")})`);
  assert.ok(revalidated.every((r) => r.ifNoneMatch), "304s only to conditional requests");
});

function isEventStreamPath(path: string): boolean {
  return /\/events(\?|$)/.test(path);
}
