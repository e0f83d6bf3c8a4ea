-- Row level security hardening: Supabase exposes the `public` schema through PostgREST to anyone holding
-- the anon key, and its default privileges grant anon/authenticated ALL on every table and EXECUTE on
-- every function created there.

-- 1. Project access. public.pip_ai_can_access_project(project, user) answers for ANY user: executable
-- through /rest/v1/rpc/ it told anyone whether any user belongs to any project. Only the service (the
-- table owner's connection) calls it now. Policies go through a wrapper bound to the caller's own
-- auth.uid(), in a schema PostgREST does not expose. Deployments still replace the two-argument function
-- (docs/deploy.md); `create or replace` keeps the privileges revoked here.
create schema if not exists pip_ai_private;
revoke all on schema pip_ai_private from public;
grant usage on schema pip_ai_private to authenticated;

create or replace function pip_ai_private.caller_can_access_project(p_project_id uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce(public.pip_ai_can_access_project(p_project_id, auth.uid()), false)
$$;
revoke all on function pip_ai_private.caller_can_access_project(uuid) from public;
grant execute on function pip_ai_private.caller_can_access_project(uuid) to authenticated;

revoke all on function public.pip_ai_can_access_project(uuid, uuid) from public, anon, authenticated;
-- A trigger function cannot be called through RPC, but nobody outside needs it either.
revoke all on function public.pip_ai_notify_job_change() from public, anon, authenticated;

drop policy if exists pip_ai_image_jobs_select on public.pip_ai_image_jobs;
create policy pip_ai_image_jobs_select on public.pip_ai_image_jobs
  for select to authenticated using (pip_ai_private.caller_can_access_project(project_id));

drop policy if exists pip_ai_image_variants_select on public.pip_ai_image_variants;
create policy pip_ai_image_variants_select on public.pip_ai_image_variants
  for select to authenticated using (
    exists (
      select 1 from public.pip_ai_image_jobs j
      where j.id = job_id and pip_ai_private.caller_can_access_project(j.project_id)
    )
  );

drop policy if exists pip_ai_image_messages_select on public.pip_ai_image_messages;
create policy pip_ai_image_messages_select on public.pip_ai_image_messages
  for select to authenticated using (pip_ai_private.caller_can_access_project(project_id));

-- 2. Clients only ever read, and only what the builder shows. Supabase's default grants gave anon and
-- authenticated every privilege (TRUNCATE and REFERENCES are not subject to RLS); writes go through the
-- service, which connects as the tables' owner.
revoke all on public.pip_ai_project_members, public.pip_ai_image_jobs, public.pip_ai_image_variants,
  public.pip_ai_image_messages, public.pip_ai_webhook_receipts from public, anon, authenticated;
grant select on public.pip_ai_project_members, public.pip_ai_image_variants, public.pip_ai_image_messages
  to authenticated;
-- 3. Jobs: every column but idempotency_key and request_hash (another member's retry key and request
-- fingerprint are not theirs to see). Realtime's postgres_changes sends a subscriber only the columns its
-- role may select (supabase/walrus: has_column_privilege per column), and needs `id` for the row check.
-- A column added later is hidden until a migration grants it.
grant select (
  id, project_id, user_id, thread_id, parent_job_id, source_variant_id, prompt, input_path, input_mime_type,
  input_width, input_height, status, error_code, error_message, note, variant_count, aspect_ratio, model,
  attempt, created_at, started_at, finished_at, deadline_at, updated_at
) on public.pip_ai_image_jobs to authenticated;

-- 4. The migration ledger of `nano-banana migrate` (absent where the Supabase CLI applies migrations):
-- in `public`, so RLS on and no client privileges; anon could read and delete it.
do $$
begin
  if to_regclass('public.nano_banana_schema_migrations') is not null then
    alter table public.nano_banana_schema_migrations enable row level security;
    revoke all on public.nano_banana_schema_migrations from public, anon, authenticated;
  end if;
end
$$;
