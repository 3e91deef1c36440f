//! `user-profile`: the seed's Spark `format_data` as a plugin. It turns a randomuser.me result
//! (or a whole API response) into `created_users` rows, one output per result.

use serde_json::{Map, Value, json};
use weir_plugin::json::{str_at, text_at};
use weir_plugin::{Config, Error, Plugin, Record};

/// The plugin: stateless, no config.
pub struct UserProfile;

impl Plugin for UserProfile {
    fn init(config: &Config) -> Result<Self, Error> {
        config.deny_unknown(&[])?;
        Ok(UserProfile)
    }

    fn transform(&self, record: Record) -> Result<Vec<Record>, Error> {
        profiles(&record)
    }
}

#[cfg(target_arch = "wasm32")]
weir_plugin::export_plugin!(UserProfile);

/// Maps a record holding one result object or a response `{"results": [...]}` to one output
/// record per result, keyed by the user's `login.uuid`.
pub fn profiles(record: &Record) -> Result<Vec<Record>, Error> {
    let document = record.json()?;
    let results = match document.get("results") {
        Some(Value::Array(results)) => results.iter().collect(),
        Some(_) => return Err(Error::bad_record("field `results` must be an array")),
        None => vec![&document],
    };
    results
        .into_iter()
        .enumerate()
        .map(|(index, result)| {
            let row = created_user(result).map_err(|e| {
                if document.get("results").is_some() {
                    Error::bad_record(format!("results[{index}]: {}", e.message()))
                } else {
                    e
                }
            })?;
            let mut out = record.with_json(&row)?;
            out.key = row
                .get("id")
                .and_then(Value::as_str)
                .map(|id| id.as_bytes().to_vec());
            Ok(out)
        })
        .collect()
}

/// One randomuser.me result as a `created_users` row (the mapping in design.md).
pub fn created_user(result: &Value) -> Result<Map<String, Value>, Error> {
    if !result.is_object() {
        return Err(Error::bad_record("a result must be a JSON object"));
    }
    let address = format!(
        "{} {}, {}, {}, {}",
        text_at(result, "/location/street/number")?,
        str_at(result, "/location/street/name")?,
        str_at(result, "/location/city")?,
        str_at(result, "/location/state")?,
        str_at(result, "/location/country")?,
    );
    let row = json!({
        "id": str_at(result, "/login/uuid")?,
        "first_name": str_at(result, "/name/first")?,
        "last_name": str_at(result, "/name/last")?,
        "gender": str_at(result, "/gender")?,
        "address": address,
        "post_code": text_at(result, "/location/postcode")?,
        "email": str_at(result, "/email")?,
        "username": str_at(result, "/login/username")?,
        "dob": str_at(result, "/dob/date")?,
        "registered_date": str_at(result, "/registered/date")?,
        "phone": str_at(result, "/phone")?,
        "picture": str_at(result, "/picture/medium")?,
    });
    match row {
        Value::Object(map) => Ok(map),
        _ => Err(Error::failure("row is not an object")),
    }
}
