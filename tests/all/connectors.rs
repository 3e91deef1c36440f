//! Connector behaviour against the real services: positions committed only after
//! acknowledgement and resumed after a restart (Kafka consumer group, PostgreSQL offsets table),
//! idempotent landing writes, and records a sink refuses going to the dead-letter destination.

use std::path::Path;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use weir::pipeline::PipelineReport;

use crate::support::{
    cassandra_nodes, cassandra_session, kafka_brokers, line_count, outcome_within, postgres_client,
    postgres_url, read_json_lines, run_until, unique, wait_for,
};

/// Runs the single pipeline of `toml` until its source ends by itself.
async fn run_to_end(toml: &str) -> PipelineReport {
    run_until(toml, || false).await
}

async fn produce(brokers: &str, topic: &str, range: std::ops::Range<u32>) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for n in range {
        let payload = format!("{{\"n\":{n}}}");
        producer
            .send(
                FutureRecord::<str, str>::to(topic).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }
}

/// A new 3-partition topic named from `prefix`, holding `{"n":N}` for each N of `range`: the
/// brokers and the topic.
async fn topic_holding(prefix: &str, range: std::ops::Range<u32>) -> (String, String) {
    let brokers = kafka_brokers();
    let topic = unique(prefix);
    crate::services::create_topic(&brokers, &topic, 3).await;
    produce(&brokers, &topic, range).await;
    (brokers, topic)
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_source_resumes_from_committed_offsets() {
    let (brokers, topic) = topic_holding("resume", 0..300).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let toml = format!(
        r#"
        [[pipeline]]
        name = "kafka-resume"
        workers = 3
        source = {{ type = "kafka", brokers = "{brokers}", topics = ["{topic}"], group = "{group}" }}
        transforms = [{{ plugin = "fault-panic" }}]
        sink = {{ type = "file", path = "{out}" }}
        dead_letter = {{ type = "file", path = "{dir}/dlq.jsonl" }}
        batch = {{ size = 50, linger_ms = 20 }}
        "#,
        group = unique("group"),
        out = out.display(),
        dir = dir.path().display()
    );
    let first = run_until(&toml, || line_count(&out) >= 300).await;
    assert_eq!(first.records_out, 300);
    produce(&brokers, &topic, 300..400).await;
    let second = run_until(&toml, || line_count(&out) >= 400).await;
    assert_eq!(
        second.records_out, 100,
        "a restart resumes after the committed offsets"
    );
    let mut ns: Vec<u64> = read_json_lines(&out)
        .iter()
        .map(|r| r["n"].as_u64().unwrap())
        .collect();
    ns.sort();
    assert_eq!(ns, (0..400).collect::<Vec<_>>());
}

/// A message carrying more headers than the kafka source takes is dead-lettered without them,
/// naming their number (each header costs the host tens of bytes, two on the wire); the
/// messages around it, one of them at the limit, arrive with every header.
#[tokio::test(flavor = "multi_thread")]
async fn a_kafka_message_with_too_many_headers_is_dead_lettered_without_them() {
    use rdkafka::message::{Header, OwnedHeaders};
    use weir::connectors::kafka::MAX_HEADERS;

    let brokers = kafka_brokers();
    let topic = unique("headers");
    crate::services::create_topic(&brokers, &topic, 1).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let counts = [1, MAX_HEADERS + 1, MAX_HEADERS];
    for (n, count) in counts.into_iter().enumerate() {
        let names: Vec<String> = (0..count).map(|i| format!("h{i}")).collect();
        let headers = names.iter().fold(OwnedHeaders::new(), |headers, name| {
            headers.insert(Header {
                key: name,
                value: Some(""),
            })
        });
        let payload = format!("{{\"n\":{n}}}");
        producer
            .send(
                FutureRecord::<str, str>::to(&topic)
                    .payload(&payload)
                    .headers(headers),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let (out, dlq) = (dir.path().join("out.jsonl"), dir.path().join("dlq.jsonl"));
    let toml = format!(
        r#"
        [[pipeline]]
        name = "kafka-headers"
        source = {{ type = "kafka", brokers = "{brokers}", topics = ["{topic}"], group = "{group}" }}
        sink = {{ type = "file", path = "{out}", encoding = "envelope" }}
        dead_letter = {{ type = "file", path = "{dlq}" }}
        "#,
        group = unique("group"),
        out = out.display(),
        dlq = dlq.display()
    );
    let report = run_until(&toml, || line_count(&out) >= 2 && line_count(&dlq) >= 1).await;
    assert_eq!((report.records_out, report.dead_lettered), (2, 1));
    let delivered = read_json_lines(&out);
    let header_counts: Vec<(&str, usize)> = delivered
        .iter()
        .map(|line| {
            let headers = line["headers"].as_object().unwrap();
            let own = headers.keys().filter(|name| name.starts_with('h')).count();
            (line["value"].as_str().unwrap(), own)
        })
        .collect();
    assert_eq!(
        header_counts,
        [(r#"{"n":0}"#, 1), (r#"{"n":2}"#, MAX_HEADERS)]
    );
    let dead = read_json_lines(&dlq);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["value"], r#"{"n":1}"#);
    let headers = dead[0]["headers"].as_object().unwrap();
    let reason = headers["weir.error"].as_str().unwrap();
    assert!(
        reason.contains(&format!("message has {} headers", MAX_HEADERS + 1)),
        "{reason}"
    );
    assert!(
        headers.keys().all(|name| name.starts_with("weir.")),
        "the dead letter keeps none of the message's headers: {headers:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_sink_is_idempotent_and_the_source_resumes_from_its_offsets() {
    let url = postgres_url();
    let table = unique("landing");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    // 40 users, the last 10 repeating the first 10: the landing table keeps 30.
    let mut generator = weir::generator::UserGenerator::new(4);
    let users: Vec<String> = (0..30).map(|_| generator.next_user().to_string()).collect();
    let mut all = users.clone();
    all.extend(users[..10].iter().cloned());
    all.push("not json".into());
    std::fs::write(&input, all.join("\n") + "\n").unwrap();
    let landing_dlq = dir.path().join("landing-dlq.jsonl");
    let ingest = format!(
        r#"
        [[pipeline]]
        name = "land"
        source = {{ type = "file", path = "{input}" }}
        sink = {{ type = "postgres", url = "{url}", table = "{table}", key_field = "login.uuid" }}
        dead_letter = {{ type = "file", path = "{dlq}" }}
        batch = {{ size = 8 }}
        "#,
        input = input.display(),
        dlq = landing_dlq.display()
    );
    let landed = run_to_end(&ingest).await;
    assert_eq!(landed.records_in, 41);
    let dead = read_json_lines(&landing_dlq);
    assert_eq!(dead[0]["headers"]["weir.stage"], "sink");
    assert_eq!(dead[0]["headers"]["weir.error.kind"], "sink-rejected");

    let out = dir.path().join("tail.jsonl");
    let tail = format!(
        r#"
        [[pipeline]]
        name = "tail"
        source = {{ type = "postgres", url = "{url}", table = "{table}", consumer = "{consumer}", poll_interval_ms = 100 }}
        sink = {{ type = "file", path = "{out}" }}
        dead_letter = {{ type = "file", path = "{dir}/tail-dlq.jsonl" }}
        batch = {{ size = 7 }}
        "#,
        consumer = unique("consumer"),
        out = out.display(),
        dir = dir.path().display()
    );
    let first = run_until(&tail, || line_count(&out) >= 30).await;
    assert_eq!(first.records_out, 30, "duplicates collapsed on the key");
    // More rows arrive while nothing tails; a restart reads only those.
    let more: Vec<String> = (0..5).map(|_| generator.next_user().to_string()).collect();
    std::fs::write(&input, more.join("\n") + "\n").unwrap();
    run_to_end(&ingest).await;
    let second = run_until(&tail, || line_count(&out) >= 35).await;
    assert_eq!(second.records_out, 5);
    let ids: std::collections::BTreeSet<String> = read_json_lines(&out)
        .iter()
        .map(|r| r["login"]["uuid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 35);
}

/// A pipeline from a file of `lines` (a JSON record each) into table `table` of a new
/// keyspace named from `prefix`, at consistency ONE, with the sink's further options `sink` (its
/// `create`, `columns`, ...): the TOML, the keyspace, the folder holding the input and the
/// dead letters (removed when dropped), and the dead-letter file.
fn lines_into_cassandra(
    prefix: &str,
    table: &str,
    lines: &[&str],
    sink: &str,
) -> (String, String, tempfile::TempDir, std::path::PathBuf) {
    let keyspace = unique(prefix);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let dlq = dir.path().join("dlq.jsonl");
    let toml = format!(
        r#"
        [[pipeline]]
        name = "{table}"
        source = {{ type = "file", path = "{input}" }}
        dead_letter = {{ type = "file", path = "{dlq}" }}
        [pipeline.sink]
        type = "cassandra"
        nodes = ["{nodes}"]
        keyspace = "{keyspace}"
        table = "{table}"
        consistency = "one"
        {sink}
        "#,
        nodes = cassandra_nodes(),
        input = input.display(),
        dlq = dlq.display()
    );
    (toml, keyspace, dir, dlq)
}

/// The rows of `SELECT JSON columns FROM table`, each as Cassandra writes it (its own JSON of
/// each value, as `toJson` gives it), sorted.
async fn rows_as_cassandra_json(columns: &str, table: &str) -> Vec<String> {
    let mut rows: Vec<String> = cassandra_session()
        .await
        .query_unpaged(format!("SELECT JSON {columns} FROM {table}"), &[])
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows::<(String,)>()
        .unwrap()
        .map(|row| row.unwrap().0)
        .collect();
    rows.sort();
    rows
}

/// Runs `toml` to its end and checks the records in, out and dead-lettered, and that each dead
/// letter's reason (in order) names the column and says the words given for it.
async fn run_expecting_dead_letters(
    toml: &str,
    dlq: &Path,
    counts: (u64, u64, u64),
    reasons: &[(&str, &str)],
) {
    let report = run_to_end(toml).await;
    assert_eq!(
        (report.records_in, report.records_out, report.dead_lettered),
        counts
    );
    let said = dead_letter_reasons(dlq);
    assert_eq!(said.len(), reasons.len(), "{said:?}");
    for (reason, (column, words)) in said.iter().zip(reasons) {
        assert!(
            reason.contains(&format!("`{column}`")) && reason.contains(words),
            "{said:?}"
        );
    }
}

/// The `weir.error` header of each dead letter in `dlq`, in order.
fn dead_letter_reasons(dlq: &Path) -> Vec<String> {
    read_json_lines(dlq)
        .iter()
        .map(|d| d["headers"]["weir.error"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn cassandra_type_mismatches_are_dead_lettered_and_the_rest_written() {
    let (toml, _keyspace, _dir, dlq) = lines_into_cassandra(
        "weir_types",
        "typed",
        &[
            r#"{"id":"0f9c6f0e-5d0b-4b8f-9a57-6a1c0a2b9e11","n":1,"big":5000000000,"ok":true,"at":"2024-05-01T10:00:00Z","name":"Zoë"}"#,
            r#"{"id":"1f9c6f0e-5d0b-4b8f-9a57-6a1c0a2b9e11","n":"seven","name":"bad int"}"#,
            r#"{"id":"not-a-uuid","n":2}"#,
            r#"{"n":3}"#,
            r#"{"id":"2f9c6f0e-5d0b-4b8f-9a57-6a1c0a2b9e11","n":4,"at":1700000000000}"#,
        ],
        r#"create = { primary_key = ["id"], columns = { id = "uuid", n = "int", big = "bigint", ok = "boolean", at = "timestamp", name = "text" } }"#,
    );
    let report = run_to_end(&toml).await;
    assert_eq!(
        (report.records_in, report.records_out, report.dead_lettered),
        (5, 2, 3)
    );
    let reasons = dead_letter_reasons(&dlq);
    assert!(reasons[0].contains("`n`"), "{reasons:?}");
    assert!(reasons[1].contains("`id`"), "{reasons:?}");
    assert!(
        reasons[2].contains("primary key column `id`"),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_dead_letter_table_keeps_bytes_headers_and_reason() {
    let url = postgres_url();
    let table = unique("dead_letters");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"ok\":1}\nnot json\n").unwrap();
    let report = run_to_end(&format!(
        r#"
        [[pipeline]]
        name = "pg-dlq"
        source = {{ type = "file", path = "{input}" }}
        transforms = [{{ plugin = "pii-mask", config = {{ fields = "ok" }} }}]
        sink = {{ type = "blackhole" }}
        dead_letter = {{ type = "postgres", url = "{url}", table = "{table}" }}
        "#,
        input = input.display()
    ))
    .await;
    assert_eq!(report.dead_lettered, 1);
    let client = postgres_client(&url).await;
    let row = client
        .query_one(
            &format!("SELECT value, headers, error FROM \"{table}\""),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Vec<u8>>(0), b"not json");
    let headers: serde_json::Value = row.get(1);
    assert_eq!(headers["weir.source.offset"], "2");
    assert_eq!(headers["weir.plugin"], "pii-mask");
    assert!(row.get::<_, String>(2).contains("not valid JSON"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_landing_table_keeps_numbers_as_written() {
    // The record's own text goes to the server, which parses it into jsonb's numeric: digits
    // beyond a 64-bit float's survive, as they would with psql.
    let url = postgres_url();
    let table = unique("exact_numbers");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"id\":\"a\",\"big\":12345678901234567890123,\"fine\":0.1000000000000000055511151231257827}\n",
    )
    .unwrap();
    let report = run_to_end(&format!(
        r#"
        [[pipeline]]
        name = "exact"
        source = {{ type = "file", path = "{input}" }}
        sink = {{ type = "postgres", url = "{url}", table = "{table}", key_field = "id" }}
        dead_letter = {{ type = "file", path = "{dir}/dlq.jsonl" }}
        "#,
        input = input.display(),
        dir = dir.path().display()
    ))
    .await;
    assert_eq!((report.records_out, report.dead_lettered), (1, 0));
    let row = postgres_client(&url)
        .await
        .query_one(
            &format!("SELECT value->>'big', value->>'fine' FROM \"{table}\" WHERE key = 'a'"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        (
            "12345678901234567890123".to_owned(),
            "0.1000000000000000055511151231257827".to_owned()
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_dead_letters_records_with_nul_one_by_one_and_lands_the_rest() {
    let url = postgres_url();
    let (landing, dead_letters) = (unique("nul_landing"), unique("nul_dead_letters"));
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        [
            r#"{"id":"a","n":1}"#,
            r#"{"id":"b","note":{"text":"x\u0000y"}}"#,
            r#"{"id":"c\u0000d","n":3}"#,
            r#"{"id":"e","n":4}"#,
        ]
        .join("\n")
            + "\n",
    )
    .unwrap();
    let report = run_to_end(&format!(
        r#"
        [[pipeline]]
        name = "pg-nul"
        source = {{ type = "file", path = "{input}" }}
        sink = {{ type = "postgres", url = "{url}", table = "{landing}", key_field = "id" }}
        dead_letter = {{ type = "postgres", url = "{url}", table = "{dead_letters}" }}
        "#,
        input = input.display()
    ))
    .await;
    assert_eq!(
        (report.records_in, report.records_out, report.dead_lettered),
        (4, 2, 2)
    );
    let client = postgres_client(&url).await;
    let keys: Vec<String> = client
        .query(&format!("SELECT key FROM \"{landing}\" ORDER BY key"), &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(keys, ["a", "e"]);
    let dead: Vec<(Vec<u8>, String, serde_json::Value)> = client
        .query(
            &format!("SELECT value, error, headers FROM \"{dead_letters}\" ORDER BY id"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].0, br#"{"id":"b","note":{"text":"x\u0000y"}}"#);
    assert!(
        dead[0].1.contains("NUL") && dead[0].1.contains("`/note/text`"),
        "{}",
        dead[0].1
    );
    assert_eq!(dead[0].2["weir.source.offset"], "2");
    assert!(
        dead[1].1.contains(r"key `c\0d` holds a NUL character"),
        "{}",
        dead[1].1
    );
    assert_eq!(dead[1].2["weir.source.offset"], "3");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_dead_letter_table_stores_nul_bytes_without_loss() {
    use weir::connectors::Sink;
    use weir::connectors::postgres::{PostgresSink, PostgresSinkConfig};
    let url = postgres_url();
    let table = unique("nul_dead_letters");
    let mut sink = PostgresSink::new(
        &toml::from_str::<PostgresSinkConfig>(&format!("url = \"{url}\"\ntable = \"{table}\""))
            .unwrap(),
        true,
    )
    .unwrap();
    let mut record = weir::record::Record::from_value(b"v\0alue".to_vec());
    record.key = Some(b"k\0ey".to_vec().into());
    record.set_header("weir.error", "plugin said \0 here");
    record.set_header("weir.stage", "plugin");
    let refused = sink.write(std::slice::from_ref(&record)).await.unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    let row = postgres_client(&url)
        .await
        .query_one(
            &format!("SELECT key, value, headers, error FROM \"{table}\""),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Vec<u8>>(0), b"k\0ey");
    assert_eq!(row.get::<_, Vec<u8>>(1), b"v\0alue");
    let headers: serde_json::Value = row.get(2);
    let error = hex::decode(headers["weir.error"]["hex"].as_str().unwrap()).unwrap();
    assert_eq!(error, b"plugin said \0 here", "the header round-trips");
    assert_eq!(headers["weir.stage"], "plugin");
    assert_eq!(row.get::<_, String>(3), "plugin said \\u0000 here");
}

/// Cassandra answers both a value its column refuses and an insert into a dropped table with
/// `Invalid`; the sink tells them apart by the table's schema, not by the message. A sink that
/// creates its table creates a dropped one again (the write is retried, then lands); one that
/// does not stops (retrying or dead-lettering every record would not help).
#[tokio::test(flavor = "multi_thread")]
async fn cassandra_insert_into_a_dropped_table_is_created_again_or_fatal_never_a_dead_letter() {
    use weir::connectors::cassandra::{CassandraSink, CassandraSinkConfig};
    use weir::connectors::{ErrorKind, Sink};

    let nodes = cassandra_nodes();
    let keyspace = unique("weir_dropped");
    let create = "create = { primary_key = [\"id\"], columns = { id = \"text\", n = \"int\" } }";
    let config = |create: &str| -> CassandraSinkConfig {
        toml::from_str(&format!(
            "nodes = [\"{nodes}\"]\nkeyspace = \"{keyspace}\"\ntable = \"gone\"\nconsistency = \"one\"\n{create}\n"
        ))
        .unwrap()
    };
    let record = |id: &str| weir::record::Record::from_value(format!(r#"{{"id":"{id}","n":1}}"#));
    let session = cassandra_session().await;
    let drop_table = || async {
        session
            .query_unpaged(format!("DROP TABLE {keyspace}.gone"), &[])
            .await
            .unwrap();
    };

    // With `create`: created again.
    let mut creating = CassandraSink::new(&config(create));
    let rejected = creating
        .write(&[record("a")])
        .await
        .expect("the table is created and written");
    assert!(rejected.is_empty(), "{rejected:?}");
    drop_table().await;
    let error = creating
        .write(&[record("b"), record("c")])
        .await
        .expect_err("the insert into the dropped table fails");
    assert_eq!(error.kind, ErrorKind::Transient, "{error}");
    assert!(error.to_string().contains("created again"), "{error}");
    let rejected = creating
        .write(&[record("b"), record("c")])
        .await
        .expect("the retry writes into the table created again");
    assert!(rejected.is_empty(), "{rejected:?}");

    // Without: the table is the user's to make, and its absence stops the sink.
    let mut writing = CassandraSink::new(&config(""));
    writing
        .write(&[record("d")])
        .await
        .expect("the table made above is written");
    drop_table().await;
    let error = writing
        .write(&[record("e")])
        .await
        .expect_err("an insert into a dropped table cannot succeed");
    assert_eq!(error.kind, ErrorKind::Fatal, "{error}");
    assert!(
        std::error::Error::source(&error).is_some(),
        "the driver's error is kept: {error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cassandra_dead_letters_values_the_server_refuses_and_writes_the_rest() {
    // The sink maps `ascii` like `text`, and an empty string is a valid text value: only the
    // server knows these two are not acceptable.
    let (toml, keyspace, _dir, dlq) = lines_into_cassandra(
        "weir_refused",
        "coded",
        &[
            r#"{"id":"a","code":"ok","n":1}"#,
            r#"{"id":"b","code":"Zoë","n":2}"#,
            r#"{"id":"","code":"empty key","n":3}"#,
            r#"{"id":"c","code":"fine","n":4}"#,
        ],
        r#"create = { primary_key = ["id"], columns = { id = "text", code = "ascii", n = "int" } }"#,
    );
    let report = run_to_end(&toml).await;
    assert_eq!(
        (report.records_in, report.records_out, report.dead_lettered),
        (4, 2, 2)
    );
    let dead = read_json_lines(&dlq);
    let reason = |n: usize| {
        dead[n]["headers"]["weir.error"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(dead[0]["headers"]["weir.source.offset"], "2");
    assert!(
        reason(0).contains(&format!("table {keyspace}.coded refused the record"))
            && reason(0).contains("column `code` (ascii)"),
        "{}",
        reason(0)
    );
    assert_eq!(dead[1]["headers"]["weir.source.offset"], "3");
    assert!(
        reason(1).contains("primary key column `id` is empty"),
        "{}",
        reason(1)
    );
    let session = cassandra_session().await;
    let mut ids: Vec<String> = session
        .query_unpaged(format!("SELECT id FROM {keyspace}.coded"), &[])
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows::<(String,)>()
        .unwrap()
        .map(|row| row.unwrap().0)
        .collect();
    ids.sort();
    assert_eq!(ids, ["a", "c"]);
}

/// A `topics` entry starting with `^` subscribes to every topic it matches: the two that exist at
/// start, and one created while the pipeline runs (found at the next metadata refresh), but not
/// one beside them that it does not match. A canary's share counts the partitions of the topics
/// the pattern matches.
#[tokio::test(flavor = "multi_thread")]
async fn a_kafka_source_pattern_reads_every_topic_it_matches_and_one_created_later() {
    use weir::config::PipelineFile;
    let brokers = kafka_brokers();
    let prefix = unique("pattern");
    let topic = |suffix: &str| format!("{prefix}{suffix}");
    crate::services::create_topic(&brokers, &topic(".a"), 3).await;
    crate::services::create_topic(&brokers, &topic(".b"), 1).await;
    crate::services::create_topic(&brokers, &topic("_skipped"), 1).await;
    produce(&brokers, &topic(".a"), 0..50).await;
    produce(&brokers, &topic(".b"), 50..100).await;
    produce(&brokers, &topic("_skipped"), 1000..1010).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let toml = format!(
        r#"
        [[pipeline]]
        name = "kafka-pattern"
        source = {{ type = "kafka", brokers = "{brokers}", topics = ['^{prefix}\.'], group = "{group}", offset_reset = "earliest", properties = {{ "topic.metadata.refresh.interval.ms" = "500" }} }}
        sink = {{ type = "file", path = "{out}" }}
        dead_letter = {{ type = "file", path = "{dir}/dlq.jsonl" }}
        batch = {{ size = 50, linger_ms = 20 }}
        "#,
        group = unique("group"),
        out = out.display(),
        dir = dir.path().display()
    );
    let file = PipelineFile::parse(Path::new("pattern.toml"), &toml).unwrap();
    assert_eq!(
        file.pipelines[0].source.spec().partition_count().unwrap(),
        3,
        "the largest partition count among {prefix}.a (3) and {prefix}.b (1)"
    );

    let late = {
        let (brokers, topic, out) = (brokers.clone(), topic(".late"), out.clone());
        tokio::spawn(async move {
            wait_for(
                "the existing topics' records",
                Duration::from_secs(120),
                || line_count(&out) >= 100,
            )
            .await;
            crate::services::create_topic(&brokers, &topic, 1).await;
            produce(&brokers, &topic, 100..120).await;
        })
    };
    run_until(&toml, || line_count(&out) >= 120).await;
    late.await.unwrap();
    let mut ns: Vec<u64> = read_json_lines(&out)
        .iter()
        .map(|r| r["n"].as_u64().unwrap())
        .collect();
    ns.sort();
    assert_eq!(
        ns,
        (0..120).collect::<Vec<_>>(),
        "each record of {prefix}.a, .b and .late once, none of {prefix}_skipped"
    );
}

/// Kafka's Java producer's hash of a key (`Utils.murmur2`), to check that weir puts a key on the
/// partition a Java producer (Spark, Kafka Connect, Kafka Streams) would.
fn java_murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    let mut h = SEED ^ data.len() as u32;
    let (chunks, rest) = data.as_chunks::<4>();
    for chunk in chunks {
        let mut k = u32::from_le_bytes(*chunk);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition each key of the first `count` messages of `topic` was written to.
async fn partitions_of_keys(
    brokers: &str,
    topic: &str,
    count: usize,
) -> std::collections::BTreeMap<String, i32> {
    use rdkafka::Message;
    let consumer = crate::services::reader_from_the_start(brokers, topic);
    let mut placed = std::collections::BTreeMap::new();
    while placed.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} keys arrived in {topic}", placed.len()))
            .unwrap();
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        placed.insert(key, message.partition());
    }
    placed
}

/// The Kafka sink puts each key on the partition Kafka's Java producer would choose
/// (`toPositive(murmur2(key)) % partitions`), unless `properties` names another partitioner.
#[tokio::test(flavor = "multi_thread")]
async fn the_kafka_sink_puts_a_key_where_a_java_producer_would() {
    use weir::connectors::Sink;
    use weir::connectors::kafka::{KafkaSink, KafkaSinkConfig};

    // Kafka's own test vectors (UtilsTest.testMurmur2).
    assert_eq!(java_murmur2(b"21"), -973_932_308);
    assert_eq!(java_murmur2(b"foobar"), -790_332_482);
    assert_eq!(java_murmur2(b"abc"), 479_470_107);

    let brokers = kafka_brokers();
    let partitions = 7;
    let records: Vec<weir::record::Record> = (0..200)
        .map(|n| weir::record::Record {
            key: Some(format!("user-{n}").into()),
            value: format!("{{\"n\":{n}}}").into_bytes().into(),
            ..weir::record::Record::default()
        })
        .collect();
    let mut mapped_elsewhere = 0;
    for properties in ["", "\nproperties = { partitioner = \"consistent_random\" }"] {
        let topic = unique("placement");
        crate::services::create_topic(&brokers, &topic, partitions).await;
        let config: KafkaSinkConfig = toml::from_str(&format!(
            "brokers = \"{brokers}\"\ntopic = \"{topic}\"{properties}"
        ))
        .unwrap();
        let mut sink = KafkaSink::new(&config, false).unwrap();
        assert!(sink.write(&records).await.unwrap().is_empty());
        let placed = partitions_of_keys(&brokers, &topic, records.len()).await;
        let java = |key: &str| (java_murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions;
        if properties.is_empty() {
            for (key, partition) in &placed {
                assert_eq!(*partition, java(key), "key {key}");
            }
        } else {
            mapped_elsewhere = placed.iter().filter(|(key, p)| **p != java(key)).count();
        }
    }
    assert!(
        mapped_elsewhere > 100,
        "librdkafka's own partitioner, when named, places most keys elsewhere ({mapped_elsewhere} of 200)"
    );
}

/// A Kafka sink whose topic names a record field writes each record to the topic its field
/// picks, keyed as usual; a record whose field is missing or cannot be in a topic's name, or
/// picks a topic that does not exist (auto-create off), is dead-lettered with the reason while
/// the rest are written, and no topic is created.
#[tokio::test(flavor = "multi_thread")]
async fn a_kafka_sink_topic_template_routes_each_record_by_its_field() {
    let brokers = kafka_brokers();
    let prefix = unique("routed");
    crate::services::create_topic(&brokers, &format!("{prefix}.a"), 3).await;
    crate::services::create_topic(&brokers, &format!("{prefix}.b"), 1).await;
    let mut lines = Vec::new();
    for n in 0..60 {
        let kind = ["a", "b", "a"][n % 3];
        lines.push(format!(
            r#"{{"id":"u{n}","n":{n},"meta":{{"kind":"{kind}"}}}}"#
        ));
    }
    lines.push(r#"{"id":"u100","n":100,"meta":{}}"#.into());
    lines.push(r#"{"id":"u101","n":101,"meta":{"kind":"a/b"}}"#.into());
    lines.push(r#"{"id":"u102","n":102,"meta":{"kind":"c"}}"#.into());
    let dir = tempfile::tempdir().unwrap();
    let input = crate::support::write_input(dir.path(), &lines);
    let dlq = dir.path().join("dlq.jsonl");
    let toml = format!(
        r#"
        [[pipeline]]
        name = "kafka-routed"
        source = {{ type = "file", path = "{input}" }}
        sink = {{ type = "kafka", brokers = "{brokers}", topic = "{prefix}.{{{{ meta.kind }}}}", key_field = "id", properties = {{ "allow.auto.create.topics" = "false" }} }}
        dead_letter = {{ type = "file", path = "{dlq}" }}
        batch = {{ size = 25, linger_ms = 20 }}
        "#,
        dlq = dlq.display()
    );
    run_to_end(&toml).await;

    let read = |topic: String, expected: usize| {
        let brokers = brokers.clone();
        async move {
            let mut ns: Vec<(String, u64)> =
                crate::services::consume_all(&brokers, &topic, expected)
                    .await
                    .into_iter()
                    .map(|(key, value)| {
                        let value: serde_json::Value = serde_json::from_slice(&value).unwrap();
                        (
                            String::from_utf8(key.unwrap()).unwrap(),
                            value["n"].as_u64().unwrap(),
                        )
                    })
                    .collect();
            ns.sort_by_key(|(_, n)| *n);
            ns
        }
    };
    let expected = |kind: usize| -> Vec<(String, u64)> {
        (0..60_u64)
            .filter(|n| (n % 3 == 1) == (kind == 1))
            .map(|n| (format!("u{n}"), n))
            .collect()
    };
    assert_eq!(read(format!("{prefix}.a"), 40).await, expected(0));
    assert_eq!(read(format!("{prefix}.b"), 20).await, expected(1));
    assert_eq!(
        crate::services::topic_message_count(&brokers, &format!("{prefix}.a")),
        40,
        "nothing more than the kind-a records in {prefix}.a"
    );
    let reasons = dead_letter_reasons(&dlq);
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].contains("topic field `meta.kind` is missing"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("'/' cannot be in a topic's name"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].contains(&format!("topic `{prefix}.c` does not exist"))
            && reasons[2].contains("comes from the record's fields"),
        "{reasons:?}"
    );
    assert!(
        !crate::services::topic_exists(&brokers, &format!("{prefix}.c")),
        "the producer did not create {prefix}.c"
    );
}

/// The time now, in milliseconds since the epoch.
fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Sends `{"n":N}` to `partition` of `topic` with the create time `millis`.
async fn produce_at(brokers: &str, topic: &str, partition: i32, n: u32, millis: i64) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let payload = format!("{{\"n\":{n}}}");
    producer
        .send(
            FutureRecord::<str, str>::to(topic)
                .payload(&payload)
                .partition(partition)
                .timestamp(millis),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
}

/// `start_at_time` starts a group that never committed at each partition's first record at or
/// after the time, and at the end of a partition with none that late (so the next record
/// written there is read); once the group has committed, a restart resumes from the commits and
/// the time no longer applies. With the default cooperative assignor and with an eager one,
/// whose assignments weir's rebalance applies differently.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_source_start_at_time_places_uncommitted_partitions_and_commits_win_after() {
    for assignor in ["cooperative-sticky", "range"] {
        start_at_time_with(assignor).await;
    }
}

async fn start_at_time_with(assignor: &str) {
    let brokers = kafka_brokers();
    let topic = unique("start_at");
    crate::services::create_topic(&brokers, &topic, 4).await;
    let base = now_millis() - 3_600_000;
    // Records 0..30 a second apart over partitions 0 to 2; partition 3 holds only early ones.
    let spread = |range: std::ops::Range<u32>| {
        let (brokers, topic) = (brokers.clone(), topic.clone());
        async move {
            for n in range {
                let millis = base + i64::from(n) * 1000;
                produce_at(&brokers, &topic, (n % 3) as i32, n, millis).await;
            }
        }
    };
    spread(0..30).await;
    for n in 50..55 {
        produce_at(&brokers, &topic, 3, n, base + i64::from(n - 50) * 1000).await;
    }
    let start = chrono::DateTime::from_timestamp_millis(base + 15_000)
        .unwrap()
        .to_rfc3339();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let group = unique("group");
    let toml = |start: &str| {
        format!(
            r#"
            [[pipeline]]
            name = "kafka-start-at"
            source = {{ type = "kafka", brokers = "{brokers}", topics = ["{topic}"], group = "{group}", start_at_time = "{start}", properties = {{ "partition.assignment.strategy" = "{assignor}" }} }}
            sink = {{ type = "file", path = "{out}" }}
            dead_letter = {{ type = "file", path = "{dir}/dlq.jsonl" }}
            batch = {{ size = 10, linger_ms = 20 }}
            "#,
            out = out.display(),
            dir = dir.path().display()
        )
    };
    let seen = |out: &Path| -> Vec<u64> {
        let mut ns: Vec<u64> = read_json_lines(out)
            .iter()
            .map(|row| row["n"].as_u64().unwrap())
            .collect();
        ns.sort();
        ns
    };
    let late = {
        let (brokers, topic, out) = (brokers.clone(), topic.clone(), out.clone());
        tokio::spawn(async move {
            wait_for(
                "the records from start_at_time on",
                Duration::from_secs(120),
                || line_count(&out) >= 15,
            )
            .await;
            produce_at(&brokers, &topic, 3, 99, now_millis()).await;
        })
    };
    run_until(&toml(&start), || line_count(&out) >= 16).await;
    late.await.unwrap();
    let mut expected: Vec<u64> = (15..30).collect();
    expected.push(99);
    assert_eq!(
        seen(&out),
        expected,
        "{assignor}: records from the time on, none of partition 3's early ones, and its record written later"
    );

    // The group has committed: an earlier time does not take it back.
    spread(30..33).await;
    let earlier = chrono::DateTime::from_timestamp_millis(base)
        .unwrap()
        .to_rfc3339();
    run_until(&toml(&earlier), || line_count(&out) >= 19).await;
    expected.extend(30..33);
    expected.sort();
    assert_eq!(
        seen(&out),
        expected,
        "{assignor}: a restart resumes from the commits"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_source_with_offset_reset_latest_skips_what_came_before_it() {
    let (brokers, topic) = topic_holding("latest", 0..50).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let toml = format!(
        r#"
        [[pipeline]]
        name = "kafka-latest"
        source = {{ type = "kafka", brokers = "{brokers}", topics = ["{topic}"], group = "{group}", offset_reset = "latest" }}
        sink = {{ type = "file", path = "{out}" }}
        dead_letter = {{ type = "file", path = "{dir}/dlq.jsonl" }}
        batch = {{ size = 50, linger_ms = 20 }}
        "#,
        group = unique("group"),
        out = out.display(),
        dir = dir.path().display()
    );
    // Until the consumer has its partitions and their end offsets, a new message may fall
    // before its starting point: send probes until one arrives, then the records to check.
    let feeder = {
        let (brokers, topic, out) = (brokers.clone(), topic.clone(), out.clone());
        tokio::spawn(async move {
            for probe in 1000..1600 {
                if line_count(&out) > 0 {
                    produce(&brokers, &topic, 2000..2010).await;
                    return;
                }
                produce(&brokers, &topic, probe..probe + 1).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            panic!("no probe reached the sink");
        })
    };
    let seen = |out: &Path| -> Vec<u64> {
        std::fs::read_to_string(out)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|row| row["n"].as_u64())
            .collect()
    };
    run_until(&toml, || {
        let seen = seen(&out);
        (2000..2010).all(|n| seen.contains(&n))
    })
    .await;
    feeder.await.unwrap();
    let seen = seen(&out);
    assert!(
        seen.iter().all(|n| *n >= 1000),
        "records from before the start were read: {seen:?}"
    );
    for n in 2000..2010 {
        assert!(seen.contains(&n), "{n} missing from {seen:?}");
    }
}

/// Every native type but counter and duration is written from its JSON or CQL text form, and
/// reads back through Cassandra's own JSON (`SELECT JSON`) as the record wrote it: integers of each width,
/// a varint past 64 bits and a decimal past a double's digits (from text and from JSON numbers,
/// exactly, a decimal's scale kept), a number into text as written, a float, a date, a time to
/// the nanosecond, IPv4 and IPv6 addresses and a blob. A value no type reading takes is a dead
/// letter naming its column; a field absent stays unset.
#[tokio::test(flavor = "multi_thread")]
async fn cassandra_native_types_are_written_as_cassandra_reads_them_back() {
    let (toml, keyspace, _dir, dlq) = lines_into_cassandra(
        "weir_natives",
        "natives",
        &[
            r#"{"id":"a","t":-128,"s":32767,"v":"18446744073709551616","d":"0.1000000000000000000000000001","f":1.5,"day":"2024-02-29","at":"01:00:00.000000001","ip":"2001:db8::1","raw":"0xCAFE"}"#,
            r#"{"id":"b","v":-129,"d":12.50,"ip":"192.168.0.1","raw":"0x"}"#,
            r#"{"id":"c","day":"2024-02-30"}"#,
            r#"{"id":"d","raw":"cafe"}"#,
            r#"{"id":"e","t":128}"#,
            r#"{"id":"g","v":123456789012345678901234567890,"d":-1234567890.1234567890123456789,"note":1.50}"#,
        ],
        r#"create = { primary_key = ["id"], columns = { id = "text", t = "tinyint", s = "smallint", v = "varint", d = "decimal", f = "float", day = "date", at = "time", ip = "inet", raw = "blob", note = "text" } }"#,
    );
    let report = run_to_end(&toml).await;
    assert_eq!(
        (report.records_in, report.records_out, report.dead_lettered),
        (6, 3, 3)
    );
    let reasons = dead_letter_reasons(&dlq);
    assert!(
        reasons[0].contains("`day`") && reasons[0].contains("YYYY-MM-DD"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("`raw`") && reasons[1].contains("0x and hex digits"),
        "{reasons:?}"
    );
    assert!(reasons[2].contains("`t`"), "{reasons:?}");

    assert_eq!(
        rows_as_cassandra_json(
            "id, t, s, v, d, f, day, at, ip, raw, note",
            &format!("{keyspace}.natives")
        )
        .await,
        [
            r#"{"id": "a", "t": -128, "s": 32767, "v": 18446744073709551616, "d": 0.1000000000000000000000000001, "f": 1.5, "day": "2024-02-29", "at": "01:00:00.000000001", "ip": "2001:db8:0:0:0:0:0:1", "raw": "0xcafe", "note": null}"#,
            r#"{"id": "b", "t": null, "s": null, "v": -129, "d": 12.50, "f": null, "day": null, "at": null, "ip": "192.168.0.1", "raw": "0x", "note": null}"#,
            r#"{"id": "g", "t": null, "s": null, "v": 123456789012345678901234567890, "d": -1234567890.1234567890123456789, "f": null, "day": null, "at": null, "ip": null, "raw": null, "note": "1.50"}"#,
        ]
    );
}

/// Lists, sets and maps of native types are written from arrays and objects and read back
/// through Cassandra's own JSON (`SELECT JSON`) as the records held them: a set once per item, a map with keys
/// of another type than text read from their text, a frozen list as the partition key. An item
/// of the wrong type is a dead letter naming the column and the item; a column mapped inside a
/// collection column's field stops the sink at start, naming both.
#[tokio::test(flavor = "multi_thread")]
async fn cassandra_collections_are_written_from_arrays_and_objects() {
    let lines = [
        r#"{"id":[1,2],"tags":["b","a","b"],"scores":{"x":1,"y":-2},"days":["2024-01-02","1999-12-31"],"by_id":{"7":true}}"#,
        r#"{"id":[3],"tags":[],"scores":{}}"#,
        r#"{"id":[4],"days":["2024-01-02","yesterday"]}"#,
        r#"{"id":[5],"scores":{"x":"one"}}"#,
    ];
    let create = r#"create = { primary_key = ["id"], columns = { id = "frozen<list<int>>", tags = "set<text>", scores = "map<text, bigint>", days = "list<date>", by_id = "map<int, boolean>", first = "text" } }"#;
    let (toml, keyspace, _dir, dlq) =
        lines_into_cassandra("weir_collections", "bags", &lines, create);
    run_expecting_dead_letters(
        &toml,
        &dlq,
        (4, 2, 2),
        &[("days", "item 1"), ("scores", r#"key "x""#)],
    )
    .await;

    // Cassandra stores an empty collection as no value at all.
    assert_eq!(
        rows_as_cassandra_json("id, tags, scores, days, by_id", &format!("{keyspace}.bags")).await,
        [
            r#"{"id": [1, 2], "tags": ["a", "b"], "scores": {"x": 1, "y": -2}, "days": ["2024-01-02", "1999-12-31"], "by_id": {"7": true}}"#,
            r#"{"id": [3], "tags": null, "scores": null, "days": null, "by_id": null}"#,
        ]
    );

    let (inside, _, _dir, _) = lines_into_cassandra(
        "weir_collections",
        "bags",
        &lines,
        &format!("columns = {{ first = \"tags.0\" }}\n{create}"),
    );
    let error = outcome_within(&inside, Duration::from_secs(120))
        .await
        .expect("the sink stops at start")
        .expect_err("a column inside a collection's field is refused")
        .to_string();
    assert!(
        error.contains("column `first`") && error.contains("field of column `tags`"),
        "{error}"
    );
}

/// Tuples are written from arrays and user-defined types from objects (each field by name, an
/// absent one null, a varint every digit), nested in a list too, and read back through
/// Cassandra's own JSON (`SELECT JSON`). A tuple of another length, or an object with a key the
/// type lacks, is a dead letter naming the column; a user type with a field the sink cannot
/// write stops the sink at start, naming the column and the field.
#[tokio::test(flavor = "multi_thread")]
async fn cassandra_tuples_and_user_types_are_written_from_arrays_and_objects() {
    let lines = [
        r#"{"id":1,"pair":[7,"a"],"home":{"street":"Main","zip":123456789012345678901234567890},"past":[{"street":"Old"},{"number":3}]}"#,
        r#"{"id":2,"pair":[null,"b"],"home":{"number":12,"street":null}}"#,
        r#"{"id":3,"pair":[1]}"#,
        r#"{"id":4,"home":{"city":"x"}}"#,
    ];
    let create = r#"create = { primary_key = ["id"], columns = { id = "int", pair = "frozen<tuple<int, text>>", home = "frozen<address>", past = "list<frozen<address>>" } }"#;
    let (toml, keyspace, _dir, dlq) = lines_into_cassandra("weir_udt", "homes", &lines, create);
    let session = cassandra_session().await;
    for ddl in [
        format!(
            "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
        ),
        format!(
            "CREATE TYPE IF NOT EXISTS {keyspace}.address (street text, number int, zip varint)"
        ),
        format!("CREATE TYPE IF NOT EXISTS {keyspace}.timed (name text, d duration)"),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.labels (id int PRIMARY KEY, label frozen<timed>)"
        ),
    ] {
        session.query_unpaged(ddl, &[]).await.unwrap();
    }
    run_expecting_dead_letters(
        &toml,
        &dlq,
        (4, 2, 2),
        &[
            ("pair", "array of 2 items, not 1"),
            ("home", r#"no field "city""#),
        ],
    )
    .await;
    assert_eq!(
        rows_as_cassandra_json("id, pair, home, past", &format!("{keyspace}.homes")).await,
        [
            r#"{"id": 1, "pair": [7, "a"], "home": {"street": "Main", "number": null, "zip": 123456789012345678901234567890}, "past": [{"street": "Old", "number": null, "zip": null}, {"street": null, "number": 3, "zip": null}]}"#,
            r#"{"id": 2, "pair": [null, "b"], "home": {"street": null, "number": 12, "zip": null}, "past": null}"#,
        ]
    );

    // The same keyspace, whose table `labels` has a user type with a duration field.
    let (nested, other_keyspace, _dir, _) = lines_into_cassandra("weir_udt", "labels", &lines, "");
    let nested = nested.replace(&other_keyspace, &keyspace);
    let error = outcome_within(&nested, Duration::from_secs(120))
        .await
        .expect("the sink stops at start")
        .expect_err("a user type with a duration field is refused")
        .to_string();
    assert!(
        error.contains("column `label`")
            && error.contains("field `d` of user-defined type `timed` is `duration`"),
        "{error}"
    );
}

/// `ttl_seconds` writes each row with that TTL, so Cassandra expires it; without it a row
/// has none.
#[tokio::test(flavor = "multi_thread")]
async fn a_cassandra_ttl_is_written_with_each_row() {
    let mut ttls = Vec::new();
    for ttl in ["ttl_seconds = 3600", ""] {
        let (toml, keyspace, _dir, _dlq) = lines_into_cassandra(
            "weir_ttl",
            "expiring",
            &[r#"{"id":"a","v":"x"}"#, r#"{"id":"b","v":"y"}"#],
            &format!(
                "{ttl}\ncreate = {{ primary_key = [\"id\"], columns = {{ id = \"text\", v = \"text\" }} }}"
            ),
        );
        let report = run_to_end(&toml).await;
        assert_eq!((report.records_out, report.dead_lettered), (2, 0));
        let rows = cassandra_session()
            .await
            .query_unpaged(format!("SELECT TTL(v) FROM {keyspace}.expiring"), &[])
            .await
            .unwrap()
            .into_rows_result()
            .unwrap();
        ttls.push(
            rows.rows::<(Option<i32>,)>()
                .unwrap()
                .map(|row| row.unwrap().0)
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(ttls[0].len(), 2);
    assert!(
        ttls[0]
            .iter()
            .all(|ttl| ttl.is_some_and(|seconds| (3000..=3600).contains(&seconds))),
        "{ttls:?}"
    );
    assert_eq!(ttls[1], [None, None]);
}

#[tokio::test(flavor = "multi_thread")]
async fn cassandra_columns_take_values_from_the_json_fields_they_name() {
    let nodes = cassandra_nodes();
    let keyspace = unique("weir_columns");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let mut generator = weir::generator::UserGenerator::new(77);
    let users: Vec<serde_json::Value> = (0..20).map(|_| generator.next_user()).collect();
    std::fs::write(
        &input,
        users
            .iter()
            .map(|user| format!("{user}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let report = run_to_end(&format!(
        r#"
        [[pipeline]]
        name = "columns"
        source = {{ type = "file", path = "{input}" }}
        dead_letter = {{ type = "file", path = "{dir}/dlq.jsonl" }}
        [pipeline.sink]
        type = "cassandra"
        nodes = ["{nodes}"]
        keyspace = "{keyspace}"
        table = "people"
        consistency = "one"
        columns = {{ id = "login.uuid", first = "name.first", city = "location.city" }}
        create = {{ primary_key = ["id"], columns = {{ id = "uuid", first = "text", city = "text", email = "text" }} }}
        "#,
        input = input.display(),
        dir = dir.path().display()
    ))
    .await;
    assert_eq!((report.records_out, report.dead_lettered), (20, 0));
    let session = cassandra_session().await;
    let rows = session
        .query_unpaged(
            format!("SELECT id, first, city, email FROM {keyspace}.people"),
            &[],
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let stored: std::collections::BTreeMap<String, (String, String, String)> = rows
        .rows::<(uuid::Uuid, String, String, String)>()
        .unwrap()
        .map(|row| {
            let (id, first, city, email) = row.unwrap();
            (id.to_string(), (first, city, email))
        })
        .collect();
    assert_eq!(stored.len(), 20);
    for user in &users {
        let id = user["login"]["uuid"].as_str().unwrap();
        let expected = (
            user["name"]["first"].as_str().unwrap().to_owned(),
            user["location"]["city"].as_str().unwrap().to_owned(),
            // A column not remapped reads the field of its own name.
            user["email"].as_str().unwrap().to_owned(),
        );
        assert_eq!(stored[id], expected, "user {id}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_that_does_not_exist_fails_the_pipeline_instead_of_being_retried() {
    let url = postgres_url();
    let (base, _) = url.rsplit_once('/').unwrap();
    let missing = format!("{base}/{}", unique("no_such_database"));
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"n\":1}\n").unwrap();
    let toml = format!(
        r#"
        [[pipeline]]
        name = "missing-db"
        source = {{ type = "file", path = "{input}" }}
        sink = {{ type = "postgres", url = "{missing}", table = "landing" }}
        dead_letter = {{ type = "file", path = "{dir}/dlq.jsonl" }}
        "#,
        input = input.display(),
        dir = dir.path().display()
    );
    let error = outcome_within(&toml, Duration::from_secs(120))
        .await
        .expect("the pipeline gives up instead of retrying a missing database")
        .expect_err("a missing database is not a passing outage")
        .to_string();
    assert!(error.contains("3D000"), "{error}");
    assert!(!error.contains(":weir@"), "no password in: {error}");
}

/// A lingering Kafka batch closes as soon as it is full, however long its linger, and a batch
/// that never fills closes at its linger with what came: the polling thread wakes a waiting
/// source for the first record in an empty buffer and for a full batch (not for every fetch in
/// between, which at a trickle cost a thread hand-over each). Without the full-batch wake the
/// second batch would wait out its hour-long linger and fail at the two-minute guard; without
/// the first-record wake the third would give up at its linger with nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_lingering_kafka_batch_closes_once_full() {
    use weir::connectors::Source;
    use weir::connectors::kafka::{KafkaSource, KafkaSourceConfig};

    const LINGER: Duration = Duration::from_secs(3600);
    const GUARD: Duration = Duration::from_secs(120);
    // Long enough for two records sent right away to arrive on a loaded machine.
    const SHORT_LINGER: Duration = Duration::from_secs(30);
    let (brokers, topic) = topic_holding("lingering", 0..1).await;
    let config: KafkaSourceConfig = toml::from_str(&format!(
        "brokers = \"{brokers}\"\ntopics = [\"{topic}\"]\ngroup = \"{}\"\n",
        unique("group")
    ))
    .unwrap();
    let mut source = KafkaSource::open(&config).unwrap();

    // The record already in the topic is a full batch of one, found once the group assigned it.
    let first = tokio::time::timeout(GUARD, source.poll_batch(1, LINGER))
        .await
        .expect("a full batch of one waited out its linger")
        .unwrap()
        .unwrap();
    assert_eq!(first.len(), 1);

    // Now four records sent one at a time, each waiting for its acknowledgement, so that they
    // reach the source in several fetches while it waits for a batch of four.
    let poll = tokio::spawn(async move {
        let batch = source.poll_batch(4, LINGER).await;
        (source, batch)
    });
    produce(&brokers, &topic, 1..5).await;
    let (mut source, batch) = tokio::time::timeout(GUARD, poll)
        .await
        .expect("a full batch of four waited out its linger")
        .unwrap();
    assert_eq!(values(&batch.unwrap().unwrap()), vec![1, 2, 3, 4]);

    // A batch that never fills closes when its linger, counted from its first record, is up:
    // the first record must wake the source, or it would give up at the linger with nothing.
    let poll = tokio::spawn(async move {
        let batch = source.poll_batch(100, SHORT_LINGER).await;
        (source, batch)
    });
    produce(&brokers, &topic, 5..7).await;
    let (source, batch) = tokio::time::timeout(GUARD, poll)
        .await
        .expect("a linger of 30 s took over two minutes")
        .unwrap();
    drop(source);
    assert_eq!(values(&batch.unwrap().unwrap()), vec![5, 6]);
}

/// The `n` of each `{"n":N}` record, sorted (records of different partitions come in any order).
fn values(batch: &[weir::record::SourceRecord]) -> Vec<u64> {
    let mut values: Vec<u64> = batch
        .iter()
        .map(|source_record| {
            let json: serde_json::Value = serde_json::from_slice(&source_record.record.value)
                .expect("the test's records are JSON");
            json["n"].as_u64().expect("each record has a number `n`")
        })
        .collect();
    values.sort_unstable();
    values
}

/// A landing table's name of 59 characters or more makes `weir_` and the name too long for a
/// NOTIFY channel (63 bytes): the channel then ends in a digest, so every INSERT still succeeds
/// (PostgreSQL refused each one with 22023 before, and every record was dead-lettered), and a
/// tailing source listens on the same channel by default, woken by NOTIFY alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_table_named_too_long_for_a_channel_lands_and_is_tailed_by_notify() {
    let url = postgres_url();
    let mut table = unique("long_name");
    table.push('_');
    while table.len() < 62 {
        table.push('x');
    }
    // The table as the version before made it: its trigger named after the whole channel
    // (cut to 63 bytes by the server) NOTIFYs a channel too long, refusing every insert.
    let whole = format!("weir_{table}");
    postgres_client(&url)
        .await
        .batch_execute(&format!(
            "CREATE TABLE \"{table}\" (id BIGSERIAL PRIMARY KEY, key TEXT NOT NULL UNIQUE, value JSONB NOT NULL, ingested_at TIMESTAMPTZ NOT NULL DEFAULT now());
             CREATE OR REPLACE FUNCTION \"{whole}_notify\"() RETURNS trigger LANGUAGE plpgsql AS
                $$ BEGIN PERFORM pg_notify('{whole}', ''); RETURN NULL; END $$;
             CREATE OR REPLACE TRIGGER \"{whole}_notify\" AFTER INSERT ON \"{table}\"
                FOR EACH STATEMENT EXECUTE FUNCTION \"{whole}_notify\"();"
        ))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        (0..10)
            .map(|n| format!("{{\"n\":{n}}}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let landed = run_to_end(&format!(
        r#"
        [[pipeline]]
        name = "land-long"
        source = {{ type = "file", path = "{input}" }}
        sink = {{ type = "postgres", url = "{url}", table = "{table}", key_field = "n" }}
        dead_letter = {{ type = "file", path = "{dir}/dlq.jsonl" }}
        "#,
        input = input.display(),
        dir = dir.path().display()
    ))
    .await;
    assert_eq!(
        (landed.records_out, landed.dead_lettered),
        (10, 0),
        "every record lands in `{table}`"
    );

    // The tail polls once an hour: the rows inserted while it waits reach it by NOTIFY only.
    let out = dir.path().join("out.jsonl");
    let watched = out.clone();
    let inserter = tokio::spawn({
        let (url, table) = (url.clone(), table.clone());
        async move {
            wait_for("the rows already there", Duration::from_secs(60), || {
                line_count(&watched) >= 10
            })
            .await;
            let client = postgres_client(&url).await;
            client
                .execute(
                    &format!(
                        "INSERT INTO \"{table}\" (key, value) SELECT n::text, jsonb_build_object('n', n) FROM generate_series(10, 14) AS n"
                    ),
                    &[],
                )
                .await
                .unwrap();
        }
    });
    let tailed = run_until(
        &format!(
            r#"
            [[pipeline]]
            name = "tail-long"
            source = {{ type = "postgres", url = "{url}", table = "{table}", consumer = "{consumer}", poll_interval_ms = 3600000 }}
            sink = {{ type = "file", path = "{out}" }}
            dead_letter = {{ type = "file", path = "{dir}/tail-dlq.jsonl" }}
            batch = {{ size = 100, linger_ms = 10 }}
            "#,
            consumer = unique("long_tail"),
            out = out.display(),
            dir = dir.path().display()
        ),
        || line_count(&out) >= 15,
    )
    .await;
    inserter.await.unwrap();
    assert_eq!(
        tailed.records_out, 15,
        "the inserted rows arrived by NOTIFY"
    );
}

/// An error that every row would meet alike, here a trigger handing `pg_notify` a channel name
/// too long (SQLSTATE 22023, a data exception by its class), stops the pipeline with the
/// reason instead of dead-lettering record after record.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_invalid_parameter_error_stops_the_pipeline_instead_of_dead_lettering() {
    let url = postgres_url();
    let table = unique("bad_trigger");
    let client = postgres_client(&url).await;
    client
        .batch_execute(&format!(
            "CREATE TABLE \"{table}\" (id BIGSERIAL PRIMARY KEY, key TEXT NOT NULL UNIQUE, value JSONB NOT NULL, ingested_at TIMESTAMPTZ NOT NULL DEFAULT now());
             CREATE FUNCTION \"{table}_f\"() RETURNS trigger LANGUAGE plpgsql AS
                $$ BEGIN PERFORM pg_notify(repeat('c', 70), ''); RETURN NULL; END $$;
             CREATE TRIGGER \"{table}_t\" AFTER INSERT ON \"{table}\"
                FOR EACH STATEMENT EXECUTE FUNCTION \"{table}_f\"();"
        ))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"n\":1}\n{\"n\":2}\n").unwrap();
    let dlq = dir.path().join("dlq.jsonl");
    let outcome = outcome_within(
        &format!(
            r#"
            [[pipeline]]
            name = "bad-trigger"
            source = {{ type = "file", path = "{input}" }}
            sink = {{ type = "postgres", url = "{url}", table = "{table}", key_field = "n", create_table = false }}
            dead_letter = {{ type = "file", path = "{dlq}" }}
            "#,
            input = input.display(),
            dlq = dlq.display()
        ),
        Duration::from_secs(120),
    )
    .await
    .expect("the pipeline stops on its own");
    let error = outcome.expect_err("no record is at fault").to_string();
    assert!(error.contains("22023"), "{error}");
    assert_eq!(line_count(&dlq), 0, "nothing is dead-lettered");
}

/// The first batch a `postgres` source with `options` (TOML lines) reads from a new table that
/// `ddl` creates and fills (`{table}` stands for its quoted name), once the options are valid.
async fn first_postgres_batch(
    prefix: &str,
    ddl: &str,
    options: &str,
) -> Vec<weir::record::SourceRecord> {
    use weir::connectors::Source;
    use weir::connectors::postgres::{PostgresSource, PostgresSourceConfig};
    let url = postgres_url();
    let table = unique(prefix);
    postgres_client(&url)
        .await
        .batch_execute(&ddl.replace("{table}", &format!("\"{table}\"")))
        .await
        .unwrap();
    let config: PostgresSourceConfig = toml::from_str(&format!(
        "url = \"{url}\"\ntable = \"{table}\"\nconsumer = \"{}\"\n{options}",
        unique(prefix)
    ))
    .unwrap();
    config.validate().expect("valid source options");
    let mut source = PostgresSource::open(&config).await.unwrap();
    source
        .poll_batch(10, Duration::from_millis(10))
        .await
        .unwrap()
        .unwrap()
}

/// `value_column = "*"` tails a table of typed columns: each row is a JSON object of its columns
/// in table order, as PostgreSQL's `to_json` writes them (a numeric with every digit, an array, a
/// json column and a boolean as JSON, a timestamp as text), even where a column is named like
/// the query's alias for the row; the key comes from `key_column`.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_source_tails_a_typed_table_as_json_objects_of_whole_rows() {
    let batch = first_postgres_batch(
        "typed_rows",
        "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, amount NUMERIC(22, 2),
             tags TEXT[], at TIMESTAMP, doc JSONB, flag BOOLEAN, weir_row TEXT);
         INSERT INTO {table} (name, amount, tags, at, doc, flag, weir_row) VALUES
             ('Zoë', 12345678901234567890.12, '{a,\"b c\"}', '2024-05-01 10:00:00', '{\"k\": [1, 2]}', true, 'x'),
             ('Bo', NULL, '{}', NULL, NULL, false, NULL);",
        "value_column = \"*\"\nkey_column = \"name\"",
    )
    .await;
    let rows: Vec<(String, String)> = batch
        .iter()
        .map(|r| {
            assert!(r.malformed.is_none(), "{:?}", r.malformed);
            (
                String::from_utf8(r.record.key.as_deref().unwrap().to_vec()).unwrap(),
                String::from_utf8(r.record.value.to_vec()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                "Zoë".to_owned(),
                r#"{"id":1,"name":"Zoë","amount":12345678901234567890.12,"tags":["a","b c"],"at":"2024-05-01T10:00:00","doc":{"k": [1, 2]},"flag":true,"weir_row":"x"}"#.to_owned()
            ),
            (
                "Bo".to_owned(),
                r#"{"id":2,"name":"Bo","amount":null,"tags":[],"at":null,"doc":null,"flag":false,"weir_row":null}"#.to_owned()
            ),
        ]
    );
    for (value_column, refused) in [("", true), ("two words", true), ("*", false)] {
        let config: weir::connectors::postgres::PostgresSourceConfig = toml::from_str(&format!(
            "url = \"{}\"\ntable = \"t\"\nvalue_column = \"{value_column}\"",
            postgres_url()
        ))
        .unwrap();
        assert_eq!(config.validate().is_err(), refused, "{value_column:?}");
    }
}

/// `key_column = ""` tails a table that has no key column: its records have no key.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_source_with_no_key_column_reads_a_table_without_one() {
    let batch = first_postgres_batch(
        "keyless",
        "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, value JSONB NOT NULL);
         INSERT INTO {table} (value) VALUES ('{\"n\":1}'), ('{\"n\":2}'), ('{\"n\":3}');",
        "key_column = \"\"",
    )
    .await;
    assert_eq!(values(&batch), vec![1, 2, 3]);
    assert!(
        batch
            .iter()
            .all(|r| r.record.key.is_none() && r.malformed.is_none())
    );
}

/// Configured headers are for the url's own origin: a redirect to another port is refused, the
/// other server never sees the secret header, and the error names both origins and the fix.
#[tokio::test(flavor = "multi_thread")]
async fn an_http_source_never_follows_a_redirect_to_another_origin() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use weir::connectors::Source;
    let other_hits = Arc::new(AtomicUsize::new(0));
    let hits = Arc::clone(&other_hits);
    let other = crate::support::serve_http(axum::Router::new().fallback(move || {
        hits.fetch_add(1, Ordering::SeqCst);
        async { axum::Json(serde_json::json!({"results": [{"n": 1}]})) }
    }))
    .await;
    let target = format!("{other}/api");
    let redirecting = crate::support::serve_http(
        axum::Router::new()
            .route(
                "/same",
                axum::routing::get(|| async { axum::response::Redirect::temporary("/data") }),
            )
            .route(
                "/data",
                axum::routing::get(|| async {
                    axum::Json(serde_json::json!({"results": [{"n": 7}]}))
                }),
            )
            .route(
                "/away",
                axum::routing::get(move || {
                    let target = target.clone();
                    async move { axum::response::Redirect::temporary(&target) }
                }),
            ),
    )
    .await;
    let source = |path: &str| {
        let config: weir::connectors::http::HttpSourceConfig = toml::from_str(&format!(
            "url = \"{redirecting}{path}\"\nsplit_at = \"/results\"\nretries = 0\nheaders = {{ X-Api-Key = \"canary-key-77a1\" }}"
        ))
        .unwrap();
        weir::connectors::http::HttpSource::new(&config).unwrap()
    };
    // Within the origin a redirect is followed.
    let batch = source("/same")
        .poll_batch(10, Duration::from_millis(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(values(&batch), vec![7]);

    let error = source("/away")
        .poll_batch(10, Duration::from_millis(10))
        .await
        .expect_err("a redirect to another origin fails the poll");
    assert!(!error.is_transient(), "{error}");
    let message = error.to_string();
    assert_eq!(other_hits.load(Ordering::SeqCst), 0, "{message}");
    assert!(
        message.contains(&format!("{redirecting}/away"))
            && message.contains(&other)
            && message.contains("set `url` to the final address"),
        "{message}"
    );
    assert!(!message.contains("canary-key"), "{message}");
}
