-- Per job: the output size asked for and the reference images sent with the input (issue 29). The model
-- per job already has its column (`model`); which names a job may use is the service's allowlist.

alter table public.pip_ai_image_jobs
  add column if not exists resolution text check (resolution is null or resolution in ('1K', '2K', '4K'));

-- The references in the order the model gets them: [{path, mime_type, width, height, bytes}]. `references`
-- is an SQL keyword, hence the longer name.
alter table public.pip_ai_image_jobs
  add column if not exists reference_images jsonb not null default '[]'::jsonb
    check (jsonb_typeof(reference_images) = 'array' and jsonb_array_length(reference_images) <= 16);

-- Is a blob still referenced (the orphan sweep, deletions)? A reference path is looked up like input_path.
create index if not exists pip_ai_image_jobs_reference_paths_idx
  on public.pip_ai_image_jobs using gin (reference_images jsonb_path_ops)
  where reference_images <> '[]'::jsonb;

-- Members see both, like the job's other columns (20261201000200: a column is hidden until granted).
grant select (resolution, reference_images) on public.pip_ai_image_jobs to authenticated;
