//! TLS to PostgreSQL and Cassandra (`scripts/services` turns it on with certificates from a local
//! CA): records land in PostgreSQL as a role that may only log in over TLS and are tailed back as
//! a role that logs in with its client certificate; a Cassandra sink writes over TLS; and a
//! server whose certificate the configured CAs did not sign, or a role that needs TLS reached
//! without it, stops the pipeline with an error that says which instead of retrying forever.

use std::collections::BTreeSet;
use std::path::Path;

use weir::config::PipelineFile;

use crate::support::{
    append_numbered, cassandra_nodes, cassandra_session, line_count, postgres_url, read_json_lines,
    refusal, run_pipeline, run_until, unique,
};

/// The TLS test fixtures, from `scripts/services env`.
struct Fixtures {
    /// A role whose pg_hba.conf lines allow TLS only, with its password.
    postgres_tls_url: String,
    /// A role that logs in by client certificate, over TLS only.
    postgres_cert_url: String,
    /// The CA that signed the servers' certificates (PEM).
    ca: String,
    /// A CA that signed nothing the servers use (PEM).
    untrusted_ca: String,
    /// The client certificate of the certificate role, and its key.
    client_cert: String,
    client_key: String,
}

fn fixtures() -> Fixtures {
    // Fails loudly, naming the command, when PostgreSQL is not up.
    postgres_url();
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: start the services with `scripts/services start` and run `eval \"$(scripts/services env)\"`"
            )
        })
    };
    Fixtures {
        postgres_tls_url: var("WEIR_POSTGRES_TLS_URL"),
        postgres_cert_url: var("WEIR_POSTGRES_CERT_URL"),
        ca: var("WEIR_TLS_CA"),
        untrusted_ca: var("WEIR_TLS_UNTRUSTED_CA"),
        client_cert: var("WEIR_TLS_CLIENT_CERT"),
        client_key: var("WEIR_TLS_CLIENT_KEY"),
    }
}

/// A pipeline from the file `input` into the PostgreSQL `table` at `url`, with `tls` (a TOML
/// value, or empty for none).
fn landing(input: &Path, url: &str, table: &str, tls: &str, dlq: &Path) -> String {
    let tls = tls_key(tls);
    format!(
        r#"
        [[pipeline]]
        name = "land-over-tls"
        source = {{ type = "file", path = "{input}" }}
        sink = {{ type = "postgres", url = "{url}", table = "{table}", key_field = "n", connect_timeout_ms = 5000{tls} }}
        dead_letter = {{ type = "file", path = "{dlq}" }}
        batch = {{ size = 100, linger_ms = 10 }}
        "#,
        input = input.display(),
        dlq = dlq.display(),
    )
}

/// A pipeline tailing the PostgreSQL `table` at `url` into the file `out`.
fn tailing(url: &str, table: &str, tls: &str, out: &Path) -> String {
    let tls = tls_key(tls);
    format!(
        r#"
        [[pipeline]]
        name = "tail-over-tls"
        source = {{ type = "postgres", url = "{url}", table = "{table}", consumer = "{consumer}", poll_interval_ms = 200, connect_timeout_ms = 5000{tls} }}
        sink = {{ type = "file", path = "{out}" }}
        dead_letter = {{ type = "file", path = "{out}.dlq" }}
        batch = {{ size = 100, linger_ms = 10 }}
        "#,
        consumer = unique("tls-consumer"),
        out = out.display(),
    )
}

/// A pipeline from the file `input` into a new Cassandra table of `keyspace`, with `tls`.
fn cassandra_landing(input: &Path, keyspace: &str, tls: &str, dlq: &Path) -> String {
    format!(
        r#"
        [[pipeline]]
        name = "cassandra-over-tls"
        source = {{ type = "file", path = "{input}" }}
        dead_letter = {{ type = "file", path = "{dlq}" }}
        [pipeline.sink]
        type = "cassandra"
        nodes = ["{nodes}"]
        keyspace = "{keyspace}"
        table = "t"
        consistency = "one"
        columns = {{ id = "n" }}
        create = {{ primary_key = ["id"], columns = {{ id = "bigint" }} }}
        tls = {tls}
        "#,
        input = input.display(),
        dlq = dlq.display(),
        nodes = cassandra_nodes(),
    )
}

fn tls_key(tls: &str) -> String {
    if tls.is_empty() {
        String::new()
    } else {
        format!(", tls = {tls}")
    }
}

/// What each test starts from: the fixtures, a folder, an input file of numbered records and a
/// dead-letter file in it.
struct Scene {
    fixtures: Fixtures,
    dir: tempfile::TempDir,
    input: std::path::PathBuf,
    dlq: std::path::PathBuf,
}

fn scene(records: std::ops::Range<u64>) -> Scene {
    let fixtures = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    append_numbered(&input, records);
    let dlq = dir.path().join("dlq.jsonl");
    Scene {
        fixtures,
        dir,
        input,
        dlq,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_rows_land_and_are_tailed_over_tls_with_a_password_and_a_client_certificate() {
    let Scene {
        fixtures,
        dir,
        input,
        dlq,
    } = scene(0..300);
    let table = unique("tls_landing");

    // weir_tls may only log in over TLS (pg_hba.conf rejects it otherwise).
    let trusted = format!(r#"{{ ca_file = "{}" }}"#, fixtures.ca);
    let landed = run_pipeline(&landing(
        &input,
        &fixtures.postgres_tls_url,
        &table,
        &trusted,
        &dlq,
    ))
    .await;
    assert_eq!(landed.records_out, 300);
    assert_eq!(line_count(&dlq), 0, "nothing was dead-lettered");

    // weir_cert has no password: the server accepts it for its certificate alone.
    let with_certificate = format!(
        r#"{{ ca_file = "{}", crt_file = "{}", key_file = "{}" }}"#,
        fixtures.ca, fixtures.client_cert, fixtures.client_key
    );
    let out = dir.path().join("out.jsonl");
    let toml = tailing(&fixtures.postgres_cert_url, &table, &with_certificate, &out);
    let tailed = run_until(&toml, || line_count(&out) >= 300).await;
    assert_eq!(tailed.records_out, 300);
    let numbers: BTreeSet<u64> = read_json_lines(&out)
        .iter()
        .map(|record| record["n"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..300).collect::<BTreeSet<u64>>());

    // A name the certificate does not hold (reached at 127.0.0.1 through `hostaddr`) is
    // accepted only with `verify_hostname = false`; the chain is still checked.
    let input = dir.path().join("more.jsonl");
    append_numbered(&input, 300..310);
    let misnamed = misnamed_url(&fixtures.postgres_tls_url);
    let lenient = format!(
        r#"{{ ca_file = "{}", verify_hostname = false }}"#,
        fixtures.ca
    );
    let landed = run_pipeline(&landing(&input, &misnamed, &table, &lenient, &dlq)).await;
    assert_eq!(landed.records_out, 10);
}

/// `url` with its host replaced by a name no certificate holds, still reaching 127.0.0.1.
fn misnamed_url(url: &str) -> String {
    format!(
        "{}?hostaddr=127.0.0.1",
        url.replace("@127.0.0.1:", "@db.not-in-the-certificate.example:")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_without_tls_an_untrusted_server_or_sslmode_require_alone_stop_the_pipeline() {
    let Scene {
        fixtures,
        dir,
        input,
        dlq,
    } = scene(0..10);
    let table = unique("tls_refused");

    // The server refuses the TLS-only role in plain text: its reason, not a retry.
    let plain = refusal(&landing(
        &input,
        &fixtures.postgres_tls_url,
        &table,
        "",
        &dlq,
    ))
    .await;
    assert!(plain.contains("SQLSTATE 28000"), "{plain}");
    assert!(!plain.contains("weir-tls-password"), "{plain}");

    // A CA that did not sign the server's certificate: the handshake fails, and says how.
    let untrusting = format!(r#"{{ ca_file = "{}" }}"#, fixtures.untrusted_ca);
    for toml in [
        landing(
            &input,
            &fixtures.postgres_tls_url,
            &table,
            &untrusting,
            &dlq,
        ),
        tailing(
            &fixtures.postgres_tls_url,
            &table,
            &untrusting,
            &dir.path().join("out.jsonl"),
        ),
    ] {
        let error = refusal(&toml).await;
        assert!(
            error.contains("TLS handshake failed") && error.contains("certificate"),
            "{error}"
        );
    }

    // A certificate for another name: refused unless `verify_hostname = false`.
    let trusted = format!(r#"{{ ca_file = "{}" }}"#, fixtures.ca);
    let misnamed = misnamed_url(&fixtures.postgres_tls_url);
    let error = refusal(&landing(&input, &misnamed, &table, &trusted, &dlq)).await;
    assert!(
        error.contains("TLS handshake failed") && error.contains("hostname mismatch"),
        "{error}"
    );

    // `sslmode=require` without a `tls` table encrypts and checks against the system's CAs,
    // which do not hold the local CA: refused the same way, never sent in plain text.
    let require = format!("{}?sslmode=require", fixtures.postgres_tls_url);
    let error = refusal(&landing(&input, &require, &table, "", &dlq)).await;
    assert!(error.contains("TLS handshake failed"), "{error}");
    assert_eq!(line_count(&dlq), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cassandra_sink_writes_over_tls_and_stops_at_an_untrusted_certificate() {
    // The folder is kept (bound) until the end: it holds the input.
    let Scene {
        fixtures,
        dir: _dir,
        input,
        dlq,
    } = scene(0..200);

    let keyspace = unique("tls_ks");
    let trusted = format!(r#"{{ ca_file = "{}" }}"#, fixtures.ca);
    let report = run_pipeline(&cassandra_landing(&input, &keyspace, &trusted, &dlq)).await;
    assert_eq!(report.records_out, 200);
    let session = cassandra_session().await;
    let ids: BTreeSet<i64> = session
        .query_unpaged(format!("SELECT id FROM {keyspace}.t"), &[])
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows::<(i64,)>()
        .unwrap()
        .map(|row| row.unwrap().0)
        .collect();
    assert_eq!(ids, (0..200).collect::<BTreeSet<i64>>());

    let untrusting = format!(r#"{{ ca_file = "{}" }}"#, fixtures.untrusted_ca);
    let keyspace = unique("tls_refused_ks");
    let error = refusal(&cassandra_landing(&input, &keyspace, &untrusting, &dlq)).await;
    assert!(
        error.contains("TLS handshake") && error.contains("certificate"),
        "{error}"
    );
    assert_eq!(line_count(&dlq), 0);
}

#[test]
fn tls_files_that_cannot_be_used_are_refused_when_the_file_is_read() {
    let fixtures = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let dlq = dir.path().join("dlq.jsonl");
    let missing = dir.path().join("missing-ca.pem");
    // The key of another certificate: the server's CA signed both, but they are not a pair.
    let other_key = dir.path().join("other.key");
    std::fs::copy(
        Path::new(&fixtures.ca).with_file_name("server.key"),
        &other_key,
    )
    .unwrap();
    for (tls, key, names) in [
        (
            format!(r#"{{ ca_file = "{}" }}"#, missing.display()),
            "tls.ca_file",
            "missing-ca.pem",
        ),
        (
            format!(r#"{{ ca_file = "{}" }}"#, fixtures.client_key),
            "tls.ca_file",
            "no PEM certificate",
        ),
        (
            format!(r#"{{ crt_file = "{}" }}"#, fixtures.client_cert),
            "tls.key_file",
            "go together",
        ),
        (
            format!(
                r#"{{ crt_file = "{}", key_file = "{}" }}"#,
                fixtures.client_cert,
                other_key.display()
            ),
            "tls.key_file",
            "does not belong",
        ),
    ] {
        let toml = landing(&input, &fixtures.postgres_tls_url, "t", &tls, &dlq);
        let error = match PipelineFile::parse(Path::new("tls.toml"), &toml) {
            Ok(_) => panic!("accepted {tls}"),
            Err(error) => error.to_string(),
        };
        assert!(
            error.contains(key) && error.contains(names) && error.contains("tls.toml"),
            "{tls}: {error}"
        );
    }
}
