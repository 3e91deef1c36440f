//! The `postgres` connectors under a least-privilege role, as production runs them: a role
//! that may log in and use one schema, and holds only what its owner grants it there
//! (`weir_least`, made by `scripts/services`; each test has a schema of its own, set as the
//! role's search_path through the url). Every refusal names the GRANT that cures it; the tests
//! run exactly what each error asks, as the tables' owner, until the pipeline runs, so a fix
//! that does not cure is a failure.

use std::path::Path;

use tokio_postgres::Client;

use crate::support::{
    append_numbered, line_count, postgres_client, postgres_url, read_json_lines, refusal,
    run_pipeline, run_until, unique, weir,
};

/// The role the tests' owner grants to, quoted as the refusals name it; `WEIR_POSTGRES_LEAST_URL`
/// may give its password and server, not another role.
const LEAST: &str = "\"weir_least\"";

/// `url` with its user and password replaced by `credentials` (`user:password`), searching
/// `schema` first.
fn as_role(url: &str, credentials: &str, schema: &str) -> String {
    let (_, server) = url
        .split_once("://")
        .and_then(|(_, rest)| rest.rsplit_once('@'))
        .expect("WEIR_POSTGRES_URL is postgres://user:password@host:port/db");
    let server = server.split('?').next().unwrap_or(server);
    format!("postgres://{credentials}@{server}?options=-c%20search_path%3D{schema}")
}

/// A schema of the test's own, owned by the tests' role (the tables' owner), which the least
/// role may use but not create in; and the urls of both roles searching it first.
async fn schema() -> (String, String, String) {
    let url = postgres_url();
    let schema = unique("least");
    let owner = postgres_client(&url).await;
    owner
        .batch_execute(&format!(
            "CREATE SCHEMA \"{schema}\"; GRANT USAGE ON SCHEMA \"{schema}\" TO {LEAST}"
        ))
        .await
        .unwrap();
    let (owner_credentials, _) = url
        .split_once("://")
        .and_then(|(_, rest)| rest.rsplit_once('@'))
        .unwrap();
    let owner_url = as_role(&url, owner_credentials, &schema);
    let least_url = std::env::var("WEIR_POSTGRES_LEAST_URL")
        .map(|least| {
            let (credentials, _) = least
                .split_once("://")
                .and_then(|(_, rest)| rest.rsplit_once('@'))
                .expect("WEIR_POSTGRES_LEAST_URL is postgres://user:password@host:port/db");
            as_role(&url, credentials, &schema)
        })
        .unwrap_or_else(|_| as_role(&url, "weir_least:weir-least-password", &schema));
    (schema, owner_url, least_url)
}

/// The SQL an error asks the owner to run: each `` run `...` ``.
fn asked_to_run(message: &str) -> Vec<String> {
    message
        .split("run `")
        .skip(1)
        .map(|part| part.split('`').next().unwrap().to_owned())
        .collect()
}

/// Runs, as the owner, what the refusal of `toml` asks, after checking that it is a refused
/// privilege that names `expected` among what to run; returns the refusal.
async fn grant_what_is_asked(owner: &Client, toml: &str, expected: &str) -> String {
    let message = grant_what_one_refusal_asks(owner, toml).await;
    assert!(
        asked_to_run(&message).iter().any(|sql| sql == expected),
        "expected to be asked to run `{expected}`:\n{message}"
    );
    message
}

/// Runs, as the owner, what the refusal of `toml` asks, after checking that it is a refused
/// privilege; returns the refusal.
async fn grant_what_one_refusal_asks(owner: &Client, toml: &str) -> String {
    let message = refusal(toml).await;
    assert!(message.contains("(SQLSTATE 42501)"), "{message}");
    for sql in asked_to_run(&message) {
        owner
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("`{sql}` from the refusal does not run: {e:?}"));
    }
    message
}

/// One good record (`{"n":0}`) and one that is not JSON, which the landing sink dead-letters.
fn landing(dir: &Path, url: &str, schema: &str, create_table: bool) -> String {
    let input = dir.join("in.jsonl");
    std::fs::write(&input, "{\"n\":0}\nnot json\n").unwrap();
    format!(
        r#"
        [[pipeline]]
        name = "least"
        source = {{ type = "file", path = "{}" }}
        sink = {{ type = "postgres", url = "{url}", table = "{schema}.land", key_field = "n", create_table = {create_table} }}
        dead_letter = {{ type = "postgres", url = "{url}", table = "{schema}.dead", create_table = {create_table} }}
        "#,
        input.display()
    )
}

async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_and_dead_letter_table_written_by_a_least_privilege_role_need_only_what_they_name() {
    let (schema, owner_url, least_url) = schema().await;
    let owner = postgres_client(&owner_url).await;
    let dir = tempfile::tempdir().unwrap();
    // The owner makes both tables, as the sink makes them.
    run_pipeline(&landing(dir.path(), &owner_url, &schema, true)).await;

    // With create_table on, the sink would replace the table's trigger at every start.
    let message = refusal(&landing(dir.path(), &least_url, &schema, true)).await;
    assert!(
        message.contains(&format!(
            "cannot create the table: permission denied for schema {schema} (SQLSTATE 42501)"
        )) && message.contains("set create_table = false"),
        "{message}"
    );

    // Without it, each table needs what its refusal names, and nothing more.
    // Without it, each table needs what its refusal names, and nothing more; which of the two
    // is written first is the pipeline's business.
    let least = landing(dir.path(), &least_url, &schema, false);
    let mut asked = Vec::new();
    for _ in 0..2 {
        asked.extend(asked_to_run(
            &grant_what_one_refusal_asks(&owner, &least).await,
        ));
    }
    asked.sort();
    let mut expected = vec![
        format!(
            "GRANT INSERT, SELECT, UPDATE ON \"{schema}\".\"land\" TO {LEAST}; GRANT USAGE ON SEQUENCE \"{schema}\".\"land_id_seq\" TO {LEAST}"
        ),
        format!(
            "GRANT INSERT, SELECT ON \"{schema}\".\"dead\" TO {LEAST}; GRANT USAGE ON SEQUENCE \"{schema}\".\"dead_id_seq\" TO {LEAST}"
        ),
    ];
    expected.sort();
    assert_eq!(asked, expected);
    std::fs::write(dir.path().join("in.jsonl"), "{\"n\":1}\nstill not json\n").unwrap();
    let report = run_pipeline(&least).await;
    assert_eq!((report.records_out, report.dead_lettered), (1, 1));
    assert_eq!(count(&owner, "SELECT count(*) FROM land").await, 2);
    assert_eq!(
        count(
            &owner,
            "SELECT count(*) FROM dead WHERE error LIKE 'value is not JSON%'"
        )
        .await,
        2
    );
}

/// The offsets table as the source makes it (README, PostgreSQL privileges).
const OFFSETS_DDL: &str = "CREATE TABLE weir_offsets (
    consumer TEXT NOT NULL,
    source TEXT NOT NULL,
    position BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, source))";

#[tokio::test(flavor = "multi_thread")]
async fn a_source_tails_as_a_least_privilege_role_once_its_owner_made_the_offsets_table() {
    let (schema, owner_url, least_url) = schema().await;
    let owner = postgres_client(&owner_url).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rows.jsonl");
    append_numbered(&input, 0..20);
    run_pipeline(&format!(
        r#"
        [[pipeline]]
        name = "fill"
        source = {{ type = "file", path = "{}" }}
        sink = {{ type = "postgres", url = "{owner_url}", table = "{schema}.rows", key_field = "n" }}
        dead_letter = {{ type = "file", path = "{}.dlq" }}
        "#,
        input.display(),
        input.display()
    ))
    .await;
    let out = dir.path().join("out.jsonl");
    let tail = format!(
        r#"
        [[pipeline]]
        name = "tail"
        source = {{ type = "postgres", url = "{least_url}", table = "{schema}.rows", consumer = "least" }}
        sink = {{ type = "file", path = "{}" }}
        dead_letter = {{ type = "file", path = "{}.dlq" }}
        "#,
        out.display(),
        out.display()
    );

    // Where the role may not create it, the offsets table is the owner's to make.
    let message = refusal(&tail).await;
    assert!(
        message.contains(&format!(
            "cannot create the offsets table: permission denied for schema {schema} (SQLSTATE 42501)"
        )) && message.contains(&format!("GRANT CREATE ON SCHEMA <schema> TO {LEAST}")),
        "{message}"
    );
    // Made, it is used as it is: the source creates it only where it is missing.
    owner.batch_execute(OFFSETS_DDL).await.unwrap();
    grant_what_is_asked(
        &owner,
        &tail,
        &format!("GRANT SELECT, INSERT, UPDATE ON weir_offsets TO {LEAST}"),
    )
    .await;
    grant_what_is_asked(
        &owner,
        &tail,
        &format!("GRANT SELECT ON \"{schema}\".\"rows\" TO {LEAST}"),
    )
    .await;

    let report = run_until(&tail, || out.exists() && line_count(&out) == 20).await;
    assert_eq!(report.records_out, 20);
    let numbers: Vec<u64> = read_json_lines(&out)
        .iter()
        .map(|v| v["n"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..20).collect::<Vec<_>>());
    assert_eq!(
        count(
            &owner,
            "SELECT position FROM weir_offsets WHERE consumer = 'least'"
        )
        .await,
        count(&owner, "SELECT max(id) FROM rows").await,
        "the position the role committed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_by_a_least_privilege_role_needs_the_replayed_at_column_made_by_the_owner() {
    let (schema, owner_url, least_url) = schema().await;
    let owner = postgres_client(&owner_url).await;
    let dir = tempfile::tempdir().unwrap();
    run_pipeline(&landing(dir.path(), &owner_url, &schema, true)).await;
    let out = dir.path().join("replayed.jsonl");
    let file = dir.path().join("replay.toml");
    std::fs::write(
        &file,
        format!(
            r#"
            [[pipeline]]
            name = "least"
            source = {{ type = "file", path = "unused.jsonl" }}
            sink = {{ type = "file", path = "{}" }}
            dead_letter = {{ type = "postgres", url = "{least_url}", table = "{schema}.dead", create_table = false }}
            "#,
            out.display()
        ),
    )
    .unwrap();
    let replay = || {
        weir()
            .current_dir(dir.path())
            .args(["replay", "--config"])
            .arg(&file)
            .env("WEIR_LOG", "info")
            .output()
            .unwrap()
    };

    let refused = replay();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    let table = format!("\"{schema}\".\"dead\"");
    let asked = asked_to_run(&stderr);
    assert_eq!(
        asked,
        [format!(
            "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS replayed_at TIMESTAMPTZ; GRANT SELECT, UPDATE ON {table} TO {LEAST}"
        )],
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "cannot add the replayed_at column: must be owner of table dead (SQLSTATE 42501)"
        ),
        "{stderr}"
    );
    for sql in &asked {
        owner.batch_execute(sql).await.unwrap();
    }

    let replayed = replay();
    let stderr = String::from_utf8_lossy(&replayed.stderr);
    assert!(replayed.status.success(), "{stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "not json\n");
    assert_eq!(
        count(
            &owner,
            "SELECT count(*) FROM dead WHERE replayed_at IS NOT NULL"
        )
        .await,
        1
    );
}
