-- Demo data for `docker compose --profile demo up`: the user the demo job is enqueued for.
-- Idempotent; run by the `seed` service after `migrate` (which creates auth.users on plain
-- PostgreSQL through migrations/0001).
\set ON_ERROR_STOP on
insert into auth.users (id, email)
values ('00000000-0000-4000-8000-000000000001', 'demo@example.test')
on conflict do nothing;
-- Its kind, render, is declared by `migrate`, which runs with the workers' configuration.
