-- Nano Banana job service: tables, constraints, indexes.
-- Supabase CLI naming (<timestamp>_<name>.sql); also applied by `nano-banana migrate` for local dev.


create table if not exists public.pip_ai_project_members (
  project_id uuid not null,
  user_id uuid not null,
  created_at timestamptz not null default now(),
  primary key (project_id, user_id)
);
create index if not exists pip_ai_project_members_user_idx on public.pip_ai_project_members (user_id);

create table if not exists public.pip_ai_image_jobs (
  id uuid primary key default gen_random_uuid(),
  project_id uuid not null,
  user_id uuid not null,
  thread_id uuid not null,
  parent_job_id uuid references public.pip_ai_image_jobs (id) on delete set null,
  source_variant_id uuid,
  prompt text not null check (char_length(prompt) between 1 and 10000),
  input_path text not null check (input_path ~ '^(inputs|jobs)/[A-Za-z0-9._/-]+$' and input_path !~ '\.\.'),
  input_mime_type text not null check (input_mime_type in ('image/png', 'image/jpeg', 'image/webp')),
  input_width integer not null check (input_width > 0),
  input_height integer not null check (input_height > 0),
  status text not null default 'queued'
    check (status in ('queued', 'running', 'succeeded', 'failed', 'canceled')),
  error_code text,
  error_message text,
  note text,
  variant_count smallint not null default 2 check (variant_count between 1 and 4),
  aspect_ratio text check (aspect_ratio is null or aspect_ratio ~ '^[0-9]{1,2}:[0-9]{1,2}$'),
  model text not null,
  idempotency_key text check (idempotency_key is null or char_length(idempotency_key) between 1 and 255),
  request_hash text,
  attempt integer not null default 0 check (attempt >= 0),
  created_at timestamptz not null default now(),
  started_at timestamptz,
  finished_at timestamptz,
  deadline_at timestamptz not null,
  updated_at timestamptz not null default now(),
  -- A terminal job has finished_at; an active one does not.
  constraint pip_ai_image_jobs_finished_consistent check (
    (status in ('succeeded', 'failed', 'canceled')) = (finished_at is not null)
  ),
  constraint pip_ai_image_jobs_failed_has_code check (status <> 'failed' or error_code is not null)
);

create unique index if not exists pip_ai_image_jobs_idempotency_idx
  on public.pip_ai_image_jobs (user_id, idempotency_key) where idempotency_key is not null;
-- The list query: a project's jobs newest first (keyset pagination on (created_at, id)).
create index if not exists pip_ai_image_jobs_project_created_idx
  on public.pip_ai_image_jobs (project_id, created_at desc, id desc);
create index if not exists pip_ai_image_jobs_thread_idx on public.pip_ai_image_jobs (thread_id, created_at);
-- The sweep: active jobs by deadline.
create index if not exists pip_ai_image_jobs_active_deadline_idx
  on public.pip_ai_image_jobs (deadline_at) where status in ('queued', 'running');

create table if not exists public.pip_ai_image_variants (
  id uuid primary key default gen_random_uuid(),
  job_id uuid not null references public.pip_ai_image_jobs (id) on delete cascade,
  index smallint not null check (index between 0 and 15),
  storage_path text not null check (storage_path ~ '^jobs/[0-9a-f-]{36}/[A-Za-z0-9._/-]+$'),
  mime_type text not null check (mime_type in ('image/png', 'image/jpeg', 'image/webp')),
  width integer not null check (width > 0),
  height integer not null check (height > 0),
  bytes integer not null check (bytes > 0),
  created_at timestamptz not null default now(),
  unique (job_id, index)
);

alter table public.pip_ai_image_jobs
  drop constraint if exists pip_ai_image_jobs_source_variant_fk;
alter table public.pip_ai_image_jobs
  add constraint pip_ai_image_jobs_source_variant_fk
  foreign key (source_variant_id) references public.pip_ai_image_variants (id) on delete set null;

create table if not exists public.pip_ai_image_messages (
  id uuid primary key default gen_random_uuid(),
  thread_id uuid not null,
  job_id uuid not null references public.pip_ai_image_jobs (id) on delete cascade,
  project_id uuid not null,
  user_id uuid not null,
  role text not null check (role in ('user', 'assistant')),
  content text not null,
  variant_id uuid references public.pip_ai_image_variants (id) on delete set null,
  created_at timestamptz not null default clock_timestamp()
);
create index if not exists pip_ai_image_messages_thread_idx
  on public.pip_ai_image_messages (thread_id, created_at, id);
-- One assistant message per job: a redelivered terminal transition cannot write a second one.
create unique index if not exists pip_ai_image_messages_one_assistant_idx
  on public.pip_ai_image_messages (job_id) where role = 'assistant';
create unique index if not exists pip_ai_image_messages_one_user_idx
  on public.pip_ai_image_messages (job_id) where role = 'user';

create table if not exists public.pip_ai_webhook_receipts (
  webhook_id text primary key check (char_length(webhook_id) between 1 and 255),
  received_at timestamptz not null default now()
);
create index if not exists pip_ai_webhook_receipts_received_idx on public.pip_ai_webhook_receipts (received_at);
