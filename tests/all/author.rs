//! The plugin author's loop through the `weir` binary: `weir plugin new` gives a project that
//! `weir plugin build` and `weir plugin test` accept as it is, in each language; `weir plugin
//! test` names the field that differs and `--update` accepts the change; the example plugins
//! pass their golden files; `weir plugin dev` deploys an edit only when it builds and passes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{plugin_registry, repo_root, weir};

/// Where the generated Rust plugins compile: shared across runs, so their dependencies are
/// compiled once (the projects themselves are fresh temp folders every run).
fn rust_target() -> PathBuf {
    repo_root().join("target/author-plugins")
}

fn run(dir: &Path, args: &[&str]) -> Output {
    weir()
        .current_dir(dir)
        .args(args)
        .env("CARGO_TARGET_DIR", rust_target())
        .output()
        .expect("the weir binary runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_ok(output: &Output, what: &str) {
    assert!(output.status.success(), "{what} failed:\n{}", text(output));
}

/// `weir plugin new` + `build` + `test` on a fresh folder, then the native unit test for Rust.
fn new_build_test(lang: &str) {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("hello-{lang}");
    assert_ok(
        &run(dir.path(), &["plugin", "new", &name, "--lang", lang]),
        "weir plugin new",
    );
    assert_ok(
        &run(
            dir.path(),
            &["plugin", "build", &name, "--plugins", "registry"],
        ),
        "weir plugin build",
    );
    let tested = run(
        dir.path(),
        &["plugin", "test", &name, "--plugins", "registry"],
    );
    assert_ok(&tested, "weir plugin test");
    assert!(text(&tested).contains("ok: 3 records"), "{}", text(&tested));
}

#[test]
fn new_rust_plugin_builds_and_passes_its_golden_test() {
    new_build_test("rust");
}

#[test]
fn new_python_plugin_builds_and_passes_its_golden_test() {
    new_build_test("python");
}

#[test]
fn new_js_plugin_builds_and_passes_its_golden_test() {
    new_build_test("js");
}

#[test]
fn a_hostile_name_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["../escape", "a/b", "..", "/tmp/x"] {
        let output = run(dir.path(), &["plugin", "new", name]);
        assert!(!output.status.success(), "{name} was accepted");
        assert!(
            text(&output).contains("cannot name a plugin"),
            "{}",
            text(&output)
        );
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert!(!dir.path().parent().unwrap().join("escape").exists());
}

/// A copy of the filter example's samples, tested against the built `filter`.
fn filter_golden(dir: &Path) -> Vec<String> {
    let samples = repo_root().join("plugins/filter/samples");
    for file in ["input.jsonl", "expected.jsonl", "config.json"] {
        std::fs::copy(samples.join(file), dir.join(file)).unwrap();
    }
    let wasm = plugin_registry().join("filter.wasm");
    vec![
        "plugin".into(),
        "test".into(),
        wasm.display().to_string(),
        "--input".into(),
        dir.join("input.jsonl").display().to_string(),
        "--expect".into(),
        dir.join("expected.jsonl").display().to_string(),
        "--config".into(),
        std::fs::read_to_string(dir.join("config.json")).unwrap(),
    ]
}

#[test]
fn a_changed_expectation_fails_naming_the_field_and_update_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let args = filter_golden(dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_ok(&run(dir.path(), &args), "the filter's golden test");

    // Line 3 expects the record with id 3: make it expect another country.
    let expected = dir.path().join("expected.jsonl");
    let original = std::fs::read_to_string(&expected).unwrap();
    let mut lines: Vec<String> = original.lines().map(str::to_owned).collect();
    assert!(lines[2].contains("United States"), "{}", lines[2]);
    lines[2] = lines[2].replace("United States", "United Kingdom");
    std::fs::write(&expected, lines.join("\n") + "\n").unwrap();

    let failed = run(dir.path(), &args);
    let report = text(&failed);
    assert!(
        !failed.status.success(),
        "a changed expectation passed:\n{report}"
    );
    assert!(report.contains("record 3"), "{report}");
    assert!(
        report.contains("field `country`: expected \"United Kingdom\", actual \"United States\""),
        "{report}"
    );
    assert!(!report.contains("record 1 "), "{report}");

    let mut update = args.clone();
    update.push("--update");
    assert_ok(&run(dir.path(), &update), "weir plugin test --update");
    // The rewritten file holds what the plugin did: line 3 is back, and dead letters carry
    // their whole message (the committed file keeps only a substring).
    let updated = std::fs::read_to_string(&expected).unwrap();
    assert_eq!(updated.lines().nth(2), original.lines().nth(2));
    assert!(updated.contains("value is not valid JSON"), "{updated}");
    assert_ok(&run(dir.path(), &args), "the golden test after --update");
}

#[test]
fn the_rust_examples_pass_their_golden_files() {
    let registry = plugin_registry();
    for plugin in ["user-profile", "pii-mask", "filter"] {
        let output = run(
            &repo_root(),
            &[
                "plugin",
                "test",
                &format!("plugins/{plugin}"),
                "--plugins",
                registry.to_str().unwrap(),
            ],
        );
        assert_ok(&output, &format!("weir plugin test plugins/{plugin}"));
    }
}

#[test]
fn the_python_and_javascript_examples_pass_their_golden_files() {
    let registry = crate::polyglot::registry();
    for plugin in ["user-profile-py", "user-profile-js", "pii-mask-py"] {
        let output = run(
            &repo_root(),
            &[
                "plugin",
                "test",
                &format!("plugins/{plugin}"),
                "--plugins",
                registry.to_str().unwrap(),
            ],
        );
        assert_ok(&output, &format!("weir plugin test plugins/{plugin}"));
    }
}

/// A running `weir plugin dev` and the lines it printed so far.
struct Dev {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Dev {
    fn start(project: &Path, registry: &Path) -> Dev {
        let mut command = weir();
        command
            .args(["plugin", "dev"])
            .arg(project)
            .arg("--plugins")
            .arg(registry)
            .args(["--debounce-ms", "200"]);
        Dev::spawn(command)
    }

    /// Runs `command` (a `weir plugin dev` with its arguments) with the shared Rust target.
    fn spawn(mut command: Command) -> Dev {
        let mut child = command
            .env("CARGO_TARGET_DIR", rust_target())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the weir binary runs");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
        ] {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Dev { child, lines }
    }

    /// How many printed lines contain `text`.
    fn count(&self, text: &str) -> usize {
        self.count_all(&[text])
    }

    /// How many printed lines contain each of `texts`.
    fn count_all(&self, texts: &[&str]) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|line| texts.iter().all(|text| line.contains(text)))
            .count()
    }

    /// Waits for the process to end, within a generous deadline.
    fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "weir plugin dev did not stop; it printed:\n{}",
                self.lines.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_until(&self, what: &str, condition: impl Fn(&Dev) -> bool) {
        // Generous: the first round compiles the SDK's dependencies for wasm32-wasip2.
        let deadline = Instant::now() + Duration::from_secs(900);
        while !condition(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; weir plugin dev printed:\n{}",
                self.lines.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const BUILD_FAILED: &str = "build failed";
const TEST_FAILED: &str = "golden test failed";

#[test]
fn dev_deploys_an_edit_only_when_it_builds_and_passes_its_golden_test() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("tagger");
    let registry = dir.path().join("registry");
    assert_ok(
        &run(dir.path(), &["plugin", "new", "tagger", "--dir", "tagger"]),
        "weir plugin new",
    );
    // The golden file asks for a tag the pass-through template does not add yet.
    std::fs::write(project.join("samples/input.jsonl"), "{\"n\":1}\n").unwrap();
    std::fs::write(
        project.join("samples/expected.jsonl"),
        "{\"outputs\":[{\"n\":1,\"tagged\":true}]}\n",
    )
    .unwrap();
    let source = project.join("src/lib.rs");
    let template = std::fs::read_to_string(&source).unwrap();
    let pass_through = "Ok(vec![record.with_json(&document)?])";
    assert!(template.contains(pass_through));
    let with_body = |body: &str| template.replace(pass_through, body);
    let wasm = registry.join("tagger.wasm");

    let dev = Dev::start(&project, &registry);
    dev.wait_until("the first round to fail the golden test", |dev| {
        dev.count(TEST_FAILED) == 1
    });
    assert!(!wasm.exists(), "a failing version was deployed");

    // The fix: deployed, with its manifest.
    std::fs::write(
        &source,
        with_body(
            "let mut document = document;\n        document[\"tagged\"] = true.into();\n        Ok(vec![record.with_json(&document)?])",
        ),
    )
    .unwrap();
    dev.wait_until("the fix to be deployed", |_| wasm.exists());
    assert!(registry.join("tagger.toml").is_file());
    let deployed = std::fs::read(&wasm).unwrap();

    // An edit that does not compile: reported, the registry keeps the fix.
    let builds_failed = dev.count(BUILD_FAILED);
    std::fs::write(&source, with_body("Ok(vec![record.with_json(&document)?)")).unwrap();
    dev.wait_until("the broken build to be reported", |dev| {
        dev.count(BUILD_FAILED) > builds_failed
    });
    assert_eq!(std::fs::read(&wasm).unwrap(), deployed);

    // An edit that compiles but breaks the logic: the golden test stops it.
    let tests_failed = dev.count(TEST_FAILED);
    std::fs::write(
        &source,
        with_body(
            "let mut document = document;\n        document[\"tagged\"] = false.into();\n        Ok(vec![record.with_json(&document)?])",
        ),
    )
    .unwrap();
    dev.wait_until("the failing golden test to be reported", |dev| {
        dev.count(TEST_FAILED) > tests_failed
    });
    assert_eq!(std::fs::read(&wasm).unwrap(), deployed);
    assert!(
        dev.count("field `tagged`: expected true, actual false") > 0,
        "{}",
        dev.lines.lock().unwrap().join("\n")
    );

    // Ctrl-C ends it cleanly.
    let mut dev = dev;
    // SAFETY: kill(2) with a child's pid and SIGINT has no memory-safety preconditions.
    let signalled = unsafe { libc::kill(dev.child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(signalled, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = dev.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "weir plugin dev did not stop on Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "weir plugin dev exited with {status}");
}

/// `weir plugin new NAME` in `dir`: the project's folder and its `src/lib.rs`. Each test names
/// its own plugin: the tests build at once in one target folder, where a plugin's component
/// lands under its name.
fn new_plugin(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    assert_ok(
        &run(dir, &["plugin", "new", name, "--dir", name]),
        "weir plugin new",
    );
    let project = dir.join(name);
    let source = project.join("src/lib.rs");
    (project, source)
}

#[test]
fn dev_in_its_project_with_the_default_registry_does_not_rebuild_its_own_deploys() {
    let dir = tempfile::tempdir().unwrap();
    let (project, source) = new_plugin(dir.path(), "looper");
    // `weir plugin dev` in the project's folder: PATH `.`, the registry `plugin-registry`
    // inside it. The debug log names every change that starts a round.
    let mut command = weir();
    command
        .current_dir(&project)
        .args(["plugin", "dev", "--debounce-ms", "200"])
        .env("WEIR_LOG", "info,weir::cli::plugin_dev=debug");
    let dev = Dev::spawn(command);
    dev.wait_until("the first round to deploy", |dev| {
        dev.count("round 1: deployed") == 1
    });
    let wasm = project.join("plugin-registry/looper.wasm");
    assert!(wasm.is_file());

    // One edit: one more round. Had the deploy above woken the watcher, its change would be
    // logged before this round starts, and the round counter would be past 2.
    let mut text = std::fs::read_to_string(&source).unwrap();
    text.push_str("// an edit\n");
    std::fs::write(&source, text).unwrap();
    dev.wait_until("the edit to be deployed", |dev| {
        dev.count(": deployed") == 2
    });
    // The log line of the edit, after any of the registry's in the same stream.
    dev.wait_until("the edit to be logged", |dev| {
        dev.count_all(&["Changed.", "src/lib.rs"]) > 0
    });
    let lines = dev.lines.lock().unwrap().join("\n");
    assert_eq!(dev.count("round 2: deployed"), 1, "{lines}");
    assert_eq!(
        dev.count_all(&["Changed.", "plugin-registry"]),
        0,
        "a change in the registry woke the watcher:\n{lines}"
    );
}

#[test]
fn dev_stopped_during_a_build_deploys_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (project, _) = new_plugin(dir.path(), "stopper");
    let registry = dir.path().join("registry");
    // A cargo that says it started, then waits for the gate (a FIFO) before building.
    let started = dir.path().join("started");
    let gate = dir.path().join("gate");
    let path = std::ffi::CString::new(gate.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a NUL-terminated path has no memory-safety preconditions.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let cargo = dir.path().join("cargo-gated");
    std::fs::write(
        &cargo,
        "#!/bin/sh\necho started >> \"$GATED_STARTED\"\nread line < \"$GATED_GATE\"\nexec \"$GATED_CARGO\" \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&cargo, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut command = weir();
    command
        .args(["plugin", "dev"])
        .arg(&project)
        .arg("--plugins")
        .arg(&registry)
        .env("CARGO", &cargo)
        .env("GATED_STARTED", &started)
        .env("GATED_GATE", &gate)
        .env(
            "GATED_CARGO",
            std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
        );
    let mut dev = Dev::spawn(command);
    dev.wait_until("the first build to start", |_| started.exists());
    // SAFETY: kill(2) with a child's pid and SIGTERM has no memory-safety preconditions.
    let signalled = unsafe { libc::kill(dev.child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(signalled, 0);
    // The build goes on and passes its golden test, but is not deployed.
    std::fs::write(&gate, "go\n").unwrap();
    dev.wait_until("the first round to end", |dev| {
        dev.count("stopped before deploying") + dev.count("round 1:") > 0
    });
    let status = dev.wait_for_exit();
    let lines = dev.lines.lock().unwrap().join("\n");
    assert!(
        status.success(),
        "weir plugin dev exited with {status}:\n{lines}"
    );
    assert_eq!(dev.count("stopped before deploying"), 1, "{lines}");
    assert!(
        !registry.join("stopper.wasm").exists(),
        "deployed after SIGTERM:\n{lines}"
    );
}
