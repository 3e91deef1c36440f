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
