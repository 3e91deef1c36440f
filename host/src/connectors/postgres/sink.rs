//! The `postgres` sink: JSON records into a landing table (key, jsonb value, ingestion time),
//! batched in one multi-row INSERT, idempotent on the key with `ON CONFLICT DO NOTHING`. As a
//! dead-letter destination it keeps any bytes and every header instead.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::client::{classify, connect};
use super::{channel_for, quoted_table};
use crate::connectors::fields::{pointer, text_at};
use crate::connectors::{ConfigProblem, ConnectorError, Rejected, Sink};
use crate::record::{Record, headers};
use crate::secret::Secret;

/// Options of the `postgres` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// Connection URL, e.g. `postgres://weir:${PG_PASSWORD}@127.0.0.1:5432/weir`, or
    /// a key/value string (`host=... password=...`); never shown unredacted.
    pub url: Secret,
    /// The landing table (`table` or `schema.table`).
    pub table: String,
    /// Dotted path of the JSON field that is the idempotency key (e.g. `login.uuid`); by default
    /// the record key, else the sha256 of the value.
    #[serde(default)]
    pub key_field: Option<String>,
    /// Create the table (and its NOTIFY trigger) if missing.
    #[serde(default = "yes")]
    pub create_table: bool,
}

fn yes() -> bool {
    true
}

impl PostgresSinkConfig {
    /// Checks values the type system cannot.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        if quoted_table(&self.table).is_none() {
            return Err((
                "table".into(),
                format!(
                    "`{}` is not a table name; use letters, digits and `_`, optionally `schema.table`",
                    self.table
                ),
            ));
        }
        Ok(())
    }
}

/// Writes records into a landing table.
pub struct PostgresSink {
    config: PostgresSinkConfig,
    name: String,
    table: String,
    key_pointer: Option<String>,
    dead_letter: bool,
    client: Option<Client>,
}

impl PostgresSink {
    /// A sink; the connection is opened (and the table created) on first write, and again
    /// after a failure, so a database outage only delays the pipeline.
    pub fn new(config: &PostgresSinkConfig, dead_letter: bool) -> Result<Self, ConnectorError> {
        let name = format!("postgres sink {}", config.table);
        let table = quoted_table(&config.table)
            .ok_or_else(|| ConnectorError::fatal(&name, "invalid table name"))?;
        Ok(PostgresSink {
            key_pointer: config.key_field.as_deref().map(pointer),
            config: config.clone(),
            name,
            table,
            dead_letter,
            client: None,
        })
    }

    async fn client(&mut self) -> Result<&Client, ConnectorError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let client = connect(&self.name, &self.config.url, None).await?;
            if self.config.create_table {
                let ddl = if self.dead_letter {
                    self.dead_letter_ddl()
                } else {
                    self.landing_ddl()
                };
                client
                    .batch_execute(&ddl)
                    .await
                    .map_err(|e| classify(&self.name, "cannot create the table", e))?;
            }
            self.client = Some(client);
        }
        self.client
            .as_ref()
            .ok_or_else(|| ConnectorError::transient(&self.name, "no connection"))
    }

    fn landing_ddl(&self) -> String {
        let table = &self.table;
        let channel = channel_for(&self.config.table);
        let function = format!("\"{channel}_notify\"");
        format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                id BIGSERIAL PRIMARY KEY,
                key TEXT NOT NULL UNIQUE,
                value JSONB NOT NULL,
                ingested_at TIMESTAMPTZ NOT NULL DEFAULT now());
             CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS
                $$ BEGIN PERFORM pg_notify('{channel}', ''); RETURN NULL; END $$;
             CREATE OR REPLACE TRIGGER {function} AFTER INSERT ON {table}
                FOR EACH STATEMENT EXECUTE FUNCTION {function}();"
        )
    }

    fn dead_letter_ddl(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (
                id BIGSERIAL PRIMARY KEY,
                key BYTEA,
                value BYTEA NOT NULL,
                headers JSONB NOT NULL,
                error TEXT,
                created_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            self.table
        )
    }

    /// The key and JSON value of a record, or why it cannot go into a landing table. Checked
    /// here, per record, because PostgreSQL would fail the whole multi-row INSERT instead.
    fn landing_row(&self, record: &Record) -> Result<(String, Value), String> {
        let value: Value = serde_json::from_slice(&record.value)
            .map_err(|e| format!("value is not JSON, which a jsonb column needs: {e}"))?;
        let key = match (&self.key_pointer, &record.key) {
            (Some(pointer), _) => text_at(&value, pointer).ok_or_else(|| {
                format!(
                    "key field `{}` is missing or not a scalar",
                    self.config.key_field.as_deref().unwrap_or_default()
                )
            })?,
            (None, Some(key)) => String::from_utf8_lossy(key).into_owned(),
            (None, None) => hex::encode(Sha256::digest(&record.value)),
        };
        if key.contains('\0') {
            return Err(format!(
                "key `{}` holds a NUL character, which the text key column cannot store",
                key.escape_debug()
            ));
        }
        if let Some(path) = nul_in(&value, String::new()) {
            return Err(format!(
                "value holds a NUL character (\\u0000) at `{}`, which a jsonb column cannot store",
                if path.is_empty() { "/" } else { &path }
            ));
        }
        Ok((key, value))
    }

    async fn write_landing(&mut self, records: &[Record]) -> Result<Vec<Rejected>, ConnectorError> {
        let mut keys = Vec::with_capacity(records.len());
        let mut values = Vec::with_capacity(records.len());
        let mut rejected = Vec::new();
        for (index, record) in records.iter().enumerate() {
            match self.landing_row(record) {
                Ok((key, value)) => {
                    keys.push(key);
                    values.push(value);
                }
                Err(reason) => rejected.push(Rejected { index, reason }),
            }
        }
        if keys.is_empty() {
            return Ok(rejected);
        }
        let statement = format!(
            "INSERT INTO {} (key, value) SELECT * FROM UNNEST($1::text[], $2::jsonb[]) ON CONFLICT (key) DO NOTHING",
            self.table
        );
        let name = self.name.clone();
        let result = self
            .client()
            .await?
            .execute(&statement, &[&keys, &values])
            .await;
        if let Err(error) = result {
            self.client = None;
            return Err(classify(&name, "insert failed", error));
        }
        Ok(rejected)
    }

    async fn write_dead_letters(
        &mut self,
        records: &[Record],
    ) -> Result<Vec<Rejected>, ConnectorError> {
        let keys: Vec<Option<Vec<u8>>> = records.iter().map(|r| r.key.clone()).collect();
        let values: Vec<Vec<u8>> = records.iter().map(|r| r.value.clone()).collect();
        // A dead-letter table refuses nothing, and NUL is the one thing jsonb and text cannot
        // hold; key and value are bytea, so only the headers and the error need care.
        let header_maps: Vec<Value> = records.iter().map(dead_letter_headers).collect();
        let errors: Vec<Option<String>> = records
            .iter()
            .map(|r| {
                r.header_str(headers::ERROR)
                    .map(|e| e.replace('\0', "\\u0000"))
            })
            .collect();
        let statement = format!(
            "INSERT INTO {} (key, value, headers, error) SELECT * FROM UNNEST($1::bytea[], $2::bytea[], $3::jsonb[], $4::text[])",
            self.table
        );
        let name = self.name.clone();
        let result = self
            .client()
            .await?
            .execute(&statement, &[&keys, &values, &header_maps, &errors])
            .await;
        if let Err(error) = result {
            self.client = None;
            return Err(classify(&name, "insert failed", error));
        }
        Ok(Vec::new())
    }
}

/// The JSON pointer of the first string or object key in `value` holding a NUL character
/// (jsonb rejects `\u0000`: SQLSTATE 22P05), below `at`.
fn nul_in(value: &Value, at: String) -> Option<String> {
    // A pointer segment as RFC 6901 spells it, with a NUL shown rather than carried along.
    let escape = |segment: &str| {
        segment
            .replace('~', "~0")
            .replace('/', "~1")
            .replace('\0', "\\0")
    };
    match value {
        Value::String(text) => text.contains('\0').then_some(at),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_in(item, format!("{at}/{i}"))),
        Value::Object(fields) => fields.iter().find_map(|(name, field)| {
            let path = format!("{at}/{}", escape(name));
            if name.contains('\0') {
                Some(path)
            } else {
                nul_in(field, path)
            }
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// A dead letter's headers as jsonb: the envelope's, with any header holding a NUL stored the
/// way the envelope stores bytes that are not text, `{"hex": ...}`, and a header whose name
/// holds one under `hex:` and the name's hex. Nothing is lost either way.
fn dead_letter_headers(record: &Record) -> Value {
    let Value::Object(headers) = crate::connectors::encoding::envelope(record)["headers"].take()
    else {
        return Value::Object(serde_json::Map::new());
    };
    let headers = headers
        .into_iter()
        .map(|(name, value)| {
            let value = match value {
                Value::String(text) if text.contains('\0') => {
                    serde_json::json!({ "hex": hex::encode(text) })
                }
                other => other,
            };
            if name.contains('\0') {
                (format!("hex:{}", hex::encode(&name)), value)
            } else {
                (name, value)
            }
        })
        .collect();
    Value::Object(headers)
}

#[async_trait]
impl Sink for PostgresSink {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<Rejected>, ConnectorError> {
        if self.dead_letter {
            self.write_dead_letters(records).await
        } else {
            self.write_landing(records).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_the_nul_jsonb_cannot_hold() {
        let at = |value: Value| nul_in(&value, String::new());
        assert_eq!(
            at(json!({"a": [1, "ok", {"b": "x\0y"}]})).as_deref(),
            Some("/a/2/b")
        );
        assert_eq!(at(json!({"a\0": 1})).as_deref(), Some("/a\\0"));
        assert_eq!(at(json!("\0")).as_deref(), Some(""));
        assert_eq!(at(json!({"a/b": {"c": "ok"}, "n": null})), None);
    }

    #[test]
    fn dead_letter_headers_keep_nul_bytes_as_hex() {
        let mut record = Record::from_value("v");
        record.set_header("weir.error", "bad \0 value");
        record.set_header("plain", "text");
        record.set_header("odd\0name", "x");
        let stored = dead_letter_headers(&record);
        assert_eq!(
            stored["weir.error"],
            json!({ "hex": hex::encode("bad \0 value") })
        );
        assert_eq!(stored["plain"], "text");
        assert_eq!(stored[format!("hex:{}", hex::encode("odd\0name"))], "x");
    }
}
