-- Project access, row level security, realtime and change notifications.

-- Supabase provides auth.uid() and the anon/authenticated roles; plain Postgres (local dev, tests)
-- gets equivalents so the same policies can be exercised there.
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin;
  end if;
end
$$;

create schema if not exists auth;

do $$
begin
  if not exists (
    select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'auth' and p.proname = 'uid'
  ) then
    execute $f$
      create function auth.uid() returns uuid language sql stable as
      $body$ select nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $body$
    $f$;
  end if;
end
$$;

-- Deployments may replace this body to read the builder's own projects table; the API and the RLS
-- policies both go through it.
create or replace function public.pip_ai_can_access_project(p_project_id uuid, p_user_id uuid)
returns boolean
language sql
stable
security definer
set search_path = public
as $$
  select exists (
    select 1 from public.pip_ai_project_members m
    where m.project_id = p_project_id and m.user_id = p_user_id
  )
$$;

alter table public.pip_ai_project_members enable row level security;
alter table public.pip_ai_image_jobs enable row level security;
alter table public.pip_ai_image_variants enable row level security;
alter table public.pip_ai_image_messages enable row level security;
alter table public.pip_ai_webhook_receipts enable row level security;

drop policy if exists pip_ai_project_members_select on public.pip_ai_project_members;
create policy pip_ai_project_members_select on public.pip_ai_project_members
  for select to authenticated using (user_id = auth.uid());

drop policy if exists pip_ai_image_jobs_select on public.pip_ai_image_jobs;
create policy pip_ai_image_jobs_select on public.pip_ai_image_jobs
  for select to authenticated using (public.pip_ai_can_access_project(project_id, auth.uid()));

drop policy if exists pip_ai_image_variants_select on public.pip_ai_image_variants;
create policy pip_ai_image_variants_select on public.pip_ai_image_variants
  for select to authenticated using (
    exists (
      select 1 from public.pip_ai_image_jobs j
      where j.id = job_id and public.pip_ai_can_access_project(j.project_id, auth.uid())
    )
  );

drop policy if exists pip_ai_image_messages_select on public.pip_ai_image_messages;
create policy pip_ai_image_messages_select on public.pip_ai_image_messages
  for select to authenticated using (public.pip_ai_can_access_project(project_id, auth.uid()));
-- Writes go through the service (service role bypasses RLS); clients only read. No policy on receipts.

grant usage on schema public to authenticated;
grant select on public.pip_ai_project_members, public.pip_ai_image_jobs, public.pip_ai_image_variants,
  public.pip_ai_image_messages to authenticated;

do $$
begin
  if exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
    if not exists (
      select 1 from pg_publication_tables
      where pubname = 'supabase_realtime' and tablename = 'pip_ai_image_jobs'
    ) then
      alter publication supabase_realtime add table public.pip_ai_image_jobs;
    end if;
    if not exists (
      select 1 from pg_publication_tables
      where pubname = 'supabase_realtime' and tablename = 'pip_ai_image_variants'
    ) then
      alter publication supabase_realtime add table public.pip_ai_image_variants;
    end if;
  end if;
end
$$;

-- Every change of a job row is announced on channel pip_ai_job_events (payload: job id and status),
-- which feeds the server-sent events stream without polling.
create or replace function public.pip_ai_notify_job_change() returns trigger
language plpgsql as $$
begin
  perform pg_notify('pip_ai_job_events', json_build_object('id', new.id, 'status', new.status)::text);
  return new;
end
$$;

drop trigger if exists pip_ai_image_jobs_notify on public.pip_ai_image_jobs;
create trigger pip_ai_image_jobs_notify
  after insert or update on public.pip_ai_image_jobs
  for each row execute function public.pip_ai_notify_job_change();
