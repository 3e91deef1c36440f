//! The seed pipeline end to end against real PostgreSQL, Kafka and Cassandra, fed by a local
//! HTTP server that serves randomuser.me-shaped responses with the real API's quirks (postcodes
//! as numbers or strings, non-ASCII names, null fields) and fails its first request with a 503.
//! N users fetched give exactly N rows in PostgreSQL, N messages in Kafka, and N rows in
//! Cassandra equal field by field to the mapping.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::Value;
use weir::app::{RunOptions, RunningApp};
use weir::config::PipelineFile;
use weir::generator::UserGenerator;

use crate::services::{consume_all, topic_message_count};
use crate::support::{
    cassandra_nodes, cassandra_session, kafka_brokers, plugin_registry, postgres_client,
    postgres_url, repo_root, unique,
};

/// Users requested in total: 3 polls of 50.
const USERS: usize = 150;

#[derive(Clone)]
struct FakeApi {
    generator: Arc<Mutex<UserGenerator>>,
    served: Arc<Mutex<Vec<Value>>>,
    requests: Arc<AtomicUsize>,
    /// The `results` parameter of every request, in order.
    asked: Arc<Mutex<Vec<Option<String>>>>,
}

async fn api(
    State(fake): State<FakeApi>,
    Query(query): Query<BTreeMap<String, String>>,
) -> impl IntoResponse {
    fake.asked
        .lock()
        .unwrap()
        .push(query.get("results").cloned());
    if fake.requests.fetch_add(1, Ordering::SeqCst) == 0 {
        return (StatusCode::SERVICE_UNAVAILABLE, "try again".to_owned());
    }
    let results: usize = query
        .get("results")
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let response = fake.generator.lock().unwrap().next_response(results);
    fake.served
        .lock()
        .unwrap()
        .extend(response["results"].as_array().unwrap().iter().cloned());
    (StatusCode::OK, response.to_string())
}

async fn start_fake_api() -> (String, FakeApi) {
    let fake = FakeApi {
        generator: Arc::new(Mutex::new(UserGenerator::new(2026))),
        served: Arc::default(),
        requests: Arc::default(),
        asked: Arc::default(),
    };
    let router = axum::Router::new()
        .route("/api/", axum::routing::get(api))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{address}/api/"), fake)
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_pipeline_moves_every_user_from_the_api_to_cassandra() {
    crate::support::init_logs();
    let (brokers, nodes, pg_url) = (kafka_brokers(), cassandra_nodes(), postgres_url());
    let (api_url, fake) = start_fake_api().await;
    let table = unique("users_raw");
    let topic = unique("users_created");
    let keyspace = unique("spark_streams");
    let seed = std::fs::read_to_string(repo_root().join("examples/seed.toml")).unwrap();
    let config_text = seed
        .replace("${RANDOMUSER_URL:-https://randomuser.me/api/}", &api_url)
        .replace(
            "interval_ms = 60000",
            &format!("interval_ms = 50, count = {USERS}"),
        )
        .replace("\"users_raw\"", &format!("\"{table}\""))
        .replace("\"weir_dead_letters\"", &format!("\"{table}_dlq\""))
        .replace("\"users_created\"", &format!("\"{topic}\""))
        .replace("\"users_created.dlq\"", &format!("\"{topic}.dlq\""))
        .replace("\"weir-process\"", &format!("\"{}\"", unique("group")))
        .replace("\"spark_streams\"", &format!("\"{keyspace}\""))
        .replace("${WEIR_KAFKA_BROKERS:-127.0.0.1:9092}", &brokers)
        .replace("${WEIR_CASSANDRA_NODES:-127.0.0.1:9042}", &nodes)
        .replace(
            "${WEIR_POSTGRES_URL:-postgres://weir:weir@127.0.0.1:5432/weir}",
            &pg_url,
        );
    let config = PipelineFile::parse(Path::new("seed.toml"), &config_text).unwrap();
    crate::services::create_topic(&brokers, &topic, 3).await;

    let mut options = RunOptions::for_registry(plugin_registry());
    options.watch = false;
    let app = RunningApp::start(config, options).await.unwrap();

    let session = Arc::new(cassandra_session().await);
    let count_query = format!("SELECT COUNT(*) FROM {keyspace}.created_users");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let rows = session.query_unpaged(count_query.as_str(), &[]).await;
        let count = rows
            .ok()
            .and_then(|r| r.into_rows_result().ok())
            .and_then(|r| r.single_row::<(i64,)>().ok())
            .map_or(0, |(n,)| n);
        if count as usize >= USERS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {count} of {USERS} rows reached Cassandra"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.shutdown_handle().send(true).unwrap();
    for (name, result) in app.wait().await {
        result.unwrap_or_else(|e| panic!("pipeline {name} failed: {e}"));
    }

    let served = fake.served.lock().unwrap().clone();
    assert_eq!(served.len(), USERS, "the source stops after `count` users");
    // One 503, retried, then three polls of `results=50`: nothing more once `count` is reached.
    let asked = fake.asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        vec![Some("50".to_owned()); 4],
        "requests and their `results` parameter"
    );

    // PostgreSQL: exactly N landing rows, one per uuid (the sink is idempotent on the key).
    let client = postgres_client(&pg_url).await;
    let landed = client
        .query_one(
            &format!("SELECT COUNT(*), COUNT(DISTINCT key) FROM \"{table}\""),
            &[],
        )
        .await
        .unwrap();
    let (rows, keys): (i64, i64) = (landed.get(0), landed.get(1));
    assert_eq!((rows as usize, keys as usize), (USERS, USERS));

    // Kafka: exactly N messages (every partition's end offset added up), keyed by uuid.
    assert_eq!(topic_message_count(&brokers, &topic), USERS);
    let messages = consume_all(&brokers, &topic, USERS).await;
    let mut keys: Vec<String> = messages
        .iter()
        .map(|(k, _)| String::from_utf8(k.clone().unwrap()).unwrap())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), USERS);

    // Cassandra: N rows equal field by field to the mapping.
    let rows = session
        .query_unpaged(
            format!("SELECT id, first_name, last_name, gender, address, post_code, email, username, dob, registered_date, phone, picture FROM {keyspace}.created_users"),
            &[],
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    type Row = (
        uuid::Uuid,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
    );
    let mut by_id: BTreeMap<String, Row> = BTreeMap::new();
    for row in rows.rows::<Row>().unwrap() {
        let row = row.unwrap();
        by_id.insert(row.0.to_string(), row);
    }
    assert_eq!(by_id.len(), USERS);
    for user in &served {
        let id = user["login"]["uuid"].as_str().unwrap();
        let row = by_id
            .get(id)
            .unwrap_or_else(|| panic!("user {id} missing from Cassandra"));
        let location = &user["location"];
        let expected = (
            text(&user["name"]["first"]),
            text(&user["name"]["last"]),
            text(&user["gender"]),
            format!(
                "{} {}, {}, {}, {}",
                text(&location["street"]["number"]),
                text(&location["street"]["name"]),
                text(&location["city"]),
                text(&location["state"]),
                text(&location["country"])
            ),
            text(&location["postcode"]),
            text(&user["email"]),
            text(&user["login"]["username"]),
            text(&user["dob"]["date"]),
            text(&user["registered"]["date"]),
            text(&user["phone"]),
            text(&user["picture"]["medium"]),
        );
        let actual = (
            row.1.clone(),
            row.2.clone(),
            row.3.clone(),
            row.4.clone(),
            row.5.clone(),
            row.6.clone(),
            row.7.clone(),
            row.8.clone(),
            row.9.clone(),
            row.10.clone(),
            row.11.clone(),
        );
        assert_eq!(actual, expected, "user {id}");
    }
}
