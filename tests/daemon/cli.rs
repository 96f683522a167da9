//! One-shot commands: migrate, enqueue, --help.

use sqlx::PgPool;

use crate::harness::{BIN, WORKER_LOGIN, create_user, database_url, run_command, worker_pool};

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

#[tokio::test]
async fn help_documents_every_subcommand() {
    let output = tokio::process::Command::new(BIN)
        .arg("--help")
        .output()
        .await
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    for command in ["run", "migrate", "enqueue"] {
        assert!(
            help.contains(command),
            "{command} missing from --help:\n{help}"
        );
    }
}
