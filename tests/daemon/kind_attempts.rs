//! `studio-worker enqueue` and a kind's `max_attempts` (migration 0021): with `--config` the
//! configuration's value is used, without it the database's (what the kind's replicas or
//! `migrate` stated); `--max-attempts` wins over both.

use sqlx::PgPool;
use studio_worker::control::kinds::Kinds;

use crate::harness::{ConfigFile, WORKER_LOGIN, create_user, database_url, run_command};

async fn enqueue(url: &str, user: &str, config: Option<&ConfigFile>, extra: &[&str]) -> uuid::Uuid {
    let mut args = vec!["enqueue", "--user", user, "--kind", "render"];
    args.extend_from_slice(extra);
    let (code, out) = run_command(&args, url, config, &[]).await;
    assert_eq!(code, 0, "{out}");
    out.trim().parse().expect("a job id")
}

async fn attempts_of(pool: &PgPool, job: uuid::Uuid) -> i32 {
    sqlx::query_scalar("select max_attempts from public.studio_jobs where id = $1")
        .bind(job)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn enqueue_gives_a_job_its_kinds_attempts_with_or_without_a_configuration(pool: PgPool) {
    // Arrange: the database knows render with 5 attempts; a configuration says 8.
    let user = create_user(&pool).await.to_string();
    Kinds::new(pool.clone())
        .declare_with("render", Some("test"), Some(5))
        .await
        .unwrap();
    let url = database_url(&pool, WORKER_LOGIN, None);
    let config = ConfigFile::new(
        "[kinds.render]\nexecutor = \"command\"\ncommand = [\"/bin/true\"]\nmax_attempts = 8\n",
    );

    // Act
    let without = enqueue(&url, &user, None, &[]).await;
    let with = enqueue(&url, &user, Some(&config), &[]).await;
    let own = enqueue(&url, &user, Some(&config), &["--max-attempts", "2"]).await;

    // Assert
    assert_eq!(attempts_of(&pool, without).await, 5, "the database's");
    assert_eq!(attempts_of(&pool, with).await, 8, "the configuration's");
    assert_eq!(attempts_of(&pool, own).await, 2, "the command line's");
}
