-- Demo data for `docker compose --profile demo up`: the user the demo job is enqueued for, and
-- its kind.
-- Idempotent; run by the `seed` service after `migrate` (which creates auth.users on plain
-- PostgreSQL through migrations/0001).
\set ON_ERROR_STOP on
insert into auth.users (id, email)
values ('00000000-0000-4000-8000-000000000001', 'demo@example.test')
on conflict do nothing;
-- The demo enqueues a `render` job, possibly before the worker has started and registered
-- the kinds it serves (migration 0017 refuses jobs of unknown kinds): declare it.
insert into public.studio_kinds (kind, declared_by)
values ('render', 'docker/seed.sql')
on conflict do nothing;
