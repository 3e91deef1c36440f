//! `weir plugin test`: runs a built component over sample records through the same runtime,
//! limits and manifest handling as `weir run`, and compares what comes out with a golden file,
//! so a plugin change is checked before it reaches a running pipeline.
//!
//! The input has one record value per line. The expected file has one line per input record, in
//! order, each a JSON object with exactly one key:
//! - `{"outputs": [V, ...]}`: the record's outputs, each compared as a JSON value (key order and
//!   spacing do not matter; an output that is not JSON is compared as a JSON string of its text);
//!   `[]` when the plugin drops the record;
//! - `{"dead_letter": {"kind": K, "message": M}}`: the record is dead-lettered with error kind K
//!   (`bad-record`, `plugin-failure`, `trap`, `timeout`) and a message containing M.
//!
//! Blank lines are skipped in both files.

use super::stdout::{StdoutError, outln};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;
use weir::record::Record;
use weir::registry::{Capability, Manifest, PluginFile, PluginVersion, read_plugin_file};
use weir::runtime::{LoadedPlugin, PluginLimits, PluginRuntime, RecordError, StepRequest};

use super::plugin_build::project_name;

/// Largest input file read, in bytes.
const MAX_INPUT_BYTES: u64 = 64 << 20;
/// Largest expected file read, in bytes.
const MAX_EXPECTED_BYTES: u64 = 64 << 20;
/// Most differences printed per record; the rest are counted.
const MAX_DIFFERENCES: usize = 20;
/// Longest excerpt of a value printed in a difference.
const MAX_EXCERPT_CHARS: usize = 160;

/// What `weir plugin test` was asked for.
#[derive(Debug, Clone)]
pub struct TestRequest {
    /// A plugin project folder (its component is `REGISTRY/NAME.wasm`) or a `.wasm` file.
    pub target: PathBuf,
    /// The registry folder a project's component was built into.
    pub registry: PathBuf,
    /// The sample input; default `PATH/samples/input.jsonl`.
    pub input: Option<PathBuf>,
    /// The expected file; default `PATH/samples/expected.jsonl`.
    pub expect: Option<PathBuf>,
    /// The plugin's config as a JSON object; default `PATH/samples/config.json` when present.
    pub config: Option<String>,
    /// Rewrite the expected file with what the plugin did instead of comparing.
    pub update: bool,
    /// Capabilities granted, when the manifest asks for them.
    pub allow: Vec<Capability>,
    /// Deadline and memory cap per call, as a pipeline's `limits` gives them.
    pub limits: PluginLimits,
    /// Largest input line (one record), in bytes.
    pub max_record_bytes: usize,
}

/// A golden test resolved to files.
#[derive(Debug, Clone)]
pub struct Golden {
    /// The plugin's name.
    pub name: String,
    /// The component to run.
    pub component: PathBuf,
    /// Its manifest (`NAME.toml`; missing is empty).
    pub manifest: PathBuf,
    /// The sample input.
    pub input: PathBuf,
    /// The expected file.
    pub expect: PathBuf,
    /// A config file used when no config is given.
    pub config_file: Option<PathBuf>,
}

impl Golden {
    /// The golden test of the project at `dir`, run on `component`.
    pub fn for_project(dir: &Path, component: PathBuf) -> anyhow::Result<Golden> {
        let name = project_name(dir)?;
        Ok(Golden {
            manifest: dir.join(format!("{name}.toml")),
            name,
            component,
            input: dir.join("samples/input.jsonl"),
            expect: dir.join("samples/expected.jsonl"),
            config_file: Some(dir.join("samples/config.json")),
        })
    }

    /// The golden test a request names.
    pub fn resolve(request: &TestRequest) -> anyhow::Result<Golden> {
        let target = &request.target;
        let mut golden = if target.is_dir() {
            let name = project_name(target)?;
            let component = request.registry.join(format!("{name}.wasm"));
            if !component.is_file() {
                bail!(
                    "{} is not built: run `weir plugin build {}{}` first",
                    component.display(),
                    target.display(),
                    registry_flag(&request.registry)
                );
            }
            Golden::for_project(target, component)?
        } else if target.extension().is_some_and(|e| e == "wasm") {
            let name = target
                .file_stem()
                .and_then(|s| s.to_str())
                .context("the .wasm file needs a UTF-8 name")?
                .to_owned();
            let (Some(input), Some(expect)) = (&request.input, &request.expect) else {
                bail!(
                    "testing the component {} needs --input FILE and --expect FILE (a project folder finds them in samples/)",
                    target.display()
                );
            };
            Golden {
                manifest: target.with_file_name(format!("{name}.toml")),
                name,
                component: target.clone(),
                input: input.clone(),
                expect: expect.clone(),
                config_file: None,
            }
        } else {
            bail!(
                "{}: pass a plugin project folder or a built .wasm file",
                target.display()
            );
        };
        if let Some(input) = &request.input {
            golden.input.clone_from(input);
        }
        if let Some(expect) = &request.expect {
            golden.expect.clone_from(expect);
        }
        Ok(golden)
    }
}

fn registry_flag(registry: &Path) -> String {
    if registry == Path::new(weir::registry::DEFAULT_DIR) {
        String::new()
    } else {
        format!(" --plugins {}", registry.display())
    }
}

/// What one input record became.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Outputs(Vec<Value>),
    DeadLetter { kind: String, message: String },
}

impl Outcome {
    fn from_result(result: Result<weir::record::Outputs, RecordError>) -> Outcome {
        match result {
            Ok(outputs) => Outcome::Outputs(
                outputs
                    .iter()
                    .map(|record| {
                        serde_json::from_slice(&record.value).unwrap_or_else(|_| {
                            Value::String(String::from_utf8_lossy(&record.value).into_owned())
                        })
                    })
                    .collect(),
            ),
            Err(error) => Outcome::DeadLetter {
                kind: error.kind.as_str().to_owned(),
                message: error.message,
            },
        }
    }

    fn to_line(&self) -> Value {
        match self {
            Outcome::Outputs(values) => serde_json::json!({ "outputs": values }),
            Outcome::DeadLetter { kind, message } => {
                serde_json::json!({ "dead_letter": { "kind": kind, "message": message } })
            }
        }
    }
}

/// One line of the expected file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expectation {
    /// The outputs the record must give, as JSON values, in order.
    #[serde(default)]
    outputs: Option<Vec<Value>>,
    /// The dead letter the record must become instead.
    #[serde(default)]
    dead_letter: Option<ExpectedDeadLetter>,
}

/// An expected dead letter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedDeadLetter {
    /// The error kind: `bad-record`, `plugin-failure`, `trap` or `timeout`.
    kind: String,
    /// Text the error message must contain; empty matches any message.
    #[serde(default)]
    message: String,
}

/// One input record: its line number and value.
#[derive(Debug)]
struct Sample {
    line: usize,
    value: Vec<u8>,
}

/// The result of a golden test.
#[derive(Debug, Default)]
pub struct Report {
    /// Records run.
    pub records: usize,
    /// A readable report of each mismatching record (empty when all match).
    pub mismatches: Vec<String>,
    /// Problems with the files as a whole (line counts).
    pub problems: Vec<String>,
}

impl Report {
    /// Whether every record matched.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty() && self.problems.is_empty()
    }
}

/// Runs `weir plugin test`.
pub fn test(request: &TestRequest) -> anyhow::Result<ExitCode> {
    let golden = Golden::resolve(request)?;
    let runtime = runtime()?;
    if request.update {
        let outcomes = run(&runtime, &golden, request, &read_component(&golden)?)?;
        let mut text = String::new();
        for (_, outcome) in &outcomes {
            text.push_str(&outcome.to_line().to_string());
            text.push('\n');
        }
        write_atomically(&golden.expect, &text)?;
        outln!(
            "wrote {} expectations to {}: review them (git diff) before committing",
            outcomes.len(),
            golden.expect.display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let report = check(&runtime, &golden, request)?;
    print_report(&golden, &report)?;
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The runtime `weir run` would build: the same engine settings and compiled cache.
pub fn runtime() -> anyhow::Result<PluginRuntime> {
    let cache = weir::runtime::default_cache_dir().map(weir::runtime::CompiledCache::new);
    Ok(PluginRuntime::new(cache)?)
}

/// Prints the report: every mismatching record, then a summary line.
pub fn print_report(golden: &Golden, report: &Report) -> Result<(), StdoutError> {
    for mismatch in &report.mismatches {
        outln!("{mismatch}")?;
    }
    for problem in &report.problems {
        outln!("{problem}")?;
    }
    let differing = report.mismatches.len();
    if report.passed() {
        outln!(
            "ok: {} records of {} match {}",
            report.records,
            golden.input.display(),
            golden.expect.display()
        )?;
    } else {
        outln!(
            "FAILED: {differing} of {} records differ from {}{}; after reviewing the change, `--update` rewrites it",
            report.records,
            golden.expect.display(),
            if report.problems.is_empty() {
                ""
            } else {
                " (and the files do not line up)"
            }
        )?;
    }
    Ok(())
}

/// Runs the golden test and compares with the expected file.
pub fn check(
    runtime: &PluginRuntime,
    golden: &Golden,
    request: &TestRequest,
) -> anyhow::Result<Report> {
    let component = read_component(golden)?;
    check_component(runtime, golden, request, &component)
}

/// [`check`] on the component's bytes, read by the caller (`weir plugin dev` deploys the very
/// bytes it tested).
pub fn check_component(
    runtime: &PluginRuntime,
    golden: &Golden,
    request: &TestRequest,
    component: &[u8],
) -> anyhow::Result<Report> {
    let expected = read_expected(&golden.expect)?;
    let outcomes = run(runtime, golden, request, component)?;
    let mut report = Report {
        records: outcomes.len(),
        ..Report::default()
    };
    for (index, (sample, actual)) in outcomes.iter().enumerate() {
        let Some((expect_line, expectation)) = expected.get(index) else {
            break;
        };
        let differences = compare(expectation, actual);
        if !differences.is_empty() {
            let mut text = format!(
                "record {} ({} line {}, expected on line {expect_line}): {}",
                index + 1,
                golden.input.display(),
                sample.line,
                excerpt(&String::from_utf8_lossy(&sample.value))
            );
            for difference in differences {
                let _ = write!(text, "\n  {difference}");
            }
            report.mismatches.push(text);
        }
    }
    if expected.len() != outcomes.len() {
        report.problems.push(format!(
            "{} has {} records but {} has {} expectations: one line per input record, in order",
            golden.input.display(),
            outcomes.len(),
            golden.expect.display(),
            expected.len()
        ));
    }
    Ok(report)
}

/// Runs every sample through a fresh instance, one record per call, as `weir run` would with
/// the manifest, config, grants and limits of the request.
fn run(
    runtime: &PluginRuntime,
    golden: &Golden,
    request: &TestRequest,
    component: &[u8],
) -> anyhow::Result<Vec<(Sample, Outcome)>> {
    let samples = read_samples(&golden.input, request.max_record_bytes)?;
    let manifest = Manifest::load(&golden.manifest)?;
    let config = config(golden, request)?;
    let plugin: Arc<LoadedPlugin> = LoadedPlugin::from_bytes(runtime, &golden.name, component)?;
    let version = PluginVersion {
        plugin,
        manifest: Arc::new(manifest),
    };
    let mut instance = version
        .instantiate(StepRequest {
            config: Some(&config),
            allow: &request.allow,
            limits: request.limits,
        })
        .map_err(|e| match e {
            weir::runtime::PluginError::Init { .. } => anyhow::anyhow!(
                "{e}\n(the config came from {} over the manifest's [config]; `--allow CAPABILITY` grants a capability)",
                config_source(golden, request)
            ),
            other => other.into(),
        })?;
    let mut outcomes = Vec::with_capacity(samples.len());
    for sample in samples {
        let record = Record::from_value(sample.value.clone());
        let result = instance
            .transform(std::slice::from_ref(&record))
            .pop()
            .unwrap_or_else(|| {
                Err(RecordError {
                    kind: weir::record::RecordErrorKind::PluginFailure,
                    message: "the plugin returned no result for the record".into(),
                })
            });
        outcomes.push((sample, Outcome::from_result(result)));
    }
    Ok(outcomes)
}

/// The golden test's component, read once within the registry's cap.
fn read_component(golden: &Golden) -> anyhow::Result<Vec<u8>> {
    read_plugin_file(&golden.component, PluginFile::Component)
        .with_context(|| format!("cannot read plugin file {}", golden.component.display()))
}

fn config_source(golden: &Golden, request: &TestRequest) -> String {
    match (&request.config, &golden.config_file) {
        (Some(_), _) => "--config".into(),
        (None, Some(file)) if file.is_file() => file.display().to_string(),
        _ => "no config (none given, no samples/config.json)".into(),
    }
}

/// The pipeline-side config: `--config`, else the project's `samples/config.json`, else none.
fn config(
    golden: &Golden,
    request: &TestRequest,
) -> anyhow::Result<serde_json::Map<String, Value>> {
    let (text, from) = match (&request.config, &golden.config_file) {
        (Some(text), _) => (text.clone(), "--config".to_owned()),
        (None, Some(file)) if file.is_file() => {
            (read_bounded(file, 1 << 20)?, file.display().to_string())
        }
        _ => return Ok(serde_json::Map::new()),
    };
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => bail!("{from}: the config must be a JSON object, got {other}"),
        Err(e) => bail!("{from}: the config is not valid JSON: {e}"),
    }
}

fn read_bounded(path: &Path, limit: u64) -> anyhow::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut text = String::new();
    file.take(limit + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {} (it must be UTF-8 text)", path.display()))?;
    if text.len() as u64 > limit {
        bail!(
            "{} is larger than {} MiB: keep golden files small",
            path.display(),
            limit >> 20
        );
    }
    Ok(text)
}

fn read_samples(path: &Path, max_record_bytes: usize) -> anyhow::Result<Vec<Sample>> {
    let text = read_bounded(path, MAX_INPUT_BYTES)?;
    let mut samples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > max_record_bytes {
            bail!(
                "{} line {}: {} bytes, over the {max_record_bytes}-byte limit for one record (--max-record-bytes)",
                path.display(),
                index + 1,
                line.len()
            );
        }
        samples.push(Sample {
            line: index + 1,
            value: line.as_bytes().to_vec(),
        });
    }
    // A test of no records passes whatever the plugin does, and `--update` would write a golden
    // file that always passes.
    if samples.is_empty() {
        bail!(
            "{} holds no records (every line is blank): write at least one record value per line, then run the test (or `--update`) again",
            path.display()
        );
    }
    Ok(samples)
}

fn read_expected(path: &Path) -> anyhow::Result<Vec<(usize, Expectation)>> {
    let text = read_bounded(path, MAX_EXPECTED_BYTES)
        .with_context(|| "create it with `weir plugin test --update`, then review it")?;
    let mut expected = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {}", path.display(), index + 1);
        let expectation: Expectation = serde_json::from_str(line).with_context(|| {
            format!(
                "{}: expected {{\"outputs\": [...]}} or {{\"dead_letter\": {{\"kind\": ..., \"message\": ...}}}}",
                at()
            )
        })?;
        if expectation.outputs.is_some() == expectation.dead_letter.is_some() {
            bail!("{}: give exactly one of `outputs` and `dead_letter`", at());
        }
        expected.push((index + 1, expectation));
    }
    Ok(expected)
}

/// The differences between what was expected of a record and what it became.
fn compare(expectation: &Expectation, actual: &Outcome) -> Vec<String> {
    let mut differences = Vec::new();
    match (expectation, actual) {
        (
            Expectation {
                outputs: Some(expected),
                ..
            },
            Outcome::Outputs(actual),
        ) => {
            if expected.len() != actual.len() {
                differences.push(format!(
                    "expected {} output(s), got {}",
                    expected.len(),
                    actual.len()
                ));
            }
            for (index, (expected, actual)) in expected.iter().zip(actual).enumerate() {
                let mut found = Vec::new();
                diff_values("", expected, actual, &mut found);
                let prefix = if expected_many(expectation) {
                    format!("output {}: ", index + 1)
                } else {
                    String::new()
                };
                differences.extend(found.into_iter().map(|d| format!("{prefix}{d}")));
            }
            for (index, extra) in actual.iter().enumerate().skip(expected.len()) {
                differences.push(format!(
                    "output {} not expected: {}",
                    index + 1,
                    excerpt(&extra.to_string())
                ));
            }
            for (index, missing) in expected.iter().enumerate().skip(actual.len()) {
                differences.push(format!(
                    "output {} missing: expected {}",
                    index + 1,
                    excerpt(&missing.to_string())
                ));
            }
        }
        (
            Expectation {
                outputs: Some(expected),
                ..
            },
            Outcome::DeadLetter { kind, message },
        ) => differences.push(format!(
            "expected {} output(s), got a dead letter: {kind}: {}",
            expected.len(),
            excerpt(message)
        )),
        (
            Expectation {
                dead_letter: Some(expected),
                ..
            },
            Outcome::Outputs(actual),
        ) => differences.push(format!(
            "expected a dead letter ({}, message containing {:?}), got {} output(s){}",
            expected.kind,
            expected.message,
            actual.len(),
            actual
                .first()
                .map(|first| format!(": {}", excerpt(&first.to_string())))
                .unwrap_or_default()
        )),
        (
            Expectation {
                dead_letter: Some(expected),
                ..
            },
            Outcome::DeadLetter { kind, message },
        ) => {
            if &expected.kind != kind {
                differences.push(format!(
                    "dead-letter kind: expected {}, actual {kind} ({})",
                    expected.kind,
                    excerpt(message)
                ));
            }
            if !message.contains(&expected.message) {
                differences.push(format!(
                    "dead-letter message: expected it to contain {:?}, actual {:?}",
                    expected.message,
                    excerpt(message)
                ));
            }
        }
        // read_expected guarantees exactly one of the two.
        (Expectation { .. }, _) => {}
    }
    if differences.len() > MAX_DIFFERENCES {
        let more = differences.len() - MAX_DIFFERENCES;
        differences.truncate(MAX_DIFFERENCES);
        differences.push(format!("... and {more} more differences"));
    }
    differences
}

fn expected_many(expectation: &Expectation) -> bool {
    expectation.outputs.as_ref().is_some_and(|o| o.len() > 1)
}

/// Appends to `out` one line per field where `actual` differs from `expected`, naming the field
/// as a dotted path (`name.first`, `tags[1]`).
fn diff_values(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    let field = |path: &str| {
        if path.is_empty() {
            "the value".to_owned()
        } else {
            format!("field `{path}`")
        }
    };
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match (expected, actual) {
        (Value::Object(expected), Value::Object(actual)) => {
            for (key, want) in expected {
                match actual.get(key) {
                    Some(got) => diff_values(&join(key), want, got, out),
                    None => out.push(format!(
                        "{}: expected {}, actual: missing",
                        field(&join(key)),
                        excerpt(&want.to_string())
                    )),
                }
            }
            for (key, got) in actual {
                if !expected.contains_key(key) {
                    out.push(format!(
                        "{}: not expected, actual {}",
                        field(&join(key)),
                        excerpt(&got.to_string())
                    ));
                }
            }
        }
        (Value::Array(expected), Value::Array(actual)) if expected.len() == actual.len() => {
            for (index, (want, got)) in expected.iter().zip(actual).enumerate() {
                diff_values(&format!("{path}[{index}]"), want, got, out);
            }
        }
        _ if expected != actual => out.push(format!(
            "{}: expected {}, actual {}",
            field(path),
            excerpt(&expected.to_string()),
            excerpt(&actual.to_string())
        )),
        _ => {}
    }
}

fn excerpt(text: &str) -> String {
    if text.chars().count() <= MAX_EXCERPT_CHARS {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(MAX_EXCERPT_CHARS).collect();
        format!("{cut}...")
    }
}

/// Writes `text` to `path` through a hidden temporary file and a rename.
pub fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .with_context(|| format!("{} names no file", path.display()))?;
    let temporary = path.with_file_name(format!(".{file}.partial"));
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&temporary, text).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expectation(line: &str) -> Expectation {
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn outputs_compare_as_json_and_name_the_differing_field() {
        let expect = expectation(r#"{"outputs":[{"b": 2, "a": {"x": [1, 2]}}]}"#);
        let same = Outcome::Outputs(vec![json!({"a": {"x": [1, 2]}, "b": 2})]);
        assert!(compare(&expect, &same).is_empty());
        let other = Outcome::Outputs(vec![json!({"a": {"x": [1, 3]}, "b": 2, "c": 0})]);
        let differences = compare(&expect, &other);
        assert_eq!(
            differences,
            vec![
                "field `a.x[1]`: expected 2, actual 3".to_owned(),
                "field `c`: not expected, actual 0".to_owned()
            ]
        );
    }

    #[test]
    fn dead_letters_compare_by_kind_and_message_substring() {
        let expect = expectation(r#"{"dead_letter":{"kind":"bad-record","message":"JSON"}}"#);
        let ok = Outcome::DeadLetter {
            kind: "bad-record".into(),
            message: "value is not valid JSON".into(),
        };
        assert!(compare(&expect, &ok).is_empty());
        let wrong = Outcome::DeadLetter {
            kind: "trap".into(),
            message: "boom".into(),
        };
        assert_eq!(compare(&expect, &wrong).len(), 2);
        assert_eq!(
            compare(&expect, &Outcome::Outputs(vec![])),
            vec![r#"expected a dead letter (bad-record, message containing "JSON"), got 0 output(s)"#.to_owned()]
        );
    }

    #[test]
    fn an_expectation_needs_exactly_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        std::fs::write(&path, "{}\n").unwrap();
        let error = format!("{:#}", read_expected(&path).unwrap_err());
        assert!(
            error.contains("line 1") && error.contains("exactly one"),
            "{error}"
        );
        std::fs::write(&path, "{\"output\": []}\n").unwrap();
        let error = format!("{:#}", read_expected(&path).unwrap_err());
        assert!(error.contains("line 1"), "{error}");
    }

    #[test]
    fn an_oversized_input_line_is_refused_with_its_line_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, format!("{{}}\n\n\"{}\"\n", "x".repeat(100))).unwrap();
        let error = read_samples(&path, 50).unwrap_err().to_string();
        assert!(error.contains("line 3"), "{error}");
        assert_eq!(read_samples(&path, 1000).unwrap().len(), 2);
    }

    #[test]
    fn an_input_of_no_records_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        for empty in ["", "\n", "  \n\n"] {
            std::fs::write(&path, empty).unwrap();
            let error = read_samples(&path, 1000).unwrap_err().to_string();
            assert!(
                error.contains("in.jsonl") && error.contains("no records"),
                "{empty:?}: {error}"
            );
        }
    }
}
