-- Usage you can see and spend you can cap (docs/usage.md).
--
-- 1. Per-project monthly image budgets that ops edit with SQL. No row: the project has the default
--    (NANO_BANANA_PROJECT_MONTHLY_IMAGES); 0: no budget for this project. Read by the creation (cached
--    for up to 30 s per instance), so a change applies within 30 s. RLS on with no policy: only the
--    service role (the backend, ops) can read or write it.
create table if not exists public.pip_ai_project_budgets (
  project_id uuid primary key,
  monthly_images integer not null check (monthly_images >= 0),
  note text,
  updated_at timestamptz not null default now()
);
alter table public.pip_ai_project_budgets enable row level security;
revoke all on public.pip_ai_project_budgets from public, anon, authenticated;

-- 2. What each job used: the images it stored, the model's token counts where the model reports them
--    (null otherwise) and the time spent in the model call(s). queuedMs and totalMs come from
--    created_at, started_at and finished_at.
alter table public.pip_ai_image_jobs
  add column if not exists images smallint check (images is null or images between 0 and 16),
  add column if not exists prompt_tokens integer check (prompt_tokens is null or prompt_tokens >= 0),
  add column if not exists output_tokens integer check (output_tokens is null or output_tokens >= 0),
  add column if not exists total_tokens integer check (total_tokens is null or total_tokens >= 0),
  add column if not exists generation_ms integer check (generation_ms is null or generation_ms >= 0);
-- Members see what their jobs used, like the job's other columns (20261201000200: a column is hidden until
-- granted), so the builder's Realtime subscription carries it too.
grant select (images, prompt_tokens, output_tokens, total_tokens, generation_ms) on public.pip_ai_image_jobs to authenticated;

-- 3. GET /usage: a project's jobs in a range of creation days, read from the index alone (the
--    columns it sums are included), one range scan.
create index if not exists pip_ai_image_jobs_usage_idx
  on public.pip_ai_image_jobs (project_id, created_at)
  include (status, started_at, finished_at, images, prompt_tokens, output_tokens, total_tokens);

-- Jobs that ended before this migration: the images they stored (the variants they kept).
update public.pip_ai_image_jobs j
  set images = (select count(*) from public.pip_ai_image_variants v where v.job_id = j.id)
  where j.images is null and j.status in ('succeeded', 'failed', 'canceled');
