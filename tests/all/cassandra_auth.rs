//! The Cassandra sink's login, against the node that takes only one (`cassandra-auth` in
//! `scripts/services`: PasswordAuthenticator and CassandraAuthorizer). Rows land as a role that
//! may only modify its keyspace, in plain text and over TLS; a wrong password, no login at all,
//! and a role without MODIFY stop the pipeline with an error that says which instead of
//! retrying forever; the password never shows, in the error or in what `weir run` prints.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;

use crate::support::{
    append_numbered, cassandra_auth_nodes, line_count, refusal, run_pipeline, unique, weir,
};

/// The node's superuser: Cassandra's default role, which `scripts/services` leaves as it is.
const SUPERUSER: (&str, &str) = ("cassandra", "cassandra");

/// A session as the superuser. The node creates that role just after it starts listening, so
/// a refused login is retried until it is there.
async fn superuser() -> Session {
    let nodes = cassandra_auth_nodes();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        match SessionBuilder::new()
            .known_node(&nodes)
            .user(SUPERUSER.0, SUPERUSER.1)
            .build()
            .await
        {
            Ok(session) => return session,
            Err(error) => assert!(
                tokio::time::Instant::now() < deadline,
                "cannot log in to {nodes} as the superuser `cassandra`: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A keyspace with table `t (id bigint PRIMARY KEY)`, and a role that logs in with `password`
/// and holds `permission` on the keyspace. Returns the keyspace's and the role's names.
async fn keyspace_and_role(admin: &Session, permission: &str, password: &str) -> (String, String) {
    let keyspace = unique("auth_ks");
    let role = unique("weir_writer");
    for statement in [
        format!(
            "CREATE KEYSPACE {keyspace} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
        ),
        format!("CREATE TABLE {keyspace}.t (id bigint PRIMARY KEY)"),
        format!("CREATE ROLE {role} WITH PASSWORD = '{password}' AND LOGIN = true"),
        format!("GRANT {permission} ON KEYSPACE {keyspace} TO {role}"),
    ] {
        admin
            .query_unpaged(statement.as_str(), &[])
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    (keyspace, role)
}

/// A pipeline from the file `input` into `keyspace.t`, logging in with `login` (TOML keys, or
/// empty for none).
fn landing(input: &Path, keyspace: &str, login: &str, dlq: &Path) -> String {
    format!(
        r#"
        [[pipeline]]
        name = "cassandra-with-a-login"
        source = {{ type = "file", path = "{input}" }}
        dead_letter = {{ type = "file", path = "{dlq}" }}
        [pipeline.sink]
        type = "cassandra"
        nodes = ["{nodes}"]
        keyspace = "{keyspace}"
        table = "t"
        consistency = "one"
        columns = {{ id = "n" }}
        {login}
        "#,
        input = input.display(),
        dlq = dlq.display(),
        nodes = cassandra_auth_nodes(),
    )
}

/// A folder (kept while it is bound) with `records` numbered records in `in.jsonl`, and the
/// path of its dead-letter file.
fn scene(records: u64) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    append_numbered(&input, 0..records);
    let dlq = dir.path().join("dlq.jsonl");
    (dir, input, dlq)
}

fn login(role: &str, password: &str) -> String {
    format!("username = \"{role}\"\npassword = \"{password}\"")
}

async fn ids(admin: &Session, keyspace: &str) -> BTreeSet<i64> {
    admin
        .query_unpaged(format!("SELECT id FROM {keyspace}.t"), &[])
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows::<(i64,)>()
        .unwrap()
        .map(|row| row.unwrap().0)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_land_as_a_role_that_may_only_modify_its_keyspace() {
    let admin = superuser().await;
    let password = unique("pw-lands");
    let (keyspace, role) = keyspace_and_role(&admin, "MODIFY", &password).await;
    let (_dir, input, dlq) = scene(300);

    let report = run_pipeline(&landing(&input, &keyspace, &login(&role, &password), &dlq)).await;

    assert_eq!(report.records_out, 300);
    assert_eq!(ids(&admin, &keyspace).await, (0..300).collect());
    assert_eq!(line_count(&dlq), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_goes_over_tls_too() {
    let ca = std::env::var("WEIR_TLS_CA").unwrap_or_else(|_| {
        panic!(
            "WEIR_TLS_CA is not set: start the services with `scripts/services start` and run `eval \"$(scripts/services env)\"`"
        )
    });
    let admin = superuser().await;
    let password = unique("pw-tls");
    let (keyspace, role) = keyspace_and_role(&admin, "MODIFY", &password).await;
    let (_dir, input, dlq) = scene(50);
    let login_over_tls = format!(
        "{}\ntls = {{ ca_file = \"{ca}\" }}",
        login(&role, &password)
    );

    let report = run_pipeline(&landing(&input, &keyspace, &login_over_tls, &dlq)).await;

    assert_eq!(report.records_out, 50);
    assert_eq!(ids(&admin, &keyspace).await, (0..50).collect());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_or_no_login_stops_the_sink_and_says_which() {
    let admin = superuser().await;
    let password = unique("pw-right");
    let (keyspace, role) = keyspace_and_role(&admin, "MODIFY", &password).await;
    let (_dir, input, dlq) = scene(10);

    let wrong = unique("pw-wrong");
    let error = refusal(&landing(&input, &keyspace, &login(&role, &wrong), &dlq)).await;
    assert!(
        error.contains(&format!("refused to log in role `{role}`"))
            && error.contains("`username` and `password`"),
        "{error}"
    );
    assert!(!error.contains(&wrong), "the password shows: {error}");

    let error = refusal(&landing(&input, &keyspace, "", &dlq)).await;
    assert!(
        error.contains("requires a login") && error.contains("`username`"),
        "{error}"
    );

    assert!(ids(&admin, &keyspace).await.is_empty());
    assert_eq!(line_count(&dlq), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_that_may_not_modify_the_table_stops_the_sink() {
    let admin = superuser().await;
    let password = unique("pw-reader");
    let (keyspace, role) = keyspace_and_role(&admin, "SELECT", &password).await;
    let (_dir, input, dlq) = scene(10);

    let error = refusal(&landing(&input, &keyspace, &login(&role, &password), &dlq)).await;

    assert!(error.contains("MODIFY"), "{error}");
    assert!(ids(&admin, &keyspace).await.is_empty());
    assert_eq!(line_count(&dlq), 0);
}

#[test]
fn weir_run_never_prints_the_password_it_was_refused_with() {
    let (dir, input, dlq) = scene(10);
    let wrong = unique("pw-never-shown");
    // The password comes from the environment, as README advises.
    let pipeline = landing(
        &input,
        "no_such_keyspace",
        "username = \"cassandra\"\npassword = \"${WEIR_TEST_CASSANDRA_PASSWORD}\"",
        &dlq,
    );
    let file = dir.path().join("pipeline.toml");
    std::fs::write(&file, pipeline).unwrap();

    let output = weir()
        .current_dir(dir.path())
        .args(["run", "pipeline.toml", "--no-admin", "--no-watch"])
        .env("WEIR_LOG", "debug")
        .env("WEIR_TEST_CASSANDRA_PASSWORD", &wrong)
        .output()
        .expect("the weir binary runs");

    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{printed}");
    assert!(
        printed.contains("refused to log in role `cassandra`"),
        "{printed}"
    );
    assert!(!printed.contains(&wrong), "the password shows: {printed}");
}
