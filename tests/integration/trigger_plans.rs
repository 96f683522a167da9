//! Plans of the inserts and of every statement their triggers run (issue 19): the library's
//! bulk enqueue as the worker's role, and the API's create with an idempotency key (and its
//! look-up) as `authenticated`, next to a user's backlog of 20,000 pending jobs, on a table never
//! analysed, one analysed while empty, one analysed while every job had finished, and one
//! analysed.
//!
//! EXPLAIN does not show what triggers run, so the statements go through `psql` with
//! `auto_explain` logging every nested plan to the session (`client_min_messages = log`); no
//! plan may read `studio_jobs` other than through an index (no sequential or bitmap heap scan):
//! the quota trigger counts a user's unfinished and recent jobs up to the quota, the known-kind
//! and attempts rules read `studio_kinds`, the create probes the idempotency key.

use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::{analyze, create_user, declare_kinds, drain_and_analyse};

const BACKLOG: usize = 20_000;

/// A psql script that runs `statements` (as SQL text) with every plan logged.
fn script(body: &str, generic: bool) -> String {
    format!(
        "\\set ON_ERROR_STOP on
load 'auto_explain';
set auto_explain.log_min_duration = 0;
set auto_explain.log_nested_statements = on;
set client_min_messages = log;
set plan_cache_mode = {};
{body}
",
        if generic {
            "force_generic_plan"
        } else {
            "force_custom_plan"
        }
    )
}

fn uuids(n: usize) -> String {
    let ids: Vec<String> = (0..n).map(|_| Uuid::now_v7().to_string()).collect();
    format!("'{{{}}}'::uuid[]", ids.join(","))
}

fn repeated(value: &str, n: usize) -> String {
    format!("array_fill({value}, array[{n}])")
}

/// The statements under test, as a psql script body.
fn statements(user: Uuid) -> String {
    let [(_, many), (_, create), (_, by_key)] = studio_worker::queue::insert_statements();
    let n = 1_000;
    let key = Uuid::now_v7();
    format!(
        "set role studio_worker;
prepare many as {many};
execute many({ids}, {users}, {kinds}, {inputs}, {priorities}, {run_at}, {attempts});
reset role;
begin;
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', '{{\"sub\":\"{user}\",\"role\":\"authenticated\"}}', true);
prepare create_job as {create};
execute create_job('{id}', 'render', '{{}}', 0, null, '{key}');
prepare by_key as {by_key};
execute by_key('{key}');
commit;
",
        ids = uuids(n),
        users = repeated(&format!("'{user}'::uuid"), n),
        kinds = repeated("'render'::text", n),
        inputs = repeated("'{}'::jsonb", n),
        priorities = repeated("0::int2", n),
        run_at = repeated("null::timestamptz", n),
        attempts = repeated("null::int4", n),
        id = Uuid::now_v7(),
    )
}

/// Run `script` through psql on the test's database; the plans it logged.
async fn logged_plans(pool: &PgPool, script: String) -> String {
    let options = pool.connect_options();
    let output = tokio::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .env("PGHOST", options.get_host())
        .env("PGPORT", options.get_port().to_string())
        .env("PGUSER", options.get_username())
        .env("PGDATABASE", options.get_database().unwrap_or("postgres"))
        .env("PGOPTIONS", "-c client_min_messages=log")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map(|mut child| {
            use tokio::io::AsyncWriteExt;
            let mut stdin = child.stdin.take().expect("psql's stdin");
            tokio::spawn(async move {
                stdin
                    .write_all(script.as_bytes())
                    .await
                    .expect("write the script");
            });
            child
        })
        .expect("psql must be installed (it comes with PostgreSQL)")
        .wait_with_output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "psql failed:\n{stderr}");
    stderr
}

/// Plans that read `studio_jobs` other than through an index, each with its query.
fn cliffs(log: &str) -> Vec<String> {
    log.split("LOG:  duration:")
        .filter(|plan| {
            plan.lines().any(|line| {
                let line = line.trim_start().trim_start_matches("->  ");
                line.starts_with("Seq Scan on studio_jobs ")
                    || line.starts_with("Bitmap Heap Scan on studio_jobs ")
            })
        })
        .map(str::to_owned)
        .collect()
}

async fn fill(pool: &PgPool) -> Uuid {
    declare_kinds(pool, &["render"]).await;
    // A quota the triggers must check (bounded counts), as a production table would have.
    sqlx::query(
        "insert into public.studio_quotas (kind, max_unfinished, max_created, per)
         values ('render', 5000, 5000, interval '1 hour')",
    )
    .execute(pool)
    .await
    .unwrap();
    let heavy = create_user(pool).await;
    sqlx::query(
        "insert into public.studio_jobs (user_id, kind, input)
         select $1, 'render', jsonb_build_object('i', g) from generate_series(1, $2) g",
    )
    .bind(heavy)
    .bind(i32::try_from(BACKLOG).unwrap())
    .execute(pool)
    .await
    .unwrap();
    create_user(pool).await
}

async fn check(pool: &PgPool, user: Uuid, state: &str) -> Vec<String> {
    let mut found = Vec::new();
    for generic in [false, true] {
        let log = logged_plans(pool, script(&statements(user), generic)).await;
        assert!(
            log.contains("studio_quota_holds") && log.contains("studio_kinds"),
            "the triggers' plans were not logged:\n{log}"
        );
        found.extend(
            cliffs(&log)
                .into_iter()
                .map(|plan| format!("{state}, generic = {generic}:{plan}")),
        );
    }
    found
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn inserts_and_their_triggers_read_jobs_by_index_with_or_without_statistics(pool: PgPool) {
    let user = fill(&pool).await;
    let mut problems = check(&pool, user, "never analysed").await;
    analyze(&pool).await;
    problems.extend(check(&pool, user, "analysed").await);

    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn inserts_and_their_triggers_read_jobs_by_index_after_a_burst_into_an_empty_table(
    pool: PgPool,
) {
    analyze(&pool).await;
    let user = fill(&pool).await;

    let problems = check(&pool, user, "analysed while empty").await;

    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// A burst into a queue whose last ANALYZE saw every job finished (see `drain_and_analyse`).
#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn inserts_and_their_triggers_read_jobs_by_index_after_a_burst_into_a_drained_queue(
    pool: PgPool,
) {
    drain_and_analyse(&pool).await;
    let user = fill(&pool).await;

    let problems = check(&pool, user, "analysed when every job had finished").await;

    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// The check sees a plan that reads the table whole (what it exists to refuse).
#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn the_check_sees_a_sequential_scan_of_jobs(pool: PgPool) {
    fill(&pool).await;
    let log = logged_plans(
        &pool,
        script(
            "select count(*) from public.studio_jobs where input->>'i' = '7';",
            false,
        ),
    )
    .await;
    assert_eq!(cliffs(&log).len(), 1, "{log}");
}

/// 0028: next to many watches (open API streams), a claim's triggers find its watched jobs by
/// probing the watch table's primary key once per job, not by reading every watch (0027's
/// plan: a hash of the whole table in every claim and completion, 2 ms per 500 jobs next to
/// 10,000 watches).
#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_claim_next_to_many_watches_probes_them_by_index(pool: PgPool) {
    declare_kinds(&pool, &["render"]).await;
    let user = create_user(&pool).await;
    sqlx::query(
        "insert into public.studio_jobs (user_id, kind, input)
         select $1, 'render', '{}' from generate_series(1, 500)",
    )
    .bind(user)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into public.studio_job_watches (job_id, watcher, expires_at)
         select gen_random_uuid(), 'a-000000000001', now() + interval '5 minutes'
           from generate_series(1, 2000)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let claim = "set role studio_worker;
begin;
update public.studio_jobs
   set status = 'running', attempt = attempt + 1, locked_by = 'w',
       lease_expires_at = now() + interval '1 minute', started_at = now()
 where status = 'pending';
rollback;
reset role;";

    let log = logged_plans(&pool, script(claim, false)).await;

    assert!(
        log.contains("insert into public.studio_job_events"),
        "the history trigger's plans were not logged:\n{log}"
    );
    assert!(
        log.contains("Index Scan using studio_job_watches_pkey on studio_job_watches w"),
        "{log}"
    );
    assert!(
        !log.contains("Seq Scan on studio_job_watches w"),
        "every watch was read:\n{log}"
    );
}
