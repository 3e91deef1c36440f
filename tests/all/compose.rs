//! The Docker Compose file users run: every service, port and volume the docs name is there,
//! ports are bound to loopback, health checks gate dependents, and weir uses compose host names.

use serde_yaml::Value;

use crate::support::repo_root;

fn compose() -> Value {
    let text = std::fs::read_to_string(repo_root().join("docker-compose-infra.yml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn service<'a>(file: &'a Value, name: &str) -> &'a Value {
    file["services"]
        .get(name)
        .unwrap_or_else(|| panic!("service `{name}` is missing"))
}

fn published(service: &Value) -> Vec<String> {
    service["ports"]
        .as_sequence()
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| p.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_service_is_there_with_its_ports_on_loopback() {
    let file = compose();
    let expected = [
        ("kafka", "9094"),
        ("schema-registry", "8081"),
        ("kafka-ui", "8080"),
        ("postgres", "5432"),
        ("cassandra", "9042"),
        ("weir", "9620"),
    ];
    for (name, port) in expected {
        let ports = published(service(&file, name));
        assert!(
            ports
                .iter()
                .any(|p| p == &format!("127.0.0.1:{port}:{port}")),
            "{name} publishes {port} on 127.0.0.1: {ports:?}"
        );
    }
    for (name, definition) in file["services"].as_mapping().unwrap() {
        for port in published(definition) {
            assert!(
                port.starts_with("127.0.0.1:"),
                "{name:?} publishes {port} beyond loopback"
            );
        }
    }
}

#[test]
fn dependencies_wait_for_health_checks() {
    let file = compose();
    for (name, definition) in file["services"].as_mapping().unwrap() {
        let Some(depends) = definition["depends_on"].as_mapping() else {
            continue;
        };
        for (dependency, condition) in depends {
            assert_eq!(
                condition["condition"], "service_healthy",
                "{name:?} -> {dependency:?}"
            );
            let dependency = service(&file, dependency.as_str().unwrap());
            assert!(
                dependency["healthcheck"]["test"].is_sequence(),
                "{dependency:?} has no health check"
            );
        }
    }
}

#[test]
fn named_volumes_are_declared_and_used() {
    let file = compose();
    let declared: Vec<&str> = file["volumes"]
        .as_mapping()
        .unwrap()
        .keys()
        .filter_map(Value::as_str)
        .collect();
    for volume in ["kafka-data", "postgres-data", "cassandra-data"] {
        assert!(declared.contains(&volume), "{volume} is declared");
        let used = file["services"]
            .as_mapping()
            .unwrap()
            .values()
            .any(|definition| {
                definition["volumes"].as_sequence().is_some_and(|mounts| {
                    mounts.iter().any(|m| {
                        m.as_str()
                            .is_some_and(|m| m.starts_with(&format!("{volume}:")))
                    })
                })
            });
        assert!(used, "{volume} is mounted by a service");
    }
}

#[test]
fn weir_uses_compose_host_names_and_the_plugin_folder() {
    let file = compose();
    let weir = service(&file, "weir");
    let environment = &weir["environment"];
    assert_eq!(environment["WEIR_KAFKA_BROKERS"], "kafka:9092");
    assert_eq!(environment["WEIR_CASSANDRA_NODES"], "cassandra:9042");
    assert!(
        environment["WEIR_POSTGRES_URL"]
            .as_str()
            .unwrap()
            .contains("@postgres:5432/")
    );
    let mounts = weir["volumes"].as_sequence().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m.as_str() == Some("./plugin-registry:/app/plugin-registry"))
    );
    let command: Vec<&str> = weir["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(command.contains(&"examples/seed.toml"), "{command:?}");
    assert!(repo_root().join("examples/seed.toml").is_file());
}

#[test]
fn the_docs_name_only_what_the_file_has() {
    let docs = std::fs::read_to_string(repo_root().join("docs/services.md")).unwrap();
    let file = compose();
    let services: Vec<&str> = file["services"]
        .as_mapping()
        .unwrap()
        .keys()
        .filter_map(Value::as_str)
        .collect();
    let table: Vec<&str> = docs
        .split("## Without Docker")
        .next()
        .unwrap()
        .lines()
        .filter(|line| {
            line.starts_with("| ") && !line.starts_with("| service") && !line.starts_with("|---")
        })
        .filter_map(|line| line.split('|').nth(1).map(str::trim))
        .collect();
    assert_eq!(table.len(), services.len(), "{table:?} vs {services:?}");
    for name in table {
        assert!(
            services.contains(&name),
            "docs name `{name}`, which the compose file lacks"
        );
    }
    for volume in ["kafka-data", "postgres-data", "cassandra-data"] {
        assert!(docs.contains(volume));
    }
}
