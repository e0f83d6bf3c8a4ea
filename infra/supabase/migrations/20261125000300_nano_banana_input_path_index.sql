-- POST /api/nano-banana/signed-urls re-signs stored inputs by path (a document keeps a block's
-- storagePath, and its signed src expires): find the jobs that use an input without scanning the table.
create index if not exists pip_ai_image_jobs_input_path_idx on public.pip_ai_image_jobs (input_path);
