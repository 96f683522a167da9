//! Sessions live in the database: they outlive a restart, every replica honours them, signing
//! out ends them everywhere, and the table holds nothing a client could present.

use sqlx::PgPool;

use crate::harness::TestDashboard;

/// Whether `signed`'s session opens the overview (200) or is sent to sign in (303).
async fn opens(signed: &crate::harness::Signed) -> bool {
    match signed.get("/").await.status().as_u16() {
        200 => true,
        303 => false,
        other => panic!("GET / answered {other}"),
    }
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn a_session_outlives_a_restart_and_serves_every_replica(pool: PgPool) {
    let first = TestDashboard::start(&pool).await;
    let olivia = first.sign_in("olivia").await;
    let other = TestDashboard::start(&pool).await;
    // another replica reads and writes with the same cookie and CSRF token
    let there = olivia.on(&other);
    assert!(opens(&there).await);
    let paused = there.post("/kinds/render/pause", &[]).await;
    assert_eq!(
        paused.status().as_u16(),
        303,
        "a write on the other replica"
    );
    let by: String = sqlx::query_scalar("select actor from public.studio_operator_actions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(by, "olivia");
    // the replica she signed in on stops; a new one starts: still signed in
    first.finished().await;
    let restarted = TestDashboard::start(&pool).await;
    let again = olivia.on(&restarted);
    assert!(opens(&again).await, "signed out by a restart");
    // signing out on one replica ends the session on all of them
    assert_eq!(again.post("/logout", &[]).await.status().as_u16(), 303);
    assert!(!opens(&there).await, "still signed in on the other replica");
    assert!(!opens(&again).await);
    other.finished().await;
    restarted.finished().await;
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn the_table_holds_no_cookie_and_sessions_end_when_they_should(pool: PgPool) {
    let d = TestDashboard::start(&pool).await;
    let victor = d.sign_in("victor").await;
    let alice = d.sign_in("alice").await;
    let id = victor.cookie.split_once('=').unwrap().1.to_owned();
    let rows: Vec<(Vec<u8>, String)> = sqlx::query_as(
        "select id_sha256, operator from public.studio_dashboard_sessions order by operator",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    let stored = format!("{rows:?}");
    for secret in [&id, &victor.csrf] {
        assert!(!stored.contains(secret.as_str()));
    }
    assert!(rows.iter().all(|(key, _)| hex::encode(key) != id));
    // an expired session is refused
    sqlx::query(
        "update public.studio_dashboard_sessions set expires_at = now() where operator = 'victor'",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert!(!opens(&victor).await, "an expired session was accepted");
    assert!(opens(&alice).await);
    // a replica where alice's token was rotated refuses her old session, and one where she
    // is now a viewer gives her a viewer's rights
    let rotated = TestDashboard::with(
        &pool,
        &[(
            "STUDIO_DASHBOARD__OPERATORS__ALICE__SHA256",
            "0000000000000000000000000000000000000000000000000000000000000001",
        )],
    )
    .await;
    assert!(
        !opens(&alice.on(&rotated)).await,
        "a rotated token's session"
    );
    let demoted = TestDashboard::with(
        &pool,
        &[("STUDIO_DASHBOARD__OPERATORS__ALICE__ROLE", "viewer")],
    )
    .await;
    let as_viewer = alice.on(&demoted);
    assert!(opens(&as_viewer).await);
    let refused = as_viewer.post("/kinds/render/pause", &[]).await;
    assert_eq!(
        refused.status().as_u16(),
        403,
        "the role comes from the configuration"
    );
    // the next sign-in deletes expired rows
    let _olivia = d.sign_in("olivia").await;
    let left: Vec<String> =
        sqlx::query_scalar("select operator from public.studio_dashboard_sessions order by 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(left, ["alice", "olivia"]);
    d.finished().await;
    rotated.finished().await;
    demoted.finished().await;
}

#[sqlx::test(migrator = "studio_worker::db::MIGRATOR")]
async fn end_users_and_the_api_cannot_read_sessions_or_the_users_summary(pool: PgPool) {
    let d = TestDashboard::start(&pool).await;
    let _alice = d.sign_in("alice").await;
    let user = crate::harness::create_user(&pool).await;
    for role in ["anon", "authenticated", "studio_api"] {
        for table in ["studio_dashboard_sessions", "studio_user_hour"] {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("set local role {role}")))
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("select set_config('request.jwt.claims', $1, true)")
                .bind(serde_json::json!({"sub": user, "role": role}).to_string())
                .execute(&mut *tx)
                .await
                .unwrap();
            let read = sqlx::query(sqlx::AssertSqlSafe(format!("select * from public.{table}")))
                .fetch_all(&mut *tx)
                .await;
            match read {
                Err(sqlx::Error::Database(e)) => {
                    assert_eq!(e.code().as_deref(), Some("42501"), "{role} on {table}")
                }
                other => panic!("{role} reads {table}: {other:?}"),
            }
        }
    }
    d.finished().await;
}
