-- Deleting jobs, retention and orphan cleanup (DELETE /jobs/{id}, the sweep, `nano-banana erase-user`).
-- Rows are deleted only by the service (service role); no policy lets a client delete through PostgREST.

-- A job's refinements (the subtree a deletion takes along) and jobs made from a job's variant by path.
create index if not exists pip_ai_image_jobs_parent_idx
  on public.pip_ai_image_jobs (parent_job_id) where parent_job_id is not null;
create index if not exists pip_ai_image_jobs_input_job_idx
  on public.pip_ai_image_jobs ((split_part(input_path, '/', 2))) where input_path like 'jobs/%';
-- Retention: threads by their root's age; erasure: a user's jobs.
create index if not exists pip_ai_image_jobs_root_created_idx
  on public.pip_ai_image_jobs (created_at) where id = thread_id;
create index if not exists pip_ai_image_jobs_user_idx on public.pip_ai_image_jobs (user_id);
-- Which variant rows name a path (is a blob still referenced?).
create index if not exists pip_ai_image_variants_path_idx on public.pip_ai_image_variants (storage_path);

-- Blobs whose rows are gone: written in the transaction that deletes the rows, removed once the blobs are
-- deleted. A crash (or a Storage outage) between the two leaves the entry, and the sweep finishes the work.
-- `path` is an object path, or a prefix ending in '/' (a job's outputs of every attempt). A job whose worker
-- may still be alive gets a second entry for its prefix, due after its deadline, so a late worker's or
-- processor's uploads go too.
create table if not exists public.pip_ai_blob_purges (
  path text not null check (char_length(path) between 1 and 512 and path !~ '\.\.'),
  due_at timestamptz not null,
  created_at timestamptz not null default now(),
  primary key (path, due_at)
);
create index if not exists pip_ai_blob_purges_due_idx on public.pip_ai_blob_purges (due_at);

-- Where the orphan scan of uploaded inputs goes on next run (it walks a bounded slice per run).
create table if not exists public.pip_ai_sweep_cursors (
  name text primary key,
  position integer not null default 0 check (position >= 0),
  updated_at timestamptz not null default now()
);

alter table public.pip_ai_blob_purges enable row level security;
alter table public.pip_ai_sweep_cursors enable row level security;
-- Service-only bookkeeping: no client role may read or write it (TRUNCATE ignores RLS; 20261201000200 does
-- the same for the other tables).
revoke all on public.pip_ai_blob_purges, public.pip_ai_sweep_cursors from public, anon, authenticated;
