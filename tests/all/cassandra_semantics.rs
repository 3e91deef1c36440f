//! What a Cassandra table holds after a stream, against the real Cassandra: a field absent from a
//! record leaves the stored value (unless `missing = "null"`), each primary key ends with its
//! last record however many updates a batch holds, and a row larger than Cassandra accepts is
//! dead-lettered while the records around it arrive; every column type the sink supports is
//! written as the table declares it; the token the sink groups rows by is the driver's; and the
//! sink connects and creates its table when the pipeline starts, leaving a failure to the first write.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use scylla::client::session::Session;
use tokio::sync::watch;
use weir::config::PipelineFile;
use weir::pipeline::{self, PipelineReport, PipelineStats};
use weir::registry::PluginSlots;

use crate::support::{
    cassandra_nodes, cassandra_session, read_json_lines, unique, wait_for, wait_for_async,
};

/// Runs the single pipeline of `toml` (a file source, no plugins) until its source ends.
async fn run_to_end(toml: &str) -> PipelineReport {
    let file = PipelineFile::parse(Path::new("test.toml"), toml).unwrap_or_else(|e| panic!("{e}"));
    let config = file.pipelines.into_iter().next().unwrap();
    let chain = pipeline::build_chain(&config, &PluginSlots::default()).unwrap();
    let (_shutdown, shutdown_rx) = watch::channel(false);
    let run = tokio::spawn(pipeline::run(
        config,
        chain,
        Arc::new(PipelineStats::default()),
        shutdown_rx,
    ));
    wait_for("the file source to end", Duration::from_secs(300), || {
        run.is_finished()
    })
    .await;
    run.await.unwrap().unwrap()
}

/// A pipeline from the JSON lines `input` into `keyspace.table` (created with `columns`, keyed
/// by `id`), dead letters to `dlq`, with `extra` appended to the sink's table and `pipeline`
/// keys (batch, limits) before it.
fn pipeline_toml(
    input: &Path,
    dlq: &Path,
    keyspace: &str,
    columns: &str,
    pipeline: &str,
    extra: &str,
) -> String {
    format!(
        r#"
        [[pipeline]]
        name = "semantics"
        source = {{ type = "file", path = "{input}" }}
        dead_letter = {{ type = "file", path = "{dlq}" }}
        {pipeline}
        [pipeline.sink]
        type = "cassandra"
        nodes = ["{nodes}"]
        keyspace = "{keyspace}"
        table = "t"
        consistency = "one"
        create = {{ primary_key = ["id"], columns = {{ {columns} }} }}
        {extra}
        "#,
        input = input.display(),
        dlq = dlq.display(),
        nodes = cassandra_nodes(),
    )
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

fn append_lines(path: &Path, lines: &[String]) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(
        lines
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .as_bytes(),
    )
    .unwrap();
}

/// The rows `query` selects.
async fn select(query: String) -> scylla::response::query_result::QueryRowsResult {
    cassandra_session()
        .await
        .query_unpaged(query, &[])
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
}

/// Every row of `keyspace.t` as id to the text columns `columns` (null as `None`).
async fn rows(keyspace: &str, columns: &[&str]) -> BTreeMap<String, Vec<Option<String>>> {
    let result = select(format!(
        "SELECT id, {} FROM {keyspace}.t",
        columns.join(", ")
    ))
    .await;
    result
        .rows::<scylla::value::Row>()
        .unwrap()
        .map(|row| {
            let mut values = row.unwrap().columns.into_iter().map(|value| {
                value.map(|value| match value {
                    scylla::value::CqlValue::Text(text) => text,
                    scylla::value::CqlValue::Int(n) => n.to_string(),
                    other => panic!("unexpected value {other:?}"),
                })
            });
            let id = values.next().flatten().unwrap();
            (id, values.collect())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_field_leaves_the_stored_value_and_missing_null_erases_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    // Two batches of two: the later records (second batch) update the keys the first wrote.
    write_lines(
        &input,
        &[
            r#"{"id":"a","email":"a@example.com","name":"Ann"}"#.into(),
            r#"{"id":"b","email":"b@example.com","name":"Bob"}"#.into(),
            r#"{"id":"a","name":"Ann Lee"}"#.into(),
            r#"{"id":"b","name":"Bob Ray","email":null}"#.into(),
        ],
    );
    let some = |s: &str| Some(s.to_owned());
    for (missing, a_email) in [
        ("", some("a@example.com")),
        (r#"missing = "unset""#, some("a@example.com")),
        (r#"missing = "null""#, None),
    ] {
        let keyspace = unique("weir_missing");
        let dlq = dir.path().join(format!("{keyspace}.jsonl"));
        let report = run_to_end(&pipeline_toml(
            &input,
            &dlq,
            &keyspace,
            r#"id = "text", email = "text", name = "text""#,
            "batch = { size = 2, linger_ms = 1000 }",
            missing,
        ))
        .await;
        assert_eq!(
            (report.records_out, report.dead_lettered),
            (4, 0),
            "{missing:?}"
        );
        let stored = rows(&keyspace, &["email", "name"]).await;
        assert_eq!(
            stored["a"],
            [a_email, some("Ann Lee")],
            "a record without `email` ({missing:?})"
        );
        assert_eq!(
            stored["b"],
            [None, some("Bob Ray")],
            "`email: null` erases the stored email ({missing:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_updates_to_ten_keys_end_with_each_key_holding_its_last() {
    // Rows in batches of up to ten (the default), where one request holds several updates of a
    // key, and one insert per row, where a key's updates race in separate requests.
    for requests in ["", "rows_per_request = 1"] {
        updates_to_ten_keys_end_with_each_key_holding_its_last(requests).await;
    }
}

async fn updates_to_ten_keys_end_with_each_key_holding_its_last(requests: &str) {
    const UPDATES: usize = 1_000;
    const KEYS: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    // Every record sets `seq`; one in seven also sets `note`, which the others leave alone.
    let lines: Vec<String> = (0..UPDATES)
        .map(|i| {
            let note = if i % 7 == 0 {
                format!(r#","note":"from {i}""#)
            } else {
                String::new()
            };
            format!(r#"{{"id":"key-{}","seq":{i}{note}}}"#, i % KEYS)
        })
        .collect();
    write_lines(&input, &lines);
    let keyspace = unique("weir_order");
    let dlq = dir.path().join("dlq.jsonl");
    // 25 updates of each key per batch, and room for all of them in flight at once.
    let report = run_to_end(&pipeline_toml(
        &input,
        &dlq,
        &keyspace,
        r#"id = "text", seq = "int", note = "text""#,
        "batch = { size = 250, linger_ms = 1000 }",
        &format!("concurrency = 256\n{requests}"),
    ))
    .await;
    assert_eq!(
        (report.records_out, report.dead_lettered),
        (UPDATES as u64, 0)
    );
    let stored = rows(&keyspace, &["seq", "note"]).await;
    assert_eq!(stored.len(), KEYS);
    for key in 0..KEYS {
        let last = (0..UPDATES).filter(|i| i % KEYS == key).max().unwrap();
        let last_note = (0..UPDATES)
            .filter(|i| i % KEYS == key && i % 7 == 0)
            .max()
            .unwrap();
        assert_eq!(
            stored[&format!("key-{key}")],
            [Some(last.to_string()), Some(format!("from {last_note}"))],
            "key-{key} holds its last update, and the last note any update set ({requests:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_row_is_dead_lettered_and_the_records_around_it_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    // 20 MiB: over Cassandra's 16 MiB request and mutation limits (scripts/services.d keeps
    // their defaults), within the pipeline's raised record limit.
    let huge = "x".repeat(20 << 20);
    write_lines(
        &input,
        &[
            r#"{"id":"before","body":"small"}"#.into(),
            format!(r#"{{"id":"huge","body":"{huge}"}}"#),
            r#"{"id":"after","body":"small"}"#.into(),
        ],
    );
    // Unset, the server's own refusal decides; set, the sink does not send the row at all.
    for (limit, reason) in [
        ("", "the row is"),
        (
            "max_mutation_bytes = 1048576",
            "more than max_mutation_bytes (1048576)",
        ),
    ] {
        let keyspace = unique("weir_oversized");
        let dlq = dir.path().join(format!("{keyspace}.jsonl"));
        let report = run_to_end(&pipeline_toml(
            &input,
            &dlq,
            &keyspace,
            r#"id = "text", body = "text""#,
            "limits = { max_record_bytes = 67108864 }",
            limit,
        ))
        .await;
        assert_eq!(
            (report.records_in, report.records_out, report.dead_lettered),
            (3, 2, 1),
            "{limit:?}"
        );
        let dead = read_json_lines(&dlq);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0]["headers"]["weir.source.offset"], "2");
        let error = dead[0]["headers"]["weir.error"].as_str().unwrap();
        assert!(
            error.contains(&format!("{keyspace}.t")) && error.contains(reason),
            "{limit:?}: {error}"
        );
        let stored = rows(&keyspace, &["body"]).await;
        assert_eq!(
            stored.keys().collect::<Vec<_>>(),
            ["after", "before"],
            "{limit:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_supported_column_type_is_written_as_the_table_declares_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let dlq = dir.path().join("dlq.jsonl");
    let keyspace = unique("weir_types");
    let id = "0f9c6f0e-5d0b-4b8f-9a57-6a1c0a2b9e11";
    // A version-1 (time-based) UUID, which a timeuuid column requires.
    let time_id = "50554d6e-29bb-11e5-b345-feff819cdc9f";
    let record = serde_json::json!({
        "id": "a", "u": id, "tu": time_id, "n": 7, "big": 1_099_511_627_776_i64,
        "yes": true, "x": 2.5, "at": "1970-01-01T00:00:01.500Z", "code": "ab\"c",
        "num": 12345, "ms": 42,
    });
    write_lines(&input, &[record.to_string()]);
    let columns = r#"id = "text", u = "uuid", tu = "timeuuid", n = "int", big = "bigint", yes = "boolean", x = "double", at = "timestamp", code = "ascii", num = "text", ms = "timestamp""#;
    let report = run_to_end(&pipeline_toml(&input, &dlq, &keyspace, columns, "", "")).await;
    assert_eq!(
        (report.records_out, report.dead_lettered),
        (1, 0),
        "dead letters: {}",
        std::fs::read_to_string(&dlq).unwrap_or_default()
    );
    let result = select(format!(
        "SELECT u, tu, n, big, yes, x, at, code, num, ms FROM {keyspace}.t WHERE id = 'a'"
    ))
    .await;
    type Stored = (
        uuid::Uuid,
        scylla::value::CqlTimeuuid,
        i32,
        i64,
        bool,
        f64,
        scylla::value::CqlTimestamp,
        String,
        String,
        scylla::value::CqlTimestamp,
    );
    let (u, tu, n, big, yes, x, at, code, num, ms) = result.single_row::<Stored>().unwrap();
    assert_eq!(u.to_string(), id);
    assert_eq!(uuid::Uuid::from(tu).to_string(), time_id);
    assert_eq!((n, big, yes, x), (7, 1 << 40, true, 2.5));
    assert_eq!((at.0, ms.0), (1500, 42));
    assert_eq!((code.as_str(), num.as_str()), ("ab\"c", "12345"));
}

/// Names mean exactly what they say: a mixed-case column (which CQL folds to lower case unless
/// quoted) is created, found and written as written, from a record field of the same name.
#[tokio::test(flavor = "multi_thread")]
async fn mixed_case_column_names_are_created_and_written_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let dlq = dir.path().join("dlq.jsonl");
    let keyspace = unique("weir_case");
    write_lines(
        &input,
        &[serde_json::json!({"id": "a", "firstName": "Ada", "lastname": "Lovelace"}).to_string()],
    );
    let columns = r#"id = "text", firstName = "text", lastname = "text""#;
    let report = run_to_end(&pipeline_toml(&input, &dlq, &keyspace, columns, "", "")).await;
    assert_eq!(
        (report.records_out, report.dead_lettered),
        (1, 0),
        "dead letters: {}",
        std::fs::read_to_string(&dlq).unwrap_or_default()
    );
    let result = select(format!(
        "SELECT \"firstName\", lastname FROM {keyspace}.t WHERE id = 'a'"
    ))
    .await;
    let (first, last) = result.single_row::<(String, String)>().unwrap();
    assert_eq!((first.as_str(), last.as_str()), ("Ada", "Lovelace"));
}

/// The sink groups rows by the replicas of their partition key's token, which it computes from
/// the key's values alone (`partition_token`). For a key of each supported type, and a
/// composite key of all of them bound in another order than the key's, it must equal the
/// driver's own `calculate_token` over the whole row, for which the server's metadata decides.
#[tokio::test(flavor = "multi_thread")]
async fn the_sinks_partition_token_is_the_drivers_for_every_key_type_and_composite_keys() {
    use std::borrow::Cow;
    use weir::connectors::cassandra::{Cell, partition_token};

    let keyspace = unique("weir_tokens");
    let session = cassandra_session().await;
    session
        .query_unpaged(
            format!("CREATE KEYSPACE {keyspace} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"),
            &[],
        )
        .await
        .unwrap();
    let text = |t: &str| Cell::Text(Cow::Owned(t.to_owned()));
    let time_id = uuid::Uuid::parse_str("50554d6e-29bb-11e5-b345-feff819cdc9f").unwrap();
    // Column, type, and values to key rows by.
    let types: Vec<(&str, &str, Vec<Cell<'static>>)> = vec![
        (
            "t",
            "text",
            vec![text(""), text("a"), text("Zoë, \"quoted\"")],
        ),
        ("a", "ascii", vec![text("plain ascii")]),
        (
            "i",
            "int",
            vec![Cell::Int(0), Cell::Int(-7), Cell::Int(i32::MAX)],
        ),
        ("b", "bigint", vec![Cell::BigInt(1 << 40), Cell::BigInt(-1)]),
        (
            "f",
            "boolean",
            vec![Cell::Boolean(true), Cell::Boolean(false)],
        ),
        (
            "ts",
            "timestamp",
            vec![Cell::Timestamp(1_500), Cell::Timestamp(-1)],
        ),
        (
            "u",
            "uuid",
            vec![Cell::Uuid(uuid::Uuid::from_u128(0x0123_4567_89ab_cdef))],
        ),
        ("tu", "timeuuid", vec![Cell::Uuid(time_id)]),
        ("d", "double", vec![Cell::Double(2.5), Cell::Double(-0.0)]),
        ("ti", "tinyint", vec![Cell::TinyInt(-128), Cell::TinyInt(7)]),
        ("si", "smallint", vec![Cell::SmallInt(-300)]),
        (
            "vi",
            "varint",
            vec![
                Cell::Varint(vec![0x00, 0xff]),
                Cell::Varint(vec![0xff, 0x7f]),
                Cell::Varint(vec![0x01, 0, 0, 0, 0, 0, 0, 0, 0]),
            ],
        ),
        ("fl", "float", vec![Cell::Float(1.5), Cell::Float(-0.25)]),
        (
            "de",
            "decimal",
            vec![Cell::Decimal(weir::connectors::cassandra::Scaled {
                unscaled: vec![0x04, 0xe2],
                scale: 2,
            })],
        ),
        ("da", "date", vec![Cell::Date((1 << 31) + 19_000)]),
        ("tm", "time", vec![Cell::Time(3_600_000_000_001)]),
        (
            "ip",
            "inet",
            vec![
                Cell::Inet("10.0.0.1".parse().unwrap()),
                Cell::Inet("2001:db8::1".parse().unwrap()),
            ],
        ),
        ("bl", "blob", vec![Cell::Blob(vec![0xca, 0xfe])]),
        (
            "fli",
            "frozen<list<int>>",
            vec![Cell::List(vec![Cell::Int(1), Cell::Int(2)])],
        ),
        (
            "fse",
            "frozen<set<text>>",
            vec![Cell::List(vec![text("a"), text("b")])],
        ),
        (
            "fma",
            "frozen<map<text, bigint>>",
            vec![Cell::Map(vec![(text("k"), Cell::BigInt(5))])],
        ),
    ];
    let mut compared = 0;
    for (column, kind, values) in &types {
        let table = format!("{keyspace}.single_{column}");
        session
            .query_unpaged(
                format!("CREATE TABLE {table} ({column} {kind} PRIMARY KEY, v text)"),
                &[],
            )
            .await
            .unwrap();
        // The key's marker second, after the value's.
        let insert = session
            .prepare(format!("INSERT INTO {table} (v, {column}) VALUES (?, ?)"))
            .await
            .unwrap();
        for value in values {
            let row = [text("value"), value.clone()];
            assert_token_is_the_drivers(
                &session,
                &table,
                &insert,
                &row,
                &format!("{table}, key {value:?}"),
            );
            compared += 1;
        }
    }
    // One composite key of every type, declared in one order and bound in the reverse.
    let declared: Vec<String> = types.iter().map(|(c, k, _)| format!("{c} {k}")).collect();
    let key: Vec<&str> = types.iter().map(|(c, _, _)| *c).collect();
    let table = format!("{keyspace}.composite");
    session
        .query_unpaged(
            format!(
                "CREATE TABLE {table} ({}, v text, PRIMARY KEY (({})))",
                declared.join(", "),
                key.join(", ")
            ),
            &[],
        )
        .await
        .unwrap();
    let bound: Vec<&str> = key.iter().rev().copied().collect();
    let insert = session
        .prepare(format!(
            "INSERT INTO {table} ({}, v) VALUES ({}, ?)",
            bound.join(", "),
            vec!["?"; bound.len()].join(", ")
        ))
        .await
        .unwrap();
    for pick in 0..3 {
        let mut row: Vec<Cell<'static>> = types
            .iter()
            .rev()
            .map(|(_, _, values)| values[pick % values.len()].clone())
            .collect();
        row.push(text("value"));
        assert_token_is_the_drivers(
            &session,
            &table,
            &insert,
            &row,
            &format!("{table}, row {pick}"),
        );
        compared += 1;
    }
    // An unset key value has no token: the sink refuses such a row before it is grouped.
    let row = [text("value"), Cell::Unset];
    let single = session
        .prepare(format!(
            "INSERT INTO {keyspace}.single_t (v, t) VALUES (?, ?)"
        ))
        .await
        .unwrap();
    assert_eq!(partition_token(&single, &row), None);
    assert_eq!(compared, 37);
}

/// `partition_token` of `row` is a token, and the one the driver computes from the whole row;
/// and the replicas the sink groups it by are those the driver lists for that token.
fn assert_token_is_the_drivers(
    session: &scylla::client::session::Session,
    table: &str,
    insert: &scylla::statement::prepared::PreparedStatement,
    row: &[weir::connectors::cassandra::Cell],
    what: &str,
) {
    let driver = insert.calculate_token(&row).unwrap();
    let Some(token) = driver else {
        panic!("{what}: the driver computed no token")
    };
    assert_eq!(
        weir::connectors::cassandra::partition_token(insert, row),
        driver,
        "{what}"
    );
    let (keyspace, table) = table.split_once('.').unwrap();
    let cluster = session.get_cluster_state();
    let listed: Vec<uuid::Uuid> = cluster
        .get_token_endpoints(keyspace, table, token)
        .iter()
        .map(|(node, _)| node.host_id)
        .collect();
    let owners = weir::connectors::cassandra::Owners::of(&cluster, keyspace, table);
    let grouped_by: Vec<uuid::Uuid> = owners.replicas(token).collect();
    assert!(!listed.is_empty(), "{what}: the driver lists no replica");
    assert_eq!(grouped_by, listed, "{what}: replicas");
}

/// Whether `keyspace.t` exists, from the node's schema tables.
async fn table_exists(session: &Session, keyspace: &str) -> bool {
    session
        .query_unpaged(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = 't'",
            (keyspace,),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows_num()
        > 0
}

/// The sink of the single pipeline in `toml`, built as the pipeline builds it.
async fn build_sink(toml: &str) -> Box<dyn weir::connectors::Sink> {
    let file = PipelineFile::parse(Path::new("test.toml"), toml).unwrap_or_else(|e| panic!("{e}"));
    let config = file.pipelines.into_iter().next().unwrap();
    config.sink.build(false).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sink_connects_and_creates_its_table_at_start_before_any_write() {
    let dir = tempfile::tempdir().unwrap();
    let keyspace = unique("weir_warm");
    let toml = pipeline_toml(
        &dir.path().join("in.jsonl"),
        &dir.path().join("dlq.jsonl"),
        &keyspace,
        r#"id = "text", name = "text""#,
        "",
        "",
    );
    let sink = build_sink(&toml).await;
    let observer = cassandra_session().await;
    // Building the sink opens nothing: the pipeline must start while the node is down.
    assert!(!table_exists(&observer, &keyspace).await);
    sink.warm_up();
    wait_for_async(
        "the warm-up to create the table",
        Duration::from_secs(120),
        || table_exists(&observer, &keyspace),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warm_up_that_cannot_connect_leaves_the_first_write_to_report_it() {
    let dir = tempfile::tempdir().unwrap();
    let toml = pipeline_toml(
        &dir.path().join("in.jsonl"),
        &dir.path().join("dlq.jsonl"),
        &unique("weir_warm_down"),
        r#"id = "text""#,
        "",
        "",
    )
    // A loopback port nothing listens on: the node is down.
    .replace(&cassandra_nodes(), "127.0.0.1:1");
    let mut sink = build_sink(&toml).await;
    sink.warm_up();
    let record = weir::record::Record::from_value(r#"{"id":"a"}"#);
    let error = sink
        .write(std::slice::from_ref(&record))
        .await
        .expect_err("no node to write to");
    assert!(error.is_transient(), "a node down is retried: {error}");
}

/// The ids in `keyspace.t`, or `None` while the table does not exist.
async fn ids_in(session: &Session, keyspace: &str) -> Option<Vec<String>> {
    if !table_exists(session, keyspace).await {
        return None;
    }
    let rows = session
        .query_unpaged(format!("SELECT id FROM {keyspace}.t"), &[])
        .await
        .ok()?
        .into_rows_result()
        .ok()?;
    let mut ids: Vec<String> = rows
        .rows::<(String,)>()
        .unwrap()
        .map(|row| row.unwrap().0)
        .collect();
    ids.sort_by_key(|id| id.parse::<u64>().unwrap());
    Some(ids)
}

/// A table dropped while the sink writes to it, with `create` set: it is created again and the
/// records after the drop land in it, as the PostgreSQL sink does; the pipeline does not stop.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_dropped_mid_stream_is_created_again_when_the_sink_creates_its_table() {
    let dir = tempfile::tempdir().unwrap();
    let keyspace = unique("weir_dropped");
    let input = dir.path().join("in.jsonl");
    let numbered = |range: std::ops::Range<u64>| -> Vec<String> {
        range.map(|n| format!("{{\"id\":\"{n}\"}}")).collect()
    };
    write_lines(&input, &numbered(0..100));
    let toml = pipeline_toml(
        &input,
        &dir.path().join("dlq.jsonl"),
        &keyspace,
        r#"id = "text""#,
        "batch = { size = 20, linger_ms = 5 }",
        "",
    )
    .replace(
        &format!("path = \"{}\" }}", input.display()),
        &format!(
            "path = \"{}\", follow = true, checkpoint = \"{}\" }}",
            input.display(),
            dir.path().join("in.offset").display()
        ),
    );
    assert!(toml.contains("follow = true"), "{toml}");
    let crate::support::Spawned { shutdown, run, .. } = crate::support::spawn_pipeline(&toml);
    let observer = cassandra_session().await;
    let first: Vec<String> = (0..100).map(|n| n.to_string()).collect();
    wait_for_async("the first 100 rows", Duration::from_secs(120), || async {
        ids_in(&observer, &keyspace).await.as_ref() == Some(&first)
    })
    .await;
    observer
        .query_unpaged(format!("DROP TABLE {keyspace}.t"), &[])
        .await
        .unwrap();
    append_lines(&input, &numbered(100..200));
    let after: Vec<String> = (100..200).map(|n| n.to_string()).collect();
    wait_for_async(
        "the records after the drop in a table created again",
        Duration::from_secs(120),
        || async {
            run.is_finished() || ids_in(&observer, &keyspace).await.as_ref() == Some(&after)
        },
    )
    .await;
    assert!(!run.is_finished(), "{:?}", run.await.unwrap().map(|_| ()));
    shutdown.send(true).unwrap();
    run.await.unwrap().unwrap_or_else(|e| panic!("{e:#}"));
}
