// The README's example, compiled (not run) with the tests so that it stays true to the API.
import { NanoBananaError, createNanoBanana } from "../src/index.js";

declare const session: { access_token: string };
declare const projectId: string;
declare const file: File;
declare const view: { signal: AbortSignal };
declare function showStatus(status: string): void;
declare const editor: { insert(block: { type: "image_compare"; props: { before: { storagePath: string } } }): void };
declare function toast(text: string): void;

export async function example(): Promise<void> {
  const nb = createNanoBanana({ baseUrl: "https://api.example.com/api/nano-banana", getToken: () => session.access_token });
  try {
    const { jobId } = await nb.createJob({ projectId, image: file, prompt: "Golden hour light", variantCount: 2 });
    const job = await nb.waitFor(jobId, { onUpdate: (j) => showStatus(j.status), signal: view.signal });
    if (job.status === "succeeded") editor.insert(await nb.blocks(job.id, { variantId: job.variants[0]!.id, type: "image_compare" }));
  } catch (e) {
    if (e instanceof NanoBananaError && e.code === "rate_limited") toast(`Next slot in ${e.retryAfterSeconds} s`);
  }
}
