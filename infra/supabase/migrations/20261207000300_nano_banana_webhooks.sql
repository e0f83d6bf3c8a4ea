-- Completion webhooks (docs/webhooks.md): where a job's events go, and one delivery row per (job, event).

alter table public.pip_ai_image_jobs
  add column if not exists webhook_url text check (webhook_url is null or char_length(webhook_url) between 1 and 2048),
  add column if not exists webhook_events text[] not null default '{}'
    check (webhook_events <@ array['running', 'succeeded', 'failed', 'canceled']::text[]);

-- A delivery is recorded in the statement that commits its transition (the obligation), then handed to the
-- `webhook` task queue; the sweep hands over any that never got a first attempt. Deleted with the job.
create table if not exists public.pip_ai_webhook_deliveries (
  job_id uuid not null references public.pip_ai_image_jobs (id) on delete cascade,
  event text not null check (event in ('running', 'succeeded', 'failed', 'canceled')),
  webhook_id text not null unique check (char_length(webhook_id) between 1 and 255),
  state text not null default 'pending' check (state in ('pending', 'delivered', 'gone', 'refused', 'failed')),
  attempts integer not null default 0 check (attempts >= 0),
  last_status integer,
  reason text check (reason is null or char_length(reason) <= 500),
  delivered_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (job_id, event)
);
-- The sweep: deliveries never attempted, oldest first.
create index if not exists pip_ai_webhook_deliveries_pending_idx
  on public.pip_ai_webhook_deliveries (created_at) where state = 'pending' and attempts = 0;

alter table public.pip_ai_webhook_deliveries enable row level security;
-- Service-only: the API renders deliveries on GET /jobs/{id}; no client role reads or writes the table.
revoke all on public.pip_ai_webhook_deliveries from public, anon, authenticated;
