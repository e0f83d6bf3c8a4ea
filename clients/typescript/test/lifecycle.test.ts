import assert from "node:assert/strict";
import { test } from "node:test";

import type { JobPage, JobStatus } from "../src/index.js";
import { UUID, clientFor, photo, session } from "./support.js";

test("create → watch to succeeded → blocks, signed URLs, an idempotent replay, paging", async () => {
  const s = session("lifecycle");
  const client = clientFor(s);

  const created = await client.createJob({
    projectId: s.projectId,
    image: photo(),
    prompt: "make it brighter",
    variantCount: 2,
    aspectRatio: "4:3",
  });
  assert.equal(created.status, "queued");
  assert.equal(created.replayed, false);
  assert.match(created.idempotencyKey, UUID, "a key is generated when none is given");

  const updates: JobStatus[] = [];
  const job = await client.watch(created.jobId, (j) => updates.push(j.status)).done;
  assert.equal(job.status, "succeeded");
  assert.equal(updates.at(-1), "succeeded");
  assert.ok(updates.length >= 2, `saw the job before it finished: ${updates.join(", ")}`);
  assert.equal(job.variants.length, 2);
  assert.equal(job.aspectRatio, "4:3");
  assert.equal(job.usage.images, 2);
  assert.ok(job.timings.totalMs !== null && job.timings.totalMs >= 0);

  // What the project used this month (typed: the budget's limit is null without one).
  const usage = await client.usage({ projectId: s.projectId });
  assert.ok(usage.totals.images >= 2);
  assert.equal(usage.budget.limit, null);
  assert.ok(usage.budget.used + usage.budget.reserved >= 2);
  const variant = job.variants[0]!;

  // Typed blocks: `before`/`after` exist only on the compare block, and tsc checks it.
  const image = await client.blocks(job.id, { variantId: variant.id });
  assert.equal(image.type, "image");
  assert.equal(image.props.storagePath, variant.storagePath);
  assert.equal(image.props.variantId, variant.id);
  const compare = await client.blocks(job.id, { variantId: variant.id, type: "image_compare", layout: "side_by_side" });
  assert.equal(compare.type, "image_compare");
  assert.equal(compare.props.layout, "side_by_side");
  assert.equal(compare.props.before.storagePath, job.inputPath);
  assert.equal(compare.props.after.storagePath, variant.storagePath);

  // A stored block renders again by re-signing its path; a path the user may not see is only "not found".
  const stranger = `inputs/${crypto.randomUUID()}/x.png`;
  const signed = await client.signUrls([compare.props.after.storagePath, stranger]);
  assert.deepEqual(signed.notFound, [stranger]);
  const url = signed.urls[compare.props.after.storagePath];
  assert.ok(url, "the variant's path is signed");
  const served = await fetch(url); // absolute: signed by the dev server's local storage
  assert.equal(served.status, 200);
  assert.equal(served.headers.get("Content-Type"), "image/png");

  // The same key and body: the same job, not a second one.
  const again = await client.createJob({
    projectId: s.projectId,
    image: photo(),
    prompt: "make it brighter",
    variantCount: 2,
    aspectRatio: "4:3",
    idempotencyKey: created.idempotencyKey,
  });
  assert.equal(again.replayed, true);
  assert.equal(again.jobId, created.jobId);

  const fromPath = await client.createJobFromPath({ projectId: s.projectId, prompt: "again, warmer", inputPath: job.inputPath });
  assert.equal(fromPath.replayed, false);
  assert.equal((await client.waitFor(fromPath.jobId)).status, "succeeded");

  const pages: JobPage[] = [];
  for await (const page of client.listJobs({ projectId: s.projectId, limit: 1 })) pages.push(page);
  assert.deepEqual(
    pages.map((p) => p.jobs.map((j) => j.id)),
    [[fromPath.jobId], [created.jobId]],
    "newest first, one per page, and the replay made no job",
  );
  assert.equal(pages.at(-1)?.nextCursor, null);
});
