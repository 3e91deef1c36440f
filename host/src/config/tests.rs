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
        sink.url,
        "postgres://weir:hunter2-canary@127.0.0.1:5432/weir"
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
