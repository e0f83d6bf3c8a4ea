-- Callback receipts with a state, and the index the sweep's slot reconciliation reads.
--
-- A receipt is `processing` from the moment a delivery claims its webhook id until the job transition it
-- causes commits (the transition sets it `applied` in the same transaction). A duplicate of a delivery
-- still `processing` is answered 503 (retry later), never "done"; a delivery that fails before its
-- transition commits deletes its `processing` receipt so the retry can apply; an `applied` receipt is
-- never deleted before it ages out (prune). A `processing` receipt whose claim is older than the claim
-- TTL (its delivery crashed) may be claimed again. Rows from before this migration were applied.
alter table public.pip_ai_webhook_receipts
  add column if not exists state text not null default 'applied'
    check (state in ('processing', 'applied')),
  add column if not exists claimed_at timestamptz not null default now();

-- The sweep gives back project leases still held by recently ended jobs (a crash between the terminal
-- transition and the release): it reads the jobs whose deadline lies within the last lease grace.
create index if not exists pip_ai_image_jobs_deadline_idx on public.pip_ai_image_jobs (deadline_at);
