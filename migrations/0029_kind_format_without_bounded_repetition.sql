-- The kind's format CHECK, cheaper: the same names accepted, a fifth of the cost (issue 19).
--
-- `studio_jobs_kind_format` (0002) is evaluated on every insert and on every update of a job
-- (PostgreSQL checks every CHECK of the new row on UPDATE), so three times per job: enqueue,
-- claim, completion. Its bounded repetition `{0,63}` makes PostgreSQL's regular expression
-- engine work per character: 1.8 µs for "bench" and 4.7 µs for "render.thumbnail_v2" per
-- evaluation on this project's machine, 12 % of a bulk insert's CPU in `perf`. The same rule
-- written as an unbounded class plus a length test costs 0.3 µs for both
-- (`select count(*) … where k ~ …` over 1,000,000 names, docs/benchmarks.md).
--
-- Rule: unchanged. A kind is 1 to 64 characters of a-z 0-9 _ . - starting with a letter: the
-- class admits only those one-byte characters, so `octet_length` is the number of characters.
-- `known_kinds::the_kind_format_accepts_exactly_what_the_old_expression_accepted` compares the
-- two expressions over generated and edge-case names. The constraint keeps its name, so a
-- refused insert still reports `studio_jobs_kind_format` (23514), which the API and the library
-- map as before.
--
-- Lock: the table's ACCESS EXCLUSIVE lock for the two catalog changes only. The new constraint
-- is added NOT VALID, so no row is read under that lock: every existing row satisfied the old
-- expression, which accepts exactly the same names. New and updated rows are checked as
-- before; `alter table public.studio_jobs validate constraint studio_jobs_kind_format` may be
-- run at any time and takes only a SHARE UPDATE EXCLUSIVE lock. Measured on 1,000,000 jobs in
-- docs/benchmarks.md.
--
-- Role model: unchanged.

alter table public.studio_jobs
  drop constraint studio_jobs_kind_format,
  add constraint studio_jobs_kind_format
    check (kind ~ '^[a-z][a-z0-9_.-]*$' and octet_length(kind) <= 64) not valid;

select public.studio_mark_schema(29);
