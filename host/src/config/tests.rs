//! Pipeline-file parsing and validation: what users get wrong, and what the error says.

use std::path::Path;

use super::*;

const VALID: &str = r#"
[[pipeline]]
name = "p1"
source = { type = "generate", count = 5 }
transforms = [{ plugin = "user-profile" }, { plugin = "pii-mask", config = { fields = ["email"] } }]
sink = { type = "stdout" }
dead_letter = { type = "file", path = "dlq.jsonl" }
"#;

fn parse(text: &str) -> Result<PipelineFile, ConfigError> {
    PipelineFile::parse(Path::new("pipelines/test.toml"), text)
}

#[test]
fn valid_file_parses_with_defaults() {
    let file = parse(VALID).unwrap();
    let pipeline = &file.pipelines[0];
    assert_eq!(pipeline.name, "p1");
    assert_eq!(pipeline.transforms.len(), 2);
    assert_eq!(pipeline.transforms[0].config_json(), "{}");
    assert_eq!(
        pipeline.transforms[1].config_json(),
        r#"{"fields":["email"]}"#
    );
    assert_eq!(pipeline.batch.size, 256);
    assert_eq!(pipeline.limits.memory_mib, 64);
}

#[test]
fn unknown_key_names_file_and_key() {
    let text = VALID.replace("name = \"p1\"", "name = \"p1\"\nbatchsize = 3");
    let message = parse(&text).unwrap_err().to_string();
    assert!(message.starts_with("pipelines/test.toml:"), "{message}");
    assert!(message.contains("batchsize"), "{message}");
}

#[test]
fn unknown_connector_option_is_rejected() {
    let text = VALID.replace("count = 5", "count = 5, colour = \"red\"");
    let message = parse(&text).unwrap_err().to_string();
    assert!(message.contains("colour"), "{message}");
}

#[test]
fn unknown_connector_type_lists_the_known_ones() {
    let text = VALID.replace("type = \"stdout\"", "type = \"kafak\"");
    let message = parse(&text).unwrap_err().to_string();
    assert!(
        message.contains("kafak") && message.contains("stdout"),
        "{message}"
    );
}

#[test]
fn invalid_values_name_the_key_path() {
    let text = format!("{VALID}\n[pipeline.batch]\nsize = 0\n");
    let message = parse(&text).unwrap_err().to_string();
    assert!(message.contains("`pipeline[0].batch.size`"), "{message}");

    let text = VALID.replace("count = 5", "rate = -1.0");
    let message = parse(&text).unwrap_err().to_string();
    assert!(message.contains("`pipeline[0].source.rate`"), "{message}");
}

#[test]
fn duplicate_pipeline_names_are_rejected() {
    let text = format!("{VALID}{VALID}");
    let message = parse(&text).unwrap_err().to_string();
    assert!(message.contains("used twice"), "{message}");
}

#[test]
fn missing_dead_letter_is_an_error() {
    let text = VALID.replace(
        "dead_letter = { type = \"file\", path = \"dlq.jsonl\" }\n",
        "",
    );
    let message = parse(&text).unwrap_err().to_string();
    assert!(message.contains("dead_letter"), "{message}");
}

#[test]
fn bad_plugin_name_is_explained() {
    let text = VALID.replace(
        "plugin = \"user-profile\"",
        "plugin = \"user-profile.wasm\"",
    );
    let message = parse(&text).unwrap_err().to_string();
    assert!(message.contains("transforms[0].plugin"), "{message}");
}

#[test]
fn the_examples_parse() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            PipelineFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen >= 1, "no example pipeline found");
}

#[test]
fn workers_are_per_partition_by_default_or_a_fixed_number() {
    assert_eq!(
        parse(VALID).unwrap().pipelines[0].workers,
        Workers::PerPartition
    );
    let with = |value: &str| {
        VALID.replace(
            "name = \"p1\"",
            &format!("name = \"p1\"\nworkers = {value}"),
        )
    };
    assert_eq!(
        parse(&with("\"per-partition\"")).unwrap().pipelines[0].workers,
        Workers::PerPartition
    );
    assert_eq!(
        parse(&with("4")).unwrap().pipelines[0].workers,
        Workers::Fixed(4)
    );
    for (value, expected) in [
        ("0", "must be between 1 and 64"),
        ("65", "must be between 1 and 64"),
        ("-2", "must be between 1 and 64"),
        (
            "\"lots\"",
            "expected a number of workers or \"per-partition\"",
        ),
    ] {
        let message = parse(&with(value)).unwrap_err().to_string();
        assert!(
            message.starts_with("pipelines/test.toml:"),
            "{value}: {message}"
        );
        assert!(message.contains(expected), "{value}: {message}");
    }
}

/// Parses `text` with `CANARY` set to a secret that must never reach a message.
fn parse_with_canary(text: &str) -> Result<PipelineFile, ConfigError> {
    PipelineFile::parse_with(Path::new("pipelines/test.toml"), text, &|name| {
        (name == "CANARY").then(|| "hunter2-canary".to_owned())
    })
}

const WITH_SECRET: &str = r#"
[[pipeline]]
name = "p1"
source = { type = "generate", count = 5 }
sink = { type = "postgres", url = "postgres://weir:${CANARY}@127.0.0.1:5432/weir", table = "landing" }
dead_letter = { type = "file", path = "dlq.jsonl" }
"#;

#[test]
fn substituted_values_reach_the_config() {
    let file = parse_with_canary(WITH_SECRET).unwrap();
    let SinkConfig::Postgres(sink) = &file.pipelines[0].sink else {
        panic!("a postgres sink");
    };
    assert_eq!(
        sink.url.expose(),
        "postgres://weir:hunter2-canary@127.0.0.1:5432/weir"
    );
}

/// Every connector with every option that can hold a credential, each set from `${CANARY}`.
const EVERY_SECRET: &str = r#"
[[pipeline]]
name = "http"
source = { type = "http", url = "https://u:${CANARY}@api.example/x?key=${CANARY}", query = { token = "${CANARY}" }, headers = { Authorization = "Bearer ${CANARY}" } }
transforms = [{ plugin = "pii-mask", config = { fields = "email", salt = "${CANARY}", nested = { password = "${CANARY}" } } }]
sink = { type = "postgres", url = "host=127.0.0.1 user=weir password=${CANARY}", table = "landing" }
dead_letter = { type = "postgres", url = "postgres://weir@127.0.0.1/weir?password=${CANARY}", table = "dlq" }

[[pipeline]]
name = "pg"
source = { type = "postgres", url = "postgres://weir:${CANARY}@127.0.0.1/weir", table = "landing" }
sink = { type = "kafka", brokers = "127.0.0.1:9092", topic = "t", properties = { "sasl.password" = "${CANARY}", "ssl.key.pem" = "${CANARY}" } }
dead_letter = { type = "file", path = "dlq.jsonl" }

[[pipeline]]
name = "kafka"
source = { type = "kafka", brokers = "127.0.0.1:9092", topics = ["t"], group = "g", properties = { "sasl.jaas.config" = "${CANARY}" } }
sink = { type = "cassandra", nodes = ["127.0.0.1:9042"], keyspace = "k", table = "t" }
dead_letter = { type = "stdout" }
"#;

#[test]
fn no_config_struct_prints_a_secret() {
    let file = parse_with_canary(EVERY_SECRET).unwrap();
    let shown = [
        format!("{file:?}"),
        format!("{file:#?}"),
        format!("{:?}", file.pipelines[0].transforms[0]),
    ];
    for text in &shown {
        assert!(!text.contains("canary"), "{text}");
        assert!(text.contains("***"), "{text}");
    }
    for pipeline in &file.pipelines {
        for text in [
            pipeline.source.describe(),
            pipeline.sink.describe(),
            pipeline.dead_letter.describe(),
        ] {
            assert!(!text.contains("canary"), "{text}");
        }
    }
    // The plugin still gets its salt, and the clients their credentials.
    assert!(
        file.pipelines[0].transforms[0]
            .config_json()
            .contains("hunter2-canary")
    );
    let SourceConfig::Http(http) = &file.pipelines[0].source else {
        panic!("an http source");
    };
    assert_eq!(
        http.headers["Authorization"].expose(),
        "Bearer hunter2-canary"
    );
}

#[test]
fn durations_are_range_checked_naming_the_key() {
    let http = VALID.replace(
        "{ type = \"generate\", count = 5 }",
        "{ type = \"http\", url = \"http://x/\", interval_ms = 18446744073709551615 }",
    );
    let message = parse(&http).unwrap_err().to_string();
    assert!(
        message.contains("`pipeline[0].source.interval_ms`") && message.contains("at most"),
        "{message}"
    );
    // Each duration option, one at a time, just past the limit and at it.
    let too_long = MAX_DURATION_MS + 1;
    let cases = [
        (
            "pipeline[0].batch.linger_ms",
            format!("{VALID}batch = {{ linger_ms = {too_long} }}\n"),
        ),
        (
            "pipeline[0].limits.deadline_ms",
            format!("{VALID}limits = {{ deadline_ms = {too_long} }}\n"),
        ),
        (
            "pipeline[0].limits.batch_deadline_ms",
            format!("{VALID}limits = {{ batch_deadline_ms = {too_long} }}\n"),
        ),
        (
            "pipeline[0].source.timeout_ms",
            http.replace(
                "interval_ms = 18446744073709551615",
                &format!("timeout_ms = {too_long}"),
            ),
        ),
        (
            "pipeline[0].source.poll_interval_ms",
            VALID.replace(
                "{ type = \"generate\", count = 5 }",
                &format!("{{ type = \"postgres\", url = \"\", table = \"t\", poll_interval_ms = {too_long} }}"),
            ),
        ),
        (
            "pipeline[0].source.drain_timeout_ms",
            VALID.replace(
                "{ type = \"generate\", count = 5 }",
                &format!("{{ type = \"kafka\", brokers = \"b\", topics = [\"t\"], group = \"g\", drain_timeout_ms = {too_long} }}"),
            ),
        ),
        (
            "pipeline[0].source.session_timeout_ms",
            VALID.replace(
                "{ type = \"generate\", count = 5 }",
                &format!("{{ type = \"kafka\", brokers = \"b\", topics = [\"t\"], group = \"g\", session_timeout_ms = {too_long} }}"),
            ),
        ),
        (
            "pipeline[0].source.heartbeat_interval_ms",
            VALID.replace(
                "{ type = \"generate\", count = 5 }",
                &format!("{{ type = \"kafka\", brokers = \"b\", topics = [\"t\"], group = \"g\", heartbeat_interval_ms = {too_long} }}"),
            ),
        ),
        (
            "pipeline[0].source.max_poll_interval_ms",
            VALID.replace(
                "{ type = \"generate\", count = 5 }",
                &format!("{{ type = \"kafka\", brokers = \"b\", topics = [\"t\"], group = \"g\", max_poll_interval_ms = {too_long} }}"),
            ),
        ),
        (
            "pipeline[0].dead_letter.delivery_timeout_ms",
            VALID.replace(
                "{ type = \"file\", path = \"dlq.jsonl\" }",
                &format!("{{ type = \"kafka\", brokers = \"b\", topic = \"t\", delivery_timeout_ms = {too_long} }}"),
            ),
        ),
    ];
    for (key, text) in cases {
        let message = parse(&text).unwrap_err().to_string();
        assert!(
            message.contains(&format!("`{key}`")) && message.contains("must be at most"),
            "{key}: {message}"
        );
        let at_limit = text.replace(&too_long.to_string(), &MAX_DURATION_MS.to_string());
        match parse(&at_limit) {
            Ok(_) => {}
            // A drain must finish inside a poll, so a drain timeout at the limit leaves no room
            // for max_poll_interval_ms above it: the range check passes and that rule refuses.
            // Kafka's group timeouts at the limit break the rules between them (a heartbeat
            // within a third of the session, a poll interval at least the session): those rules
            // refuse them, not the range check.
            Err(error)
                if key.ends_with("session_timeout_ms")
                    || key.ends_with("heartbeat_interval_ms") =>
            {
                let message = error.to_string();
                assert!(
                    !message.contains("must be at most"),
                    "{key} at the limit: {message}"
                );
            }
            Err(error) if key.ends_with("drain_timeout_ms") => {
                let message = error.to_string();
                assert!(
                    message.contains("max_poll_interval_ms")
                        && !message.contains("must be at most"),
                    "{key} at the limit: {message}"
                );
            }
            Err(error) => panic!("{key} at the limit: {error}"),
        }
    }
}

#[test]
fn a_heartbeat_interval_too_large_to_triple_is_refused_not_a_panic() {
    let text = VALID.replace(
        "{ type = \"generate\", count = 5 }",
        "{ type = \"kafka\", brokers = \"b\", topics = [\"t\"], group = \"g\", heartbeat_interval_ms = 18446744073709551615 }",
    );
    let message = parse(&text).unwrap_err().to_string();
    assert!(
        message.contains("`pipeline[0].source.heartbeat_interval_ms`"),
        "{message}"
    );
}

#[test]
fn batch_size_and_max_in_flight_are_bounded_naming_the_key() {
    for (key, limit) in [("size", MAX_BATCH_SIZE), ("max_in_flight", MAX_IN_FLIGHT)] {
        let at_limit = format!("{VALID}batch = {{ {key} = {limit} }}\n");
        assert!(parse(&at_limit).is_ok(), "{key} = {limit}");
        let past = format!("{VALID}batch = {{ {key} = {} }}\n", limit + 1);
        let message = parse(&past).unwrap_err().to_string();
        assert!(
            message.contains(&format!("`pipeline[0].batch.{key}`"))
                && message.contains(&format!("between 1 and {limit}")),
            "{key}: {message}"
        );
    }
}

#[test]
fn a_plugin_named_like_a_stage_is_refused_and_one_used_twice_is_not() {
    let twice = VALID.replace(
        "{ plugin = \"pii-mask\", config = { fields = [\"email\"] } }",
        "{ plugin = \"user-profile\" }",
    );
    let file = parse(&twice).unwrap();
    assert_eq!(file.pipelines[0].transforms.len(), 2);
    for stage in ["source", "sink", "dead_letter"] {
        let text = VALID.replace("plugin = \"pii-mask\"", &format!("plugin = \"{stage}\""));
        let message = parse(&text).unwrap_err().to_string();
        assert!(
            message.contains("`pipeline[0].transforms[1].plugin`") && message.contains(stage),
            "{stage}: {message}"
        );
    }
}

#[test]
fn a_file_source_reads_lines_up_to_the_record_limit_unless_told() {
    let file_source = VALID.replace(
        "{ type = \"generate\", count = 5 }",
        "{ type = \"file\", path = \"in.jsonl\" }",
    );
    let line_limit = |text: &str| match &parse(text).unwrap().pipelines[0].source {
        SourceConfig::File(file) => file.max_line_bytes,
        _ => panic!("a file source"),
    };
    assert_eq!(line_limit(&file_source), Some(1 << 20));
    let limited = format!("{file_source}limits = {{ max_record_bytes = 4096 }}\n");
    assert_eq!(line_limit(&limited), Some(4096));
    let explicit = limited.replace(
        "path = \"in.jsonl\"",
        "path = \"in.jsonl\", max_line_bytes = 100",
    );
    assert_eq!(line_limit(&explicit), Some(100));
}

#[test]
fn a_postgres_source_reads_rows_up_to_the_record_limit_unless_told() {
    let tail = VALID.replace(
        "{ type = \"generate\", count = 5 }",
        "{ type = \"postgres\", url = \"postgres://weir@127.0.0.1/weir\", table = \"t\" }",
    );
    let row_limit = |text: &str| match &parse(text).unwrap().pipelines[0].source {
        SourceConfig::Postgres(postgres) => postgres.max_row_bytes,
        _ => panic!("a postgres source"),
    };
    assert_eq!(row_limit(&tail), Some(1 << 20));
    let limited = format!("{tail}limits = {{ max_record_bytes = 4096 }}\n");
    assert_eq!(row_limit(&limited), Some(4096));
    let explicit = limited.replace("table = \"t\"", "table = \"t\", max_row_bytes = 100");
    assert_eq!(row_limit(&explicit), Some(100));
    let zero = tail.replace("table = \"t\"", "table = \"t\", max_row_bytes = 0");
    let error = parse(&zero).unwrap_err().to_string();
    assert!(
        error.contains("max_row_bytes") && error.contains("at least 1"),
        "{error}"
    );
}

#[test]
fn a_syntax_error_shows_the_line_as_written() {
    let text = WITH_SECRET.replace(", table = \"landing\"", " table = \"landing\"");
    let message = parse_with_canary(&text).unwrap_err().to_string();
    assert!(message.contains("line 5"), "{message}");
    assert!(
        message.contains("postgres://weir:${CANARY}@127.0.0.1:5432/weir\" table"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn a_type_error_shows_the_line_as_written() {
    let text = WITH_SECRET.replace(
        "table = \"landing\"",
        "table = \"landing\", create_table = 1",
    );
    let message = parse_with_canary(&text).unwrap_err().to_string();
    assert!(message.starts_with("pipelines/test.toml:"), "{message}");
    assert!(message.contains("line 5"), "{message}");
    assert!(message.contains("${CANARY}"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn a_type_error_about_a_substituted_value_quotes_the_reference() {
    let text = WITH_SECRET.replace("count = 5", "count = \"${CANARY}\"");
    let message = parse_with_canary(&text).unwrap_err().to_string();
    assert!(message.contains("\"${CANARY}\""), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    // A message of our own that quotes the value.
    let text = WITH_SECRET.replace("name = \"p1\"", "name = \"p1\"\nworkers = \"x${CANARY}\"");
    let message = parse_with_canary(&text).unwrap_err().to_string();
    assert!(message.contains("`x${CANARY}`"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn an_invalid_substituted_value_is_quoted_as_written() {
    let text = WITH_SECRET.replace("table = \"landing\"", "table = \"${CANARY}\"");
    let message = parse_with_canary(&text).unwrap_err().to_string();
    assert!(message.contains("`pipeline[0].sink.table`"), "{message}");
    assert!(
        message.contains("`${CANARY}` is not a table name"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn an_unset_variable_names_it_its_line_and_key() {
    let message = PipelineFile::parse_with(Path::new("p.toml"), WITH_SECRET, &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        message
            .contains("line 5, `pipeline[0].sink.url`: environment variable `CANARY` is not set"),
        "{message}"
    );
}

#[test]
fn the_batch_deadline_is_positive_and_reaches_the_runtime() {
    let message = parse(&format!("{VALID}limits = {{ batch_deadline_ms = 0 }}\n"))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("`pipeline[0].limits.batch_deadline_ms`")
            && message.contains("at least 1"),
        "{message}"
    );
    let file = parse(&format!(
        "{VALID}limits = {{ deadline_ms = 50, batch_deadline_ms = 3000 }}\n"
    ))
    .unwrap();
    let limits = file.pipelines[0].limits.plugin_limits();
    assert_eq!(limits.deadline, Duration::from_millis(50));
    assert_eq!(limits.batch_deadline, Duration::from_millis(3000));
    let defaults = parse(VALID).unwrap().pipelines[0].limits.plugin_limits();
    assert_eq!(defaults.batch_deadline, Duration::from_secs(10));
}

#[test]
fn a_truncated_file_behind_a_resuming_source_is_refused() {
    let truncating = |source: &str, sink: &str| {
        VALID
            .replace("{ type = \"generate\", count = 5 }", source)
            .replace("{ type = \"stdout\" }", sink)
    };
    let truncate = "{ type = \"file\", path = \"out.jsonl\", mode = \"truncate\" }";
    // A source that starts over regenerates everything: truncating is what the quickstart does.
    assert!(parse(&truncating("{ type = \"generate\", count = 5 }", truncate)).is_ok());
    assert!(
        parse(&truncating(
            "{ type = \"file\", path = \"in.jsonl\" }",
            truncate
        ))
        .is_ok()
    );
    for resuming in [
        "{ type = \"file\", path = \"in.jsonl\", checkpoint = \"in.offset\" }",
        "{ type = \"kafka\", brokers = \"127.0.0.1:9092\", topics = [\"t\"], group = \"g\" }",
        "{ type = \"postgres\", url = \"postgres://weir@127.0.0.1/weir\", table = \"t\" }",
        "{ type = \"http\", url = \"http://127.0.0.1:1/\", journal = \"http.journal\" }",
    ] {
        let error = parse(&truncating(resuming, truncate))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("pipeline[0].sink.mode") && error.contains("`append`"),
            "{resuming}: {error}"
        );
        assert!(
            parse(&truncating(
                resuming,
                "{ type = \"file\", path = \"out.jsonl\" }"
            ))
            .is_ok()
        );
    }
    let dead_letters = truncating(
        "{ type = \"file\", path = \"in.jsonl\", checkpoint = \"in.offset\" }",
        "{ type = \"stdout\" }",
    )
    .replace(
        "path = \"dlq.jsonl\"",
        "path = \"dlq.jsonl\", mode = \"truncate\"",
    );
    let error = parse(&dead_letters).unwrap_err().to_string();
    assert!(error.contains("pipeline[0].dead_letter.mode"), "{error}");
}

#[test]
fn a_record_limit_of_zero_is_refused_naming_the_key() {
    let file_source = VALID.replace(
        "{ type = \"generate\", count = 5 }",
        "{ type = \"file\", path = \"in.jsonl\" }",
    );
    let message = parse(&format!(
        "{file_source}limits = {{ max_record_bytes = 0 }}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        message.contains("`pipeline[0].limits.max_record_bytes`") && message.contains("at least 1"),
        "{message}"
    );
    assert!(
        parse(&format!(
            "{file_source}limits = {{ max_record_bytes = 1 }}\n"
        ))
        .is_ok()
    );
}

#[test]
fn a_postgres_channel_that_could_inject_sql_is_refused_at_validate() {
    let tail = |channel: &str| {
        VALID.replace(
            "{ type = \"generate\", count = 5 }",
            &format!(
                "{{ type = \"postgres\", url = \"postgres://weir@127.0.0.1/weir\", table = \"t\", channel = {} }}",
                toml::Value::from(channel)
            ),
        )
    };
    for channel in [
        "weir_t",
        "Users_Changed",
        "orders-events",
        "app.events",
        "1st",
    ] {
        let parsed = parse(&tail(channel));
        assert!(parsed.is_ok(), "{channel}: {:?}", parsed.err());
    }
    for channel in [r#"x"; DROP TABLE t; --"#, &"c".repeat(64)] {
        let message = parse(&tail(channel)).unwrap_err().to_string();
        assert!(
            message.contains("`pipeline[0].source.channel`"),
            "{channel}: {message}"
        );
    }
}

#[test]
fn a_postgres_url_with_a_libpq_sslmode_is_refused_at_validate() {
    let sink = VALID.replace(
        "sink = { type = \"stdout\" }",
        "sink = { type = \"postgres\", url = \"postgres://weir:${CANARY}@127.0.0.1/weir?sslmode=verify-full\", table = \"t\" }",
    );
    let message = parse_with_canary(&sink).unwrap_err().to_string();
    assert!(
        message.contains("`pipeline[0].sink.url`")
            && message.contains("sslmode `verify-full`")
            && message.contains("`tls` table"),
        "{message}"
    );
    assert!(!message.contains("hunter2-canary"), "{message}");
}

#[test]
fn the_engine_limits_are_the_largest_any_pipeline_asks() {
    let raised = format!(
        "{VALID}limits = {{ core_instances = 40, tables = 9 }}\n{}limits = {{ memories = 6 }}\n",
        VALID
            .replace("name = \"p1\"", "name = \"p2\"")
            .replace("dlq.jsonl", "dlq-p2.jsonl")
    );
    let file = parse(&raised).unwrap();
    assert_eq!(
        file.component_limits(ComponentLimits::default()),
        ComponentLimits {
            core_instances: 40,
            memories: 6,
            tables: 9
        }
    );
    let floor = ComponentLimits {
        core_instances: 64,
        memories: 1,
        tables: 1,
    };
    assert_eq!(
        parse(VALID).unwrap().component_limits(floor),
        ComponentLimits {
            core_instances: 64,
            ..ComponentLimits::default()
        }
    );
}

#[test]
fn a_file_written_twice_or_read_and_written_by_one_pipeline_is_refused() {
    let second = VALID.replace("name = \"p1\"", "name = \"p2\"");
    // Two pipelines' dead letters into one file, the second written differently.
    let shared = format!(
        "{VALID}{}",
        second.replace("\"dlq.jsonl\"", "\"./dlq.jsonl\"")
    );
    let message = parse(&shared).unwrap_err().to_string();
    assert!(
        message.contains("`pipeline[1].dead_letter.path`")
            && message.contains("pipeline `p1`'s `dead_letter.path`")
            && message.contains("give each its own file"),
        "{message}"
    );
    let own = format!("{VALID}{}", second.replace("dlq.jsonl", "dlq-p2.jsonl"));
    parse(&own).unwrap();
    // A checkpoint that is also the sink's file.
    let checkpoint = VALID
        .replace(
            "source = { type = \"generate\", count = 5 }",
            "source = { type = \"file\", path = \"in.jsonl\", checkpoint = \"state/x\" }",
        )
        .replace(
            "sink = { type = \"stdout\" }",
            "sink = { type = \"file\", path = \"state/x\" }",
        );
    let message = parse(&checkpoint).unwrap_err().to_string();
    assert!(
        message.contains("`pipeline[0].sink.path`") && message.contains("`source.checkpoint`"),
        "{message}"
    );
    // A sink that writes the file its own source reads.
    let looped = VALID
        .replace(
            "source = { type = \"generate\", count = 5 }",
            "source = { type = \"file\", path = \"in.jsonl\", follow = true }",
        )
        .replace(
            "sink = { type = \"stdout\" }",
            "sink = { type = \"file\", path = \"in.jsonl\" }",
        );
    let message = parse(&looped).unwrap_err().to_string();
    assert!(message.contains("its own output"), "{message}");
}

#[test]
fn a_file_past_the_bound_is_refused_naming_it_and_one_at_the_bound_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let padded = |total: u64| {
        let mut text = VALID.to_owned();
        text.push('#');
        text.push_str(&" ".repeat(total as usize - text.len() - 1));
        text.push('\n');
        assert_eq!(text.len() as u64, total);
        text
    };
    let at_bound = dir.path().join("at.toml");
    std::fs::write(&at_bound, padded(MAX_PIPELINE_FILE_BYTES)).unwrap();
    assert_eq!(PipelineFile::load(&at_bound).unwrap().pipelines.len(), 1);

    let past_bound = dir.path().join("past.toml");
    std::fs::write(&past_bound, padded(MAX_PIPELINE_FILE_BYTES + 1)).unwrap();
    let error = PipelineFile::load(&past_bound).unwrap_err();
    assert!(matches!(error, ConfigError::TooLarge { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("{}:", past_bound.display()))
            && message.contains("larger than 4 MiB"),
        "{message}"
    );
}

#[test]
fn an_endless_device_is_refused_at_the_bound() {
    let error = PipelineFile::load(Path::new("/dev/zero")).unwrap_err();
    assert!(matches!(error, ConfigError::TooLarge { .. }), "{error}");
}

#[test]
fn a_kafka_source_topic_entry_names_its_index_when_it_is_neither_a_name_nor_a_pattern() {
    let with_topics = |topics: &str| {
        VALID.replace(
            "source = { type = \"generate\", count = 5 }",
            &format!(
                "source = {{ type = \"kafka\", brokers = \"b\", topics = {topics}, group = \"g\" }}"
            ),
        )
    };
    assert!(parse(&with_topics(r#"["users", '^orders-(eu|us)\.']"#)).is_ok());
    let message = parse(&with_topics(r#"["users", "^orders-["]"#))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("`pipeline[0].source.topics[1]`")
            && message.contains("not a valid pattern"),
        "{message}"
    );
    let message = parse(&with_topics(r#"["orders-*"]"#))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("`pipeline[0].source.topics[0]`") && message.contains("`^orders-*`"),
        "{message}"
    );
}

#[test]
fn a_kafka_topic_template_is_checked_at_validate_and_refused_for_dead_letters() {
    let with = |sink: &str, dead_letter: &str| {
        VALID
            .replace(
                "sink = { type = \"stdout\" }",
                &format!("sink = {{ type = \"kafka\", brokers = \"127.0.0.1:9092\", topic = {} }}", toml::Value::from(sink)),
            )
            .replace(
                "dead_letter = { type = \"file\", path = \"dlq.jsonl\" }",
                &format!("dead_letter = {{ type = \"kafka\", brokers = \"127.0.0.1:9092\", topic = {} }}", toml::Value::from(dead_letter)),
            )
    };
    for sink in ["users", "users-{{ nat }}", "{{ region }}.{{ kind }}-v1"] {
        let parsed = parse(&with(sink, "weir-dead"));
        assert!(parsed.is_ok(), "{sink}: {:?}", parsed.err());
    }
    for (sink, expected) in [
        ("users-{{ nat", "no `}}` closes"),
        ("users {{ nat }}", "' ' outside `{{ }}`"),
        ("users/all", "'/' is not a letter, digit"),
    ] {
        let message = parse(&with(sink, "weir-dead")).unwrap_err().to_string();
        assert!(
            message.contains("`pipeline[0].sink.topic`") && message.contains(expected),
            "{sink}: {message}"
        );
    }
    let message = parse(&with("users", "dead-{{ nat }}"))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("`pipeline[0].dead_letter.topic`")
            && message.contains("dead letters go to one topic"),
        "{message}"
    );
}
