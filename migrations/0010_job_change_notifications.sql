-- Live job changes for the job API's streams (issue 12).
--
-- Every status change and every progress change of a job is announced on the channel
-- `studio_job_changes`. Each API process keeps one LISTEN connection and fans the changes out to
-- its watchers in memory, so the database's work does not grow with the number of watchers.
--
-- Payload: a JSON array of changes,
--   {"job": id, "user": user_id, "event": <studio_job_events.id or null>, "from": old status
--    (status changes), "status": ...,
--    "attempt": n, "progress": 0..100, "message": progress_message}
-- Status changes carry the id of the history row 0007's trigger just wrote (triggers on the same
-- event fire in name order: studio_jobs_after_update runs before studio_jobs_changed), so a
-- stream's event ids are the history's ids and `Last-Event-ID` resumes from the history.
--
-- Cost: statement-level with transition tables, like 0007. A batch claim or completion of N jobs
-- sends ceil(N / 32) notifications, each change without its message; a progress update (one row)
-- sends one with its message. A heartbeat changes neither status nor progress and sends nothing.

create function public.studio_jobs_changed() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
  begin
    -- status changes, in chunks of 32
    perform pg_notify('studio_job_changes', chunk.payload)
      from (
        select json_agg(json_build_object(
                 'job', c.id, 'user', c.user_id, 'event', c.event, 'from', c.from_status,
                 'status', c.status,
                 'attempt', c.attempt, 'progress', c.progress))::text as payload
          from (
            select n.id, n.user_id, o.status as from_status, n.status, n.attempt, n.progress,
                   (select e.id from public.studio_job_events e
                     where e.job_id = n.id order by e.id desc limit 1) as event,
                   (row_number() over ()) / 32 as chunk_no
              from old_rows o join new_rows n on n.id = o.id
             where n.status <> o.status
          ) c
         group by c.chunk_no
      ) chunk;

    -- progress changes of jobs whose status did not change, one per notification
    perform pg_notify('studio_job_changes', json_build_array(json_build_object(
              'job', n.id, 'user', n.user_id, 'event', null, 'status', n.status,
              'attempt', n.attempt, 'progress', n.progress,
              'message', n.progress_message))::text)
      from old_rows o join new_rows n on n.id = o.id
     where n.status = o.status
       and (n.progress <> o.progress or n.progress_message is distinct from o.progress_message);
    return null;
  end
  $$;

create trigger studio_jobs_changed
  after update on public.studio_jobs
  referencing old table as old_rows new table as new_rows
  for each statement execute function public.studio_jobs_changed();

revoke all on function public.studio_jobs_changed() from public, anon, authenticated;
