-- A job a same-key retry answered with (an Idempotency-Key replay) while its creation was still running:
-- from then on its creation may not discard the row (discard_queued spares it), so no client is ever
-- answered with a job that its own creation then deletes. Set by one compare-and-set UPDATE that races
-- the creation's discard: whichever commits first wins. Service-only bookkeeping, never shown.
alter table public.pip_ai_image_jobs add column if not exists replayed_at timestamptz;
