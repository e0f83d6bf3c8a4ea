-- Named queries for the Postgres JobStore. Each block starts with `-- name: <name>`.
-- Every status change is one compare-and-set UPDATE ... WHERE status = ANY(...) RETURNING.

-- name: job_columns
-- (fragment) the job row plus its variants as JSON, for every query that returns jobs
j.id, j.project_id, j.user_id, j.thread_id, j.parent_job_id, j.source_variant_id, j.prompt, j.input_path,
j.input_mime_type, j.input_width, j.input_height,
j.status, j.error_code, j.error_message, j.note, j.variant_count, j.aspect_ratio, j.model, j.attempt,
j.resolution, j.reference_images,
j.created_at, j.started_at, j.finished_at, j.deadline_at, j.updated_at,
j.prompt_tokens, j.output_tokens, j.total_tokens, j.generation_ms,
coalesce((
  select json_agg(json_build_object(
    'id', v.id, 'job_id', v.job_id, 'index', v.index, 'storage_path', v.storage_path,
    'mime_type', v.mime_type, 'width', v.width, 'height', v.height, 'bytes', v.bytes,
    'created_at', v.created_at) order by v.index)
  from pip_ai_image_variants v where v.job_id = j.id
), '[]'::json) as variants,
{webhook_columns}

-- name: webhook_columns
-- (fragment) the job's webhook and its deliveries as JSON (none looked up for a job without a webhook)
j.webhook_url, j.webhook_events,
case when j.webhook_url is null then '[]'::json else coalesce((
  select json_agg(json_build_object(
    'event', w.event, 'state', w.state, 'attempts', w.attempts, 'last_status', w.last_status,
    'delivered_at', w.delivered_at, 'reason', w.reason, 'created_at', w.created_at) order by w.created_at, w.event)
  from pip_ai_webhook_deliveries w where w.job_id = j.id
), '[]'::json) end as webhook_deliveries

-- name: record_webhook
-- (fragment) a CTE recording the delivery a transition (the CTE `done`) owes, in the same statement:
-- the obligation usecases/notifying.py drains
webhook as (
  insert into pip_ai_webhook_deliveries (job_id, event, webhook_id)
  select d.id, %(webhook_event)s::text, %(webhook_id)s::text from done d
  where d.webhook_url is not null and %(webhook_event)s::text = any(d.webhook_events)
  on conflict do nothing
)

-- name: can_access
select pip_ai_can_access_project(%(project_id)s, %(user_id)s) as ok

-- name: add_member
insert into pip_ai_project_members (project_id, user_id) values (%(project_id)s, %(user_id)s)
on conflict do nothing

-- name: usage_days
-- GET /usage: a project's jobs by UTC creation day (and, the row whose day is null, over the whole range),
-- one range scan of pip_ai_image_jobs_usage_idx. totalMs percentiles over the jobs that ended.
select (j.created_at at time zone 'UTC')::date as day,
  count(*) as jobs,
  count(*) filter (where j.status = 'queued') as queued,
  count(*) filter (where j.status = 'running') as running,
  count(*) filter (where j.status = 'succeeded') as succeeded,
  count(*) filter (where j.status = 'failed') as failed,
  count(*) filter (where j.status = 'canceled') as canceled,
  coalesce(sum(j.images), 0)::bigint as images,
  coalesce(sum(j.prompt_tokens), 0)::bigint as prompt_tokens,
  coalesce(sum(j.output_tokens), 0)::bigint as output_tokens,
  coalesce(sum(j.total_tokens), 0)::bigint as total_tokens,
  percentile_cont(0.5) within group (order by extract(epoch from j.finished_at - j.created_at) * 1000)
    filter (where j.finished_at is not null) as p50_ms,
  percentile_cont(0.95) within group (order by extract(epoch from j.finished_at - j.created_at) * 1000)
    filter (where j.finished_at is not null) as p95_ms
from pip_ai_image_jobs j
where j.project_id = %(project_id)s and j.created_at >= %(start)s and j.created_at < %(end)s
group by grouping sets (((j.created_at at time zone 'UTC')::date), ())
order by day nulls last

-- name: project_budget
select monthly_images from pip_ai_project_budgets where project_id = %(project_id)s

-- name: create_job
-- A job whose input is a variant (by inputPath, or a refinement's) is inserted only while that variant's row
-- exists, and the row is locked (FOR KEY SHARE) until this insert commits: a deletion that commits first
-- makes the insert refuse (source_found false, nothing inserted); one that commits later waits, and its
-- purge then sees this job's reference and keeps the blob. An upload it borrows (an `inputs/` inputPath or
-- reference path: an upload only ever comes from a multipart creation, whose row references it) is held the
-- same way through the job rows that reference it: none left means it is being purged, and the insert
-- refuses. Always one row: the job's columns are null when nothing was inserted (the key's job exists, or
-- a source is gone: source_found / references_found say which).
with variants as materialized (
  -- The input's variant and the variants named as reference images (referencePaths), locked in one pass in
  -- id order, the order a deletion's lock_jobs takes them in: two such lockers never wait on each other in
  -- a cycle.
  select v.storage_path as path from pip_ai_image_variants v
  where v.storage_path = %(input_path)s or v.storage_path = any(%(reference_variants)s::text[])
  order by v.id for key share
), source as (
  select exists (select 1 from variants where path = %(input_path)s) as found
), refs as (
  -- Every variant named as a reference still there (the list holds each path once).
  select (select count(distinct path) from variants where path = any(%(reference_variants)s::text[]))
         = cardinality(%(reference_variants)s::text[]) as found
), uploads as (
  -- The borrowed uploads that some job row still references (as its input or a reference), those rows
  -- locked: their deletion waits for this insert, and its purge then sees this job's reference.
  select coalesce(array_agg(distinct path), '{}'::text[]) as found from (
    select p.path from unnest(%(uploads)s::text[]) as p(path)
    join pip_ai_image_jobs j on j.input_path = p.path
      or (j.reference_images @> jsonb_build_array(jsonb_build_object('path', p.path))
          and j.reference_images <> '[]'::jsonb)
    for key share of j
  ) locked
), checks as (
  select
    case when %(input_path)s::text like 'jobs/%%' then (select found from source)
         when %(input_borrowed)s then %(input_path)s::text = any(u.found)
         else true end as source_found,
    (select found from refs) and %(reference_uploads)s::text[] <@ u.found as references_found
  from uploads u
), inserted as (
  insert into pip_ai_image_jobs (
    id, project_id, user_id, thread_id, parent_job_id, source_variant_id, prompt, input_path,
    input_mime_type, input_width, input_height, variant_count, aspect_ratio, model, idempotency_key, request_hash, deadline_at,
    webhook_url, webhook_events, resolution, reference_images)
  select
    %(id)s::uuid, %(project_id)s::uuid, %(user_id)s::uuid, %(thread_id)s::uuid, %(parent_job_id)s::uuid,
    %(source_variant_id)s::uuid, %(prompt)s::text, %(input_path)s::text, %(input_mime_type)s::text,
    %(input_width)s::int, %(input_height)s::int, %(variant_count)s::smallint, %(aspect_ratio)s::text, %(model)s::text,
    %(idempotency_key)s::text, %(request_hash)s::text, %(deadline_at)s::timestamptz,
    %(webhook_url)s::text, %(webhook_events)s::text[], %(resolution)s::text, %(reference_images)s::jsonb
  where (select source_found and references_found from checks)
  on conflict (user_id, idempotency_key) where idempotency_key is not null do nothing
  returning *
), message as (
  insert into pip_ai_image_messages (id, thread_id, job_id, project_id, user_id, role, content, variant_id)
  select %(message_id)s, i.thread_id, i.id, i.project_id, i.user_id, 'user', i.prompt, i.source_variant_id
  from inserted i
  returning id
)
select {job_columns}, c.source_found, c.references_found
from checks c left join inserted j on true

-- name: discard_queued
-- A rolled-back creation: its still-queued row goes (its user message by cascade), so the
-- Idempotency-Key is free again. A CAS: a job a generate task already claimed stays, and so does one a
-- same-key retry was answered with (mark_replayed committed first).
delete from pip_ai_image_jobs where id = %(id)s and status = 'queued' and replayed_at is null returning id

-- name: mark_replayed
-- An Idempotency-Key replay hands this job out: from now on discard_queued spares it. A CAS against the
-- creation's discard (no row: the discard won, the job was never created). Not a status change: updated_at stays.
update pip_ai_image_jobs j set replayed_at = coalesce(j.replayed_at, now())
where j.id = %(id)s
returning {job_columns}

-- name: lock_thread
-- Serialises refinements of one thread (inside a transaction) so the turn limit holds under races.
select pg_advisory_xact_lock(hashtextextended(%(thread_id)s::text, 0))

-- name: thread_turns
select count(*) as turns from pip_ai_image_jobs where thread_id = %(thread_id)s

-- name: find_by_idempotency_key
select {job_columns}, j.request_hash from pip_ai_image_jobs j
where j.user_id = %(user_id)s and j.idempotency_key = %(key)s

-- name: get_job
select {job_columns} from pip_ai_image_jobs j where j.id = %(id)s

-- name: get_job_for_user
select {job_columns} from pip_ai_image_jobs j
where j.id = %(id)s and pip_ai_can_access_project(j.project_id, %(user_id)s)

-- name: list_jobs
select {job_columns} from pip_ai_image_jobs j
where j.project_id = %(project_id)s
  and (%(status)s::text is null or j.status = %(status)s::text)
  and (%(after_created)s::timestamptz is null or (j.created_at, j.id) < (%(after_created)s::timestamptz, %(after_id)s::uuid))
order by j.created_at desc, j.id desc
limit %(limit)s

-- name: claim_for_generation
with done as (
  update pip_ai_image_jobs j
  set status = 'running', attempt = attempt + 1, started_at = coalesce(started_at, now()), updated_at = now()
  where j.id = %(id)s and j.status = any(%(from_statuses)s) and j.deadline_at > %(now)s
  returning *
), {record_webhook}
select {job_columns} from done j

-- name: thread_history
with recursive chain as (
  select p.*, 1 as depth from pip_ai_image_jobs p
  where p.id = (select parent_job_id from pip_ai_image_jobs where id = %(id)s)
  union all
  select p.*, c.depth + 1 from pip_ai_image_jobs p join chain c on p.id = c.parent_job_id
  where c.depth < 1000
)
select {job_columns} from chain j order by j.depth desc

-- name: complete
with done as (
  update pip_ai_image_jobs
  set status = 'succeeded', finished_at = now(), updated_at = now(), note = %(note)s,
    images = jsonb_array_length(%(uploads)s::jsonb), prompt_tokens = %(prompt_tokens)s::int,
    output_tokens = %(output_tokens)s::int, total_tokens = %(total_tokens)s::int, generation_ms = %(generation_ms)s::int
  where id = %(id)s and status = 'running' and attempt = %(attempt)s and deadline_at > %(now)s
  returning *
), variants as (
  insert into pip_ai_image_variants (id, job_id, index, storage_path, mime_type, width, height, bytes)
  select u.id, d.id, u.index, u.storage_path, u.mime_type, u.width, u.height, u.bytes
  from done d, jsonb_to_recordset(%(uploads)s::jsonb)
    as u(id uuid, index int, storage_path text, mime_type text, width int, height int, bytes int)
  returning *
), message as (
  insert into pip_ai_image_messages (thread_id, job_id, project_id, user_id, role, content, variant_id)
  select d.thread_id, d.id, d.project_id, d.user_id, 'assistant', %(content)s, %(first_variant_id)s from done d
), receipt as (
  -- the callback delivery that caused this transition is applied in the same transaction
  update pip_ai_webhook_receipts r set state = 'applied' from done d where r.webhook_id = %(receipt)s::text
), {record_webhook}
select j.id, j.project_id, j.user_id, j.thread_id, j.parent_job_id, j.source_variant_id, j.prompt, j.input_path,
j.input_mime_type, j.input_width, j.input_height,
  j.input_mime_type, j.input_width, j.input_height,
  j.status, j.error_code, j.error_message, j.note, j.variant_count, j.aspect_ratio, j.model, j.attempt,
  j.resolution, j.reference_images,
  j.created_at, j.started_at, j.finished_at, j.deadline_at, j.updated_at,
  j.prompt_tokens, j.output_tokens, j.total_tokens, j.generation_ms,
  coalesce((select json_agg(json_build_object(
    'id', v.id, 'job_id', v.job_id, 'index', v.index, 'storage_path', v.storage_path,
    'mime_type', v.mime_type, 'width', v.width, 'height', v.height, 'bytes', v.bytes,
    'created_at', v.created_at) order by v.index) from variants v), '[]'::json) as variants,
  {webhook_columns}
from done j

-- name: fail
with done as (
  update pip_ai_image_jobs
  set status = 'failed', error_code = %(code)s, error_message = %(message)s, finished_at = now(), updated_at = now(),
    images = 0, prompt_tokens = coalesce(%(prompt_tokens)s::int, prompt_tokens),
    output_tokens = coalesce(%(output_tokens)s::int, output_tokens), total_tokens = coalesce(%(total_tokens)s::int, total_tokens),
    generation_ms = coalesce(%(generation_ms)s::int, generation_ms)
  where id = %(id)s and status = any(%(from_statuses)s)
    and (%(attempt)s::int is null or attempt = %(attempt)s::int)
    and (not %(only_if_past_deadline)s or deadline_at <= %(now)s)
  returning *
), message as (
  insert into pip_ai_image_messages (thread_id, job_id, project_id, user_id, role, content)
  select d.thread_id, d.id, d.project_id, d.user_id, 'assistant', %(content)s from done d
), receipt as (
  update pip_ai_webhook_receipts r set state = 'applied' from done d where r.webhook_id = %(receipt)s::text
), {record_webhook}
select {job_columns} from done j

-- name: cancel
with done as (
  update pip_ai_image_jobs
  set status = 'canceled', finished_at = now(), updated_at = now(), images = 0
  where id = %(id)s and status = any(%(from_statuses)s)
  returning *
), message as (
  insert into pip_ai_image_messages (thread_id, job_id, project_id, user_id, role, content)
  select d.thread_id, d.id, d.project_id, d.user_id, 'assistant', %(content)s from done d
), {record_webhook}
select {job_columns} from done j

-- name: overdue_jobs
select id from pip_ai_image_jobs
where status in ('queued', 'running') and deadline_at <= %(now)s
order by deadline_at
limit %(limit)s

-- name: stale_queued_jobs
-- Queued jobs that no generate task has claimed within the grace (deadline = creation + timeout).
select {job_columns} from pip_ai_image_jobs j
where j.status = 'queued' and j.deadline_at > %(now)s and j.deadline_at <= %(deadline_before)s
order by j.deadline_at
limit %(limit)s

-- name: job_statuses
-- The sweep's reconciliation: which of these jobs still have a row, and in which state.
select id, status from pip_ai_image_jobs where id = any(%(ids)s::uuid[])

-- name: thread_messages
select m.id as message_id, m.thread_id as message_thread_id, m.job_id as message_job_id,
  m.project_id as message_project_id, m.user_id as message_user_id, m.role, m.content, m.variant_id,
  m.created_at as message_created_at, {job_columns}
from pip_ai_image_messages m join pip_ai_image_jobs j on j.id = m.job_id
where m.thread_id = %(thread_id)s
order by m.created_at, m.id

-- name: claim_webhook
-- 'claimed' when this delivery may apply (a new id, or a `processing` claim older than stale_before:
-- its delivery died); otherwise the receipt's state. No row: a concurrent delivery inserted it after
-- this statement's snapshot, so it is still processing.
with claimed as (
  insert into pip_ai_webhook_receipts as r (webhook_id, state, claimed_at)
  values (%(webhook_id)s, 'processing', %(now)s)
  on conflict (webhook_id) do update set claimed_at = excluded.claimed_at
    where r.state = 'processing' and r.claimed_at < %(stale_before)s
  returning 'claimed'::text as outcome
)
select outcome from claimed
union all
select r.state from pip_ai_webhook_receipts r
where r.webhook_id = %(webhook_id)s and not exists (select 1 from claimed)

-- name: settle_webhook
update pip_ai_webhook_receipts set state = 'applied' where webhook_id = %(webhook_id)s

-- name: prune_webhooks
delete from pip_ai_webhook_receipts where received_at < %(before)s

-- name: ping
select 1

-- name: variant_in_project
select v.id, v.job_id, v.index, v.storage_path, v.mime_type, v.width, v.height, v.bytes, v.created_at
from pip_ai_image_variants v join pip_ai_image_jobs j on j.id = v.job_id
where v.storage_path = %(path)s and j.project_id = %(project_id)s

-- name: release_webhook
-- Only this delivery's own claim (a taken-over claim has a newer claimed_at), and only while no
-- transition committed: an applied receipt is never forgotten.
delete from pip_ai_webhook_receipts
where webhook_id = %(webhook_id)s and state = 'processing' and claimed_at = %(claimed_at)s

-- name: visible_paths
-- Which of these stored images the user may see: a variant of a job in one of their projects (the job id
-- is in the path, so the lookup uses the job's key), or the input of such a job.
select p.path
from unnest(%(paths)s::text[], %(job_ids)s::uuid[]) as p(path, job_id)
where exists (
        select 1 from pip_ai_image_variants v join pip_ai_image_jobs j on j.id = v.job_id
        where v.job_id = p.job_id and v.storage_path = p.path
          and pip_ai_can_access_project(j.project_id, %(user_id)s))
   or exists (
        select 1 from pip_ai_image_jobs j
        where j.input_path = p.path and pip_ai_can_access_project(j.project_id, %(user_id)s))

-- name: subtree
-- (fragment) the CTE `tree`: the jobs of %(ids)s and every refinement made from them (children by
-- parent_job_id); with by_input also jobs whose input is one of their variants, by path, in any thread,
-- or the same upload (`inputs/`) as one of theirs, or naming one of those as a reference image. UNION (not
-- ALL) stops at visited rows.
tree as (
  select j.id, j.input_path from pip_ai_image_jobs j where j.id = any(%(ids)s::uuid[])
  union
  select c.id, c.input_path from tree t join pip_ai_image_jobs c
    on c.parent_job_id = t.id
    or (%(by_input)s and c.input_path like 'jobs/%%' and split_part(c.input_path, '/', 2) = t.id::text)
    or (%(by_input)s and t.input_path like 'inputs/%%' and c.input_path = t.input_path)
    -- jobs that name one of their variants or their upload as a reference image
    or (%(by_input)s and c.reference_images <> '[]'::jsonb and exists (
          select 1 from jsonb_array_elements(c.reference_images) r
          where r->>'path' like 'jobs/' || t.id || '/%%' or r->>'path' = t.input_path))
)

-- name: job_subtree
with recursive {subtree}
select {job_columns} from pip_ai_image_jobs j where j.id in (select id from tree)
order by j.created_at, j.id

-- name: subtree_threads
-- The jobs a deletion reaches and the threads it must lock: every thread a job of the subtree lies in
-- (erasure reaches threads of other users through jobs made from the user's variants).
with recursive {subtree}
select j.id, j.thread_id from pip_ai_image_jobs j where j.id in (select id from tree) order by j.id

-- name: lock_jobs
-- A deletion's row locks, taken before its delete: FOR UPDATE waits out every creation that holds one of
-- these jobs or their variants FOR KEY SHARE (made from them, not committed yet), so the subtree read
-- after it includes those jobs; and a creation that comes later waits for the delete, then refuses.
with jobs as (
  select j.id from pip_ai_image_jobs j where j.id = any(%(ids)s::uuid[]) order by j.id for update
), variants as (
  select v.id from pip_ai_image_variants v where v.job_id = any(%(ids)s::uuid[]) order by v.id for update
)
select (select count(*) from jobs) as jobs, (select count(*) from variants) as variants

-- name: still_expired
-- Retention, re-checked under the threads' locks: the roots whose thread still has no active job and no
-- job finished at or after the cutoff (a refinement may have landed since expired_threads read).
select r.id from pip_ai_image_jobs r
where r.id = any(%(ids)s::uuid[])
  and not exists (
    select 1 from pip_ai_image_jobs j
    where j.thread_id = r.thread_id
      and (j.status in ('queued', 'running') or coalesce(j.finished_at, j.created_at) >= %(before)s))

-- name: delete_jobs
-- One statement: the subtree's rows go (variants and messages by cascade) and their blobs are recorded
-- in pip_ai_blob_purges, so a crash before the blobs are deleted leaves work for the sweep, not orphans.
with recursive {subtree}, gone as (
  delete from pip_ai_image_jobs j where j.id in (select id from tree)
  returning j.id, j.project_id, j.user_id, j.status, j.input_path, j.deadline_at, j.idempotency_key
), purges as (
  insert into pip_ai_blob_purges (path, due_at)
  select distinct path, due_at from (
    select 'jobs/' || g.id || '/' as path, %(now)s::timestamptz as due_at from gone g
    union all
    -- While a worker of the job may still be alive, once more after its deadline: a late upload by a
    -- worker that then died goes too.
    select 'jobs/' || g.id || '/', g.deadline_at + make_interval(secs => %(late_s)s) from gone g
    where g.deadline_at + make_interval(secs => %(late_s)s) > %(now)s
    union all
    select g.input_path, %(now)s from gone g
    union all
    select unnest(%(extra)s::text[]), %(now)s
    union all
    -- An erasure's uploads folder once more later: an upload of a creation in flight during the erasure
    -- (skipped the first time, too young) goes then, unless its job was inserted (the gate keeps it).
    select unnest(%(extra)s::text[]), %(now)s::timestamptz + make_interval(secs => %(late_s)s)
  ) p
  on conflict (path, due_at) do nothing
)
select * from gone

-- name: referenced_paths
select p.path from unnest(%(paths)s::text[]) as p(path)
where exists (
        select 1 from pip_ai_image_jobs j where j.input_path = p.path and j.id <> all(%(excluding)s::uuid[]))
   or exists (
        select 1 from pip_ai_image_variants v where v.storage_path = p.path and v.job_id <> all(%(excluding)s::uuid[]))
   or exists (
        select 1 from pip_ai_image_jobs j
        where j.reference_images @> jsonb_build_array(jsonb_build_object('path', p.path))
          and j.reference_images <> '[]'::jsonb and j.id <> all(%(excluding)s::uuid[]))

-- name: due_purges
select path from pip_ai_blob_purges where due_at <= %(now)s group by path order by min(due_at), path
limit %(limit)s

-- name: finish_purges
delete from pip_ai_blob_purges where path = any(%(paths)s::text[]) and due_at <= %(now)s

-- name: expired_threads
-- Retention: threads (by their root) whose every job finished before the cutoff, none still active, oldest
-- first, as many whole threads as fit in %(limit)s jobs (at least one, however long).
with candidates as (
  select r.id, r.created_at, (select count(*) from pip_ai_image_jobs t where t.thread_id = r.id) as jobs
  from pip_ai_image_jobs r
  where r.id = r.thread_id and r.created_at < %(before)s
    and not exists (
      select 1 from pip_ai_image_jobs j
      where j.thread_id = r.id
        and (j.status in ('queued', 'running') or coalesce(j.finished_at, j.created_at) >= %(before)s))
  order by r.created_at, r.id
  limit %(limit)s
), totals as (
  select id, sum(jobs) over w as total, row_number() over w as n from candidates
  window w as (order by created_at, id)
)
select id from totals where total <= %(limit)s or n = 1 order by n

-- name: user_jobs
select id from pip_ai_image_jobs where user_id = %(user_id)s order by created_at, id

-- name: sweep_cursor
select position, updated_at from pip_ai_sweep_cursors where name = %(name)s

-- name: set_sweep_cursor
insert into pip_ai_sweep_cursors (name, position, updated_at) values (%(name)s, %(position)s, %(at)s)
on conflict (name) do update set position = excluded.position, updated_at = excluded.updated_at

-- name: record_webhook_attempt
-- One attempt's outcome, a CAS on a delivery still pending (a delivery settled meanwhile stays settled).
update pip_ai_webhook_deliveries
set state = %(state)s, attempts = attempts + 1, last_status = %(status)s, reason = %(reason)s,
  delivered_at = case when %(state)s = 'delivered' then %(now)s::timestamptz end, updated_at = %(now)s
where job_id = %(job_id)s and event = %(delivery_event)s and state = 'pending'
returning job_id

-- name: unsent_webhooks
-- The sweep: deliveries recorded before `before` that no attempt has reached (their task was never
-- enqueued or was lost), newer than `after` (past the queue's retry window nobody sends them), oldest first.
select job_id, event from pip_ai_webhook_deliveries
where state = 'pending' and attempts = 0 and created_at < %(before)s and created_at > %(after)s
order by created_at
limit %(limit)s
