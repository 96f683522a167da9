//! One-shot commands: migrate, enqueue, --help.

use sqlx::PgPool;

use crate::harness::{
    BIN, ConfigFile, WORKER_LOGIN, create_user, database_url, run_command, worker_pool,
};

#[sqlx::test(migrations = false)]
async fn migrate_applies_the_schema_once_and_then_has_nothing_to_do(pool: PgPool) {
    let owner = pool.connect_options().get_username().to_owned();
    let url = database_url(&pool, &owner, None);

    let (code, first) = run_command(&["migrate"], &url, None, &[]).await;
    assert_eq!(code, 0, "{first}");
    assert!(first.contains("schema migrated to version"), "{first}");
    let (code, second) = run_command(&["migrate"], &url, None, &[]).await;
    assert_eq!(code, 0, "{second}");
    assert!(second.contains("nothing to do"), "{second}");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn enqueue_prints_the_new_jobs_id_and_refuses_unknown_users(pool: PgPool) {
    let user = create_user(&pool).await;
    let worker = worker_pool(&pool).await;
    let url = database_url(&pool, WORKER_LOGIN, None);
    let user_arg = user.to_string();

    let (code, out) = run_command(
        &[
            "enqueue",
            "--user",
            &user_arg,
            "--kind",
            "render",
            "--input",
            "{\"frames\": 4}",
            "--priority",
            "-5",
        ],
        &url,
        None,
        &[],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let id: uuid::Uuid = out.trim().parse().expect("a job id");
    let (priority, input): (i16, serde_json::Value) =
        sqlx::query_as("select priority, input from public.studio_jobs where id = $1")
            .bind(id)
            .fetch_one(&worker)
            .await
            .unwrap();
    assert_eq!((priority, input), (-5, serde_json::json!({ "frames": 4 })));

    let ghost = uuid::Uuid::new_v4().to_string();
    let (code, out) = run_command(
        &["enqueue", "--user", &ghost, "--kind", "render"],
        &url,
        None,
        &[],
    )
    .await;
    assert_eq!(code, 1);
    assert!(out.contains(&format!("unknown user {ghost}")), "{out}");
    let (code, out) = run_command(
        &[
            "enqueue", "--user", &user_arg, "--kind", "render", "--input", "{oops",
        ],
        &url,
        None,
        &[],
    )
    .await;
    assert_eq!(code, 1);
    assert!(out.contains("--input is not valid JSON"), "{out}");
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn enqueue_from_a_jobs_file_checks_every_line_first_and_prints_the_ids_in_order(
    pool: PgPool,
) {
    let user = create_user(&pool).await;
    let worker = worker_pool(&pool).await;
    let url = database_url(&pool, WORKER_LOGIN, None);
    let user_arg = user.to_string();
    let file = std::env::temp_dir().join(format!("studio-jobs-{}.ndjson", uuid::Uuid::new_v4()));
    let run = |args: Vec<String>| {
        let url = url.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_command(&args, &url, None, &[]).await
        }
    };
    let args = |extra: &[&str]| {
        let mut args = vec!["enqueue".to_owned(), "--jobs-file".to_owned()];
        args.push(file.to_string_lossy().into_owned());
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    };

    // A malformed line: nothing is inserted, and the line is named.
    std::fs::write(
        &file,
        format!("{{\"user\": \"{user}\", \"kind\": \"render\"}}\n{{oops\n"),
    )
    .unwrap();
    let (code, out) = run(args(&[])).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("line 2 is not a job"), "{out}");
    let count: i64 = sqlx::query_scalar("select count(*) from public.studio_jobs")
        .fetch_one(&worker)
        .await
        .unwrap();
    assert_eq!(count, 0);

    // Lines take --user and --kind where they leave them out, and keep their own fields.
    std::fs::write(
        &file,
        "{\"input\": {\"n\": 1}}\n{\"input\": {\"n\": 2}, \"priority\": -3}\n{\"input\": {\"n\": 3}, \"kind\": \"echo\"}\n",
    )
    .unwrap();
    let (code, out) = run(args(&["--user", &user_arg, "--kind", "render"])).await;
    assert_eq!(code, 0, "{out}");
    let ids: Vec<uuid::Uuid> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert_eq!(ids.len(), 3, "{out}");
    for (n, id) in ids.iter().enumerate() {
        let (kind, priority, input): (String, i16, serde_json::Value) = sqlx::query_as(
            "select kind, priority, input from public.studio_jobs where id = $1 and user_id = $2",
        )
        .bind(id)
        .bind(user)
        .fetch_one(&worker)
        .await
        .unwrap();
        let expected = [("render", 0), ("render", -3), ("echo", 0)][n];
        assert_eq!((kind.as_str(), priority), expected);
        assert_eq!(input, serde_json::json!({ "n": n + 1 }));
    }

    // An unknown kind: the database refuses the batch, the output says what was enqueued.
    std::fs::write(&file, "{\"kind\": \"rendr\"}\n").unwrap();
    let (code, out) = run(args(&["--user", &user_arg])).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("enqueued 0 of 1 jobs: lines none"), "{out}");
    assert!(out.contains("known kinds:"), "{out}");
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn help_documents_every_subcommand() {
    let output = tokio::process::Command::new(BIN)
        .arg("--help")
        .output()
        .await
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    for command in [
        "run",
        "api",
        "migrate",
        "enqueue",
        "jobs",
        "kinds",
        "schedules",
        "stats",
        "prune",
    ] {
        assert!(
            help.contains(command),
            "{command} missing from --help:\n{help}"
        );
    }
}

/// Jobs in every status for the operator-command tests: (pending, running, failed, cancelled).
async fn mixed_jobs(pool: &PgPool, user: uuid::Uuid) -> [uuid::Uuid; 4] {
    use studio_worker::queue::{ClaimRequest, Failure, NewJob, Queue, WorkerId};
    let queue = Queue::new(worker_pool(pool).await);
    let pending = queue
        .enqueue(&NewJob::new(user, "upscale", serde_json::json!({})))
        .await
        .unwrap();
    let running = queue
        .enqueue(&NewJob::new(user, "render", serde_json::json!({})))
        .await
        .unwrap();
    let failed = queue
        .enqueue(&NewJob::new(user, "render", serde_json::json!({})))
        .await
        .unwrap();
    let cancelled = queue
        .enqueue(&NewJob::new(user, "render", serde_json::json!({})))
        .await
        .unwrap();
    queue.cancel(cancelled).await.unwrap();
    let me = WorkerId::generate();
    let kinds = vec!["render".to_owned()];
    let claimed = queue
        .claim(&ClaimRequest {
            worker: &me,
            kinds: &kinds,
            limit: 2,
            lease: std::time::Duration::from_secs(60),
            now: None,
        })
        .await
        .unwrap();
    let to_fail = claimed.iter().find(|j| j.id == failed).unwrap();
    queue
        .fail(
            &to_fail.lease(&me),
            &Failure::Permanent {
                error: "bad scene".into(),
            },
        )
        .await
        .unwrap();
    assert!(claimed.iter().any(|j| j.id == running));
    [pending, running, failed, cancelled]
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn operators_list_show_retry_and_cancel_jobs(pool: PgPool) {
    let user = create_user(&pool).await;
    let [pending, _running, failed, _cancelled] = mixed_jobs(&pool, user).await;
    let url = database_url(&pool, WORKER_LOGIN, None);

    let (code, out) = run_command(
        &["jobs", "list", "--status", "failed", "--json"],
        &url,
        None,
        &[],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], failed.to_string());
    let (code, out) = run_command(
        &["jobs", "list", "--kind", "render", "--json"],
        &url,
        None,
        &[],
    )
    .await;
    assert_eq!(code, 0);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.len(), 3);
    let created: Vec<&str> = listed
        .iter()
        .map(|j| j["created_at"].as_str().unwrap())
        .collect();
    assert!(
        created.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {created:?}"
    );
    let (code, table) = run_command(&["jobs", "list"], &url, None, &[]).await;
    assert_eq!(code, 0);
    assert!(
        table.contains("4 job(s)") && table.contains("bad scene"),
        "{table}"
    );
    // At 80 columns every line fits and no status is cut (`succeede|d`).
    for args in [
        &["jobs"][..],
        &["kinds"],
        &["stats"],
        &["jobs", "show", &failed.to_string()],
    ] {
        let (code, narrow) = run_command(args, &url, None, &[("COLUMNS", "80")]).await;
        assert_eq!(code, 0, "{narrow}");
        for line in narrow.lines() {
            assert!(
                line.chars().count() <= 80,
                "{args:?} at 80 columns:\n{narrow}"
            );
        }
        if args.len() == 1 && args[0] == "jobs" {
            for status in ["pending", "running", "failed", "cancelled"] {
                assert!(
                    narrow.contains(&format!(" {status} ")),
                    "{status} cut:\n{narrow}"
                );
            }
        }
    }
    // `jobs` alone lists, like `kinds`, `quotas` and `schedules`, and takes the list's filters.
    let (code, alone) = run_command(&["jobs"], &url, None, &[]).await;
    assert_eq!(code, 0, "{alone}");
    assert!(
        alone.contains("4 job(s)") && alone.contains("bad scene"),
        "{alone}"
    );
    let (code, out) = run_command(&["jobs", "--status", "failed", "--json"], &url, None, &[]).await;
    assert_eq!(code, 0, "{out}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{out}");

    let (code, shown) = run_command(&["jobs", "show", &failed.to_string()], &url, None, &[]).await;
    assert_eq!(code, 0);
    assert!(
        shown.contains("history:") && shown.contains("running") && shown.contains("bad scene"),
        "{shown}"
    );

    let (code, out) = run_command(&["jobs", "retry", &failed.to_string()], &url, None, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("now pending"), "{out}");
    let (code, out) = run_command(&["jobs", "retry", &pending.to_string()], &url, None, &[]).await;
    assert_eq!(code, 1);
    assert!(out.contains("cannot be retried: it is pending"), "{out}");
    let (code, out) = run_command(
        &["jobs", "cancel", &pending.to_string(), "--json"],
        &url,
        None,
        &[],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let cancelled: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(cancelled["status"], "cancelled");

    let history: Vec<(String, String)> = sqlx::query_as(
        "select from_status, to_status from public.studio_job_events where job_id = $1 order by id",
    )
    .bind(failed)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        history.last().unwrap(),
        &("failed".to_owned(), "pending".to_owned()),
        "retry is in the history"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn stats_count_jobs_by_kind_status_and_worker(pool: PgPool) {
    let user = create_user(&pool).await;
    mixed_jobs(&pool, user).await;
    let url = database_url(&pool, WORKER_LOGIN, None);

    let (code, out) = run_command(&["stats", "--json"], &url, None, &[]).await;

    assert_eq!(code, 0, "{out}");
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    let counts: Vec<(String, String, i64)> = stats["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
                c["count"].as_i64().unwrap(),
            )
        })
        .collect();
    let expect = |k: &str, s: &str, n: i64| (k.to_owned(), s.to_owned(), n);
    assert_eq!(
        counts,
        vec![
            expect("render", "cancelled", 1),
            expect("render", "failed", 1),
            expect("render", "running", 1),
            expect("upscale", "pending", 1)
        ]
    );
    assert_eq!(stats["oldest_pending"][0]["kind"], "upscale");
    assert_eq!(stats["workers"][0]["running"], 1);
    let (code, human) = run_command(&["stats"], &url, None, &[]).await;
    assert_eq!(code, 0);
    assert!(
        human.contains("upscale") && human.contains("running:"),
        "{human}"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn prune_deletes_only_old_finished_jobs_and_their_history(pool: PgPool) {
    let user = create_user(&pool).await;
    let [pending, running, failed, cancelled] = mixed_jobs(&pool, user).await;
    // Age everything: finished jobs by finished_at, the others by their creation (which prune
    // must ignore). Timestamps only; no status changes.
    sqlx::query(
        "update public.studio_jobs set created_at = now() - interval '90 days',
                finished_at = case when finished_at is not null then now() - interval '40 days' end",
    )
    .execute(&pool)
    .await
    .unwrap();
    let url = database_url(&pool, WORKER_LOGIN, None);

    let (code, out) = run_command(
        &["prune", "--older-than", "30d", "--batch-size", "1"],
        &url,
        None,
        &[],
    )
    .await;

    assert_eq!(code, 0, "{out}");
    assert!(out.contains("deleted 2 finished job(s)"), "{out}");
    let left: Vec<uuid::Uuid> = sqlx::query_scalar("select id from public.studio_jobs order by id")
        .fetch_all(&pool)
        .await
        .unwrap();
    let mut expected = vec![pending, running];
    expected.sort();
    assert_eq!(left, expected);
    let orphans: i64 =
        sqlx::query_scalar("select count(*) from public.studio_job_events where job_id = any($1)")
            .bind(vec![failed, cancelled])
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(orphans, 0);
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn kinds_pause_resume_and_list_through_the_binary(pool: PgPool) {
    let user = create_user(&pool).await;
    mixed_jobs(&pool, user).await;
    let url = database_url(&pool, WORKER_LOGIN, None);
    let paused = || async {
        sqlx::query_scalar::<_, String>("select kind from public.studio_paused_kinds order by kind")
            .fetch_all(&pool)
            .await
            .unwrap()
    };

    let (code, out) = run_command(&["kinds", "pause", "upscale"], &url, None, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("kind upscale paused"), "{out}");
    assert_eq!(paused().await, vec!["upscale"]);
    let (code, out) = run_command(&["kinds", "pause", "upscale"], &url, None, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("already paused"), "{out}");

    let (code, out) = run_command(&["kinds", "--json"], &url, None, &[]).await;
    assert_eq!(code, 0, "{out}");
    let kinds: serde_json::Value = serde_json::from_str(&out).unwrap();
    let summary: Vec<(String, bool, i64, i64)> = kinds
        .as_array()
        .unwrap()
        .iter()
        // Known kinds without jobs are listed too (the harness declares the tests' kinds).
        .filter(|k| ["render", "upscale"].contains(&k["kind"].as_str().unwrap()))
        .map(|k| {
            (
                k["kind"].as_str().unwrap().to_owned(),
                k["paused"].as_bool().unwrap(),
                k["pending"].as_i64().unwrap(),
                k["running"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("render".to_owned(), false, 0, 1),
            ("upscale".to_owned(), true, 1, 0)
        ]
    );
    let (code, human) = run_command(&["kinds"], &url, None, &[]).await;
    assert_eq!(code, 0, "{human}");
    assert!(
        human.contains("paused") && human.contains("active"),
        "{human}"
    );

    for bad in ["Upscale", "no such kind", ""] {
        let (code, out) = run_command(&["kinds", "pause", bad], &url, None, &[]).await;
        assert_eq!(code, 2, "{bad:?}: {out}");
        assert!(out.contains("invalid kind name"), "{out}");
    }
    let (code, out) = run_command(&["kinds", "pause", "upscaler"], &url, None, &[]).await;
    assert_eq!(code, 2, "a typo pauses nothing: {out}");
    assert!(
        out.contains("unknown job kind \"upscaler\"")
            && out.contains("known kinds: ")
            && out.contains("upscale"),
        "{out}"
    );
    assert_eq!(
        paused().await,
        vec!["upscale"],
        "a refused pause changes nothing"
    );

    let (code, out) = run_command(&["kinds", "resume", "upscale", "--json"], &url, None, &[]).await;
    assert_eq!(code, 0, "{out}");
    let resumed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(resumed["changed"], true);
    assert!(paused().await.is_empty());
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn operator_changes_record_who_acted_without_a_user_variable(pool: PgPool) {
    let url = database_url(&pool, WORKER_LOGIN, None);
    let by = || async {
        sqlx::query_scalar::<_, String>(
            "select paused_by from public.studio_paused_kinds where kind = 'render'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    // As in containers and cron: no $USER, no $LOGNAME.
    let host = [("HOSTNAME", "box-7")];
    let (code, out) = run_command(&["kinds", "declare", "render"], &url, None, &host).await;
    assert_eq!(code, 0, "{out}");
    let declared_by: String =
        sqlx::query_scalar("select declared_by from public.studio_kinds where kind = 'render'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(declared_by, format!("role:{WORKER_LOGIN}@box-7"));
    let (code, out) = run_command(&["kinds", "pause", "render"], &url, None, &host).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(by().await, format!("role:{WORKER_LOGIN}@box-7"));
    let (code, out) = run_command(&["kinds", "resume", "render"], &url, None, &[]).await;
    assert_eq!(code, 0, "{out}");

    let (code, out) = run_command(
        &["--as", "ana", "kinds", "pause", "render"],
        &url,
        None,
        &host,
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(by().await, "ana@box-7");

    let env = [("USER", "deploy"), ("HOSTNAME", "box-7")];
    let (code, out) = run_command(
        &["quotas", "set", "render", "--max-unfinished", "3"],
        &url,
        None,
        &env,
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let quota_by: String =
        sqlx::query_scalar("select updated_by from public.studio_quotas where kind = 'render'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(quota_by, "deploy@box-7");
}

/// `n` jobs of `kind` failed for good with `error`.
async fn failed_jobs(
    pool: &PgPool,
    user: uuid::Uuid,
    kind: &str,
    error: &str,
    n: usize,
) -> Vec<uuid::Uuid> {
    use studio_worker::queue::{ClaimRequest, Failure, NewJob, Queue, WorkerId};
    let queue = Queue::new(worker_pool(pool).await);
    let jobs: Vec<NewJob> = (0..n)
        .map(|_| NewJob::new(user, kind, serde_json::json!({})))
        .collect();
    let ids = queue.enqueue_many(&jobs).await.unwrap();
    let me = WorkerId::generate();
    let kinds = vec![kind.to_owned()];
    let claimed = queue
        .claim(&ClaimRequest {
            worker: &me,
            kinds: &kinds,
            limit: u32::try_from(n).unwrap(),
            lease: std::time::Duration::from_secs(60),
            now: None,
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), n);
    for job in &claimed {
        queue
            .fail(
                &job.lease(&me),
                &Failure::Permanent {
                    error: error.into(),
                },
            )
            .await
            .unwrap();
    }
    ids
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn jobs_retry_with_status_moves_matching_jobs_back_in_batches_with_history(pool: PgPool) {
    let user = create_user(&pool).await;
    let timeouts = failed_jobs(&pool, user, "render", "upstream timeout", 7).await;
    let broken = failed_jobs(&pool, user, "render", "bad scene", 2).await;
    let other_kind = failed_jobs(&pool, user, "upscale", "upstream timeout", 2).await;
    let url = database_url(&pool, WORKER_LOGIN, None);
    let status_of = |ids: Vec<uuid::Uuid>| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "select distinct status from public.studio_jobs where id = any($1)",
            )
            .bind(ids)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let filters = [
        "jobs",
        "retry",
        "--status",
        "failed",
        "--kind",
        "render",
        "--error-like",
        "%TIMEOUT%",
        "--since",
        "1h",
        "--batch-size",
        "3",
    ];

    let mut dry = filters.to_vec();
    dry.extend(["--dry-run", "--json"]);
    let (code, out) = run_command(&dry, &url, None, &[]).await;
    assert_eq!(code, 0, "{out}");
    let counted: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(counted["would_retry"], 7);
    assert_eq!(
        status_of(timeouts.clone()).await,
        vec!["failed"],
        "a dry run changes nothing"
    );

    let (code, out) = run_command(&filters, &url, None, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("retried 7 failed job(s)"), "{out}");
    assert_eq!(status_of(timeouts.clone()).await, vec!["pending"]);
    assert_eq!(status_of(broken.clone()).await, vec!["failed"]);
    assert_eq!(status_of(other_kind.clone()).await, vec!["failed"]);
    let retries: i64 = sqlx::query_scalar(
        "select count(*) from public.studio_job_events
          where job_id = any($1) and from_status = 'failed' and to_status = 'pending'",
    )
    .bind(&timeouts)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(retries, 7, "each retry is in the history");

    let (code, out) = run_command(
        &["jobs", "retry", "--status", "failed", "--json"],
        &url,
        None,
        &[],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let all: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(all["retried"], 4);

    let (code, out) =
        run_command(&["jobs", "retry", "--status", "succeeded"], &url, None, &[]).await;
    assert_eq!(code, 2, "{out}");
    let (code, out) = run_command(&["jobs", "retry"], &url, None, &[]).await;
    assert_eq!(code, 2, "{out}");
}

#[sqlx::test(migrations = false)]
async fn migrate_declares_the_kinds_of_its_configuration(pool: PgPool) {
    let owner = pool.connect_options().get_username().to_owned();
    let url = database_url(&pool, &owner, None);
    let config = ConfigFile::new(
        "[kinds.transcode]\nexecutor = \"command\"\ncommand = [\"/bin/cat\"]\n\
         [kinds.thumbnail]\nexecutor = \"command\"\ncommand = [\"/bin/cat\"]\n",
    );

    let (code, out) = run_command(&["migrate"], &url, Some(&config), &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("declared 2 kind(s) of the configuration: thumbnail, transcode"),
        "{out}"
    );
    let (code, again) = run_command(&["migrate"], &url, Some(&config), &[]).await;
    assert_eq!(code, 0, "{again}");
    assert!(!again.contains("declared"), "already known: {again}");

    // No replica serving them has started: jobs of them are accepted all the same.
    let user = create_user(&pool).await.to_string();
    let worker = database_url(&pool, WORKER_LOGIN, None);
    for kind in ["transcode", "thumbnail"] {
        let (code, out) = run_command(
            &["enqueue", "--user", &user, "--kind", kind],
            &worker,
            None,
            &[],
        )
        .await;
        assert_eq!(code, 0, "{kind}: {out}");
    }
    let declared_by: Vec<(String, Option<String>)> = sqlx::query_as(
        "select kind, declared_by from public.studio_kinds
              where kind in ('thumbnail', 'transcode') order by kind",
    )
    .fetch_all(&worker_pool(&pool).await)
    .await
    .unwrap();
    assert_eq!(
        declared_by,
        vec![
            ("thumbnail".to_owned(), Some("migrate".to_owned())),
            ("transcode".to_owned(), Some("migrate".to_owned())),
        ]
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn jobs_why_explains_and_every_cli_change_is_in_the_audit_trail(pool: PgPool) {
    let user = create_user(&pool).await;
    let url = database_url(&pool, WORKER_LOGIN, None);
    let queue = studio_worker::queue::Queue::new(pool.clone());
    let job = queue
        .enqueue(&studio_worker::queue::NewJob::new(
            user,
            "upscale",
            serde_json::json!({}),
        ))
        .await
        .unwrap();
    let job = job.to_string();
    let (code, out) = run_command(&["jobs", "why", &job], &url, None, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("no live replica serves its kind upscale"),
        "{out}"
    );
    let env = [("USER", "ana"), ("HOSTNAME", "box-7")];
    let (code, out) = run_command(&["kinds", "pause", "upscale"], &url, None, &env).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = run_command(&["jobs", "why", &job, "--json"], &url, None, &[]).await;
    assert_eq!(code, 0, "{out}");
    let reason: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reason["reason"], "paused");
    assert_eq!(reason["by"], "ana@box-7");
    let (code, out) = run_command(&["jobs", "cancel", &job], &url, None, &env).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = run_command(&["jobs", "retry", &job], &url, None, &env).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = run_command(
        &["quotas", "set", "upscale", "--max-unfinished", "3"],
        &url,
        None,
        &env,
    )
    .await;
    assert_eq!(code, 0, "{out}");
    type Row = (
        String,
        String,
        String,
        Option<String>,
        Option<uuid::Uuid>,
        i64,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "select actor, source, action, kind, job_id, rows
               from public.studio_operator_actions order by id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let id: uuid::Uuid = job.parse().unwrap();
    let ana = "ana@box-7".to_owned();
    let cli = "cli".to_owned();
    assert_eq!(
        rows,
        vec![
            (
                ana.clone(),
                cli.clone(),
                "kind.pause".into(),
                Some("upscale".into()),
                None,
                1
            ),
            (
                ana.clone(),
                cli.clone(),
                "job.cancel".into(),
                None,
                Some(id),
                1
            ),
            (
                ana.clone(),
                cli.clone(),
                "job.retry".into(),
                None,
                Some(id),
                1
            ),
            (
                ana.clone(),
                cli.clone(),
                "quota.set".into(),
                Some("upscale".into()),
                None,
                1
            ),
        ]
    );
    // the job's history, as `jobs show` prints it, names the operator
    let (code, out) = run_command(&["jobs", "show", &job], &url, None, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("operators' actions")
            && out.contains("job.cancel")
            && out.contains("ana@box-7"),
        "{out}"
    );
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn api_without_a_listen_address_is_a_configuration_problem(pool: PgPool) {
    let url = database_url(&pool, WORKER_LOGIN, None);
    let (code, out) = run_command(&["api"], &url, None, &[]).await;
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("api.listen") && out.contains("STUDIO_API__LISTEN"),
        "{out}"
    );
}
