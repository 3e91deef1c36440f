//! `user-profile`: the seed's Spark `format_data` as a plugin. It turns a randomuser.me result
//! (or a whole API response) into `created_users` rows, one output per result.
//!
//! The mapping: `id` = `login.uuid` (so replays overwrite instead of duplicating; also the
//! output's key), `first_name` = `name.first`, `last_name` = `name.last`, `gender`, `address` =
//! "{street.number} {street.name}, {city}, {state}, {country}" from `location`, `post_code` =
//! `location.postcode` as text (the API sends a number or a string), `email`, `username` =
//! `login.username`, `dob` = `dob.date`, `registered_date` = `registered.date`, `phone`,
//! `picture` = `picture.medium`. A missing or null field is a bad record naming it.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use weir_plugin::copy::push_str;
use weir_plugin::json::{Field, List, Nested};
use weir_plugin::{Config, Error, Plugin, Record};

/// The plugin: stateless, no config.
pub struct UserProfile;

impl Plugin for UserProfile {
    fn init(config: &Config) -> Result<Self, Error> {
        config.deny_unknown(&[])?;
        Ok(UserProfile)
    }

    // Stateless: nothing a call allocates outlives it.
    const ARENA: bool = true;

    fn transform(&self, record: Record) -> Result<Vec<Record>, Error> {
        profiles(&record)
    }
}

#[cfg(target_arch = "wasm32")]
weir_plugin::export_plugin!(UserProfile);

/// A randomuser.me result, or a response whose `results` holds them: only the fields the mapping
/// reads, borrowed from the record. Each is judged when the row is built, so a missing field is
/// named as before; a key given twice is a bad record.
#[derive(Debug, Default, Deserialize)]
pub struct User<'a> {
    #[serde(default, borrow)]
    results: List<Nested<User<'a>>>,
    #[serde(default, borrow)]
    gender: Field<'a>,
    #[serde(default, borrow)]
    name: Nested<Name<'a>>,
    #[serde(default, borrow)]
    location: Nested<Location<'a>>,
    #[serde(default, borrow)]
    email: Field<'a>,
    #[serde(default, borrow)]
    login: Nested<Login<'a>>,
    #[serde(default, borrow)]
    dob: Nested<Dated<'a>>,
    #[serde(default, borrow)]
    registered: Nested<Dated<'a>>,
    #[serde(default, borrow)]
    phone: Field<'a>,
    #[serde(default, borrow)]
    picture: Nested<Picture<'a>>,
}

#[derive(Debug, Default, Deserialize)]
struct Name<'a> {
    #[serde(default, borrow)]
    first: Field<'a>,
    #[serde(default, borrow)]
    last: Field<'a>,
}

#[derive(Debug, Default, Deserialize)]
struct Location<'a> {
    #[serde(default, borrow)]
    street: Nested<Street<'a>>,
    #[serde(default, borrow)]
    city: Field<'a>,
    #[serde(default, borrow)]
    state: Field<'a>,
    #[serde(default, borrow)]
    country: Field<'a>,
    #[serde(default, borrow)]
    postcode: Field<'a>,
}

#[derive(Debug, Default, Deserialize)]
struct Street<'a> {
    #[serde(default, borrow)]
    number: Field<'a>,
    #[serde(default, borrow)]
    name: Field<'a>,
}

#[derive(Debug, Default, Deserialize)]
struct Login<'a> {
    #[serde(default, borrow)]
    uuid: Field<'a>,
    #[serde(default, borrow)]
    username: Field<'a>,
}

#[derive(Debug, Default, Deserialize)]
struct Dated<'a> {
    #[serde(default, borrow)]
    date: Field<'a>,
}

#[derive(Debug, Default, Deserialize)]
struct Picture<'a> {
    #[serde(default, borrow)]
    medium: Field<'a>,
}

/// A `created_users` row. Fields in alphabetical order: the JSON text is what serialising the
/// same row as a `serde_json` map gives.
#[derive(Debug, Serialize)]
pub struct Row<'a> {
    pub address: String,
    pub dob: &'a str,
    pub email: &'a str,
    pub first_name: &'a str,
    pub gender: &'a str,
    pub id: &'a str,
    pub last_name: &'a str,
    pub phone: &'a str,
    pub picture: &'a str,
    pub post_code: Cow<'a, str>,
    pub registered_date: &'a str,
    pub username: &'a str,
}

/// Maps a record holding one result object or a response `{"results": [...]}` to one output
/// record per result, keyed by the user's `login.uuid`.
pub fn profiles(record: &Record) -> Result<Vec<Record>, Error> {
    let document: Nested<User> = record.parse()?;
    let keyed = |row: Row| -> Result<Record, Error> {
        let mut out = record.with_json(&row)?;
        out.key = Some(row.id.as_bytes().to_vec());
        Ok(out)
    };
    match &document.results {
        List::Missing => Ok(vec![keyed(created_user(&document)?)?]),
        List::NotArray => Err(Error::bad_record("field `results` must be an array")),
        List::Items(results) => results
            .iter()
            .enumerate()
            .map(|(index, result)| {
                let row = created_user(result)
                    .map_err(|e| Error::bad_record(format!("results[{index}]: {}", e.message())))?;
                keyed(row)
            })
            .collect(),
    }
}

/// One randomuser.me result as a `created_users` row (the mapping in the crate docs).
pub fn created_user<'a>(result: &'a Nested<User<'a>>) -> Result<Row<'a>, Error> {
    if !result.is_object() {
        return Err(Error::bad_record("a result must be a JSON object"));
    }
    let location = &result.location;
    let street = &location.street;
    // Checked in the order the fields are named below, so the first missing one is reported.
    let number = street.number.text("location.street.number")?;
    let parts = [
        street.name.str("location.street.name")?,
        location.city.str("location.city")?,
        location.state.str("location.state")?,
        location.country.str("location.country")?,
    ];
    // "{number} {street}, {city}, {state}, {country}", joined by hand: `format!` goes through
    // `core::fmt`'s indirect calls, 5% of this plugin's time as Wasm, and `String::push_str`
    // of a short piece is a call into the host as Wasm (`copy::push_str` says why).
    let mut address =
        String::with_capacity(number.len() + parts.iter().map(|p| p.len() + 2).sum::<usize>());
    push_str(&mut address, &number);
    for (index, part) in parts.iter().enumerate() {
        push_str(&mut address, if index == 0 { " " } else { ", " });
        push_str(&mut address, part);
    }
    Ok(Row {
        id: result.login.uuid.str("login.uuid")?,
        first_name: result.name.first.str("name.first")?,
        last_name: result.name.last.str("name.last")?,
        gender: result.gender.str("gender")?,
        address,
        post_code: location.postcode.text("location.postcode")?,
        email: result.email.str("email")?,
        username: result.login.username.str("login.username")?,
        dob: result.dob.date.str("dob.date")?,
        registered_date: result.registered.date.str("registered.date")?,
        phone: result.phone.str("phone")?,
        picture: result.picture.medium.str("picture.medium")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use weir_plugin::ErrorKind;

    fn result() -> Value {
        json!({
            "gender": "female",
            "name": { "title": "Ms", "first": "Zoë", "last": "Ødegård" },
            "location": {
                "street": { "number": 4242, "name": "Kirkegata" },
                "city": "Bergen", "state": "Vestland", "country": "Norway",
                "postcode": 5003
            },
            "email": "zoe.odegard@example.com",
            "login": { "uuid": "0f9c6f0e-5d0b-4b8f-9a57-6a1c0a2b9e11", "username": "bluebird123" },
            "dob": { "date": "1990-05-01T10:00:00.000Z", "age": 36 },
            "registered": { "date": "2012-03-04T05:06:07.000Z", "age": 14 },
            "phone": "55 12 34 56",
            "picture": { "medium": "https://randomuser.me/api/portraits/med/women/1.jpg" }
        })
    }

    fn rows(value: &Value) -> Result<Vec<Value>, Error> {
        let outputs = profiles(&Record::new(value.to_string()))?;
        Ok(outputs
            .iter()
            .map(|r| serde_json::from_slice(&r.value).unwrap())
            .collect())
    }

    #[test]
    fn maps_every_field() {
        let row = &rows(&result()).unwrap()[0];
        assert_eq!(
            row,
            &json!({
                "id": "0f9c6f0e-5d0b-4b8f-9a57-6a1c0a2b9e11",
                "first_name": "Zoë",
                "last_name": "Ødegård",
                "gender": "female",
                "address": "4242 Kirkegata, Bergen, Vestland, Norway",
                "post_code": "5003",
                "email": "zoe.odegard@example.com",
                "username": "bluebird123",
                "dob": "1990-05-01T10:00:00.000Z",
                "registered_date": "2012-03-04T05:06:07.000Z",
                "phone": "55 12 34 56",
                "picture": "https://randomuser.me/api/portraits/med/women/1.jpg"
            })
        );
    }

    #[test]
    fn postcode_is_text_whether_number_or_string() {
        let mut user = result();
        user["location"]["postcode"] = json!("W1 2AB");
        assert_eq!(rows(&user).unwrap()[0]["post_code"], "W1 2AB");
    }

    #[test]
    fn a_response_gives_one_keyed_output_per_result_in_order() {
        let mut second = result();
        second["login"]["uuid"] = json!("second");
        let outputs = profiles(&Record::new(
            json!({"results": [result(), second]}).to_string(),
        ))
        .unwrap();
        assert_eq!(outputs.len(), 2);
        assert_eq!(
            outputs[0].key.as_deref(),
            Some(&b"0f9c6f0e-5d0b-4b8f-9a57-6a1c0a2b9e11"[..])
        );
        assert_eq!(outputs[1].key.as_deref(), Some(&b"second"[..]));
    }

    #[test]
    fn each_missing_or_null_field_is_a_bad_record_naming_it() {
        for (pointer, name) in [
            ("/login/uuid", "login.uuid"),
            ("/name/first", "name.first"),
            ("/location/postcode", "location.postcode"),
            ("/picture/medium", "picture.medium"),
            ("/email", "email"),
        ] {
            for replacement in [None, Some(Value::Null)] {
                let mut user = result();
                let (parent, leaf) = pointer.rsplit_once('/').unwrap();
                let parent = if parent.is_empty() {
                    &mut user
                } else {
                    user.pointer_mut(parent).unwrap()
                };
                match &replacement {
                    None => {
                        parent.as_object_mut().unwrap().remove(leaf);
                    }
                    Some(value) => parent[leaf] = value.clone(),
                }
                let error = rows(&user).unwrap_err();
                assert_eq!(error.kind(), ErrorKind::BadRecord);
                assert_eq!(error.message(), format!("missing required field `{name}`"));
            }
        }
    }

    #[test]
    fn errors_in_a_response_name_the_result() {
        let mut broken = result();
        broken["name"].as_object_mut().unwrap().remove("last");
        let error = rows(&json!({"results": [result(), broken]})).unwrap_err();
        assert_eq!(
            error.message(),
            "results[1]: missing required field `name.last`"
        );
    }

    #[test]
    fn output_bytes_are_the_samples_bytes() {
        // The samples' expected lines were written from the `serde_json` map this plugin
        // serialised before it used typed rows: the bytes must not change.
        let inputs = include_str!("../samples/input.jsonl").lines();
        let expected = include_str!("../samples/expected.jsonl").lines();
        let mut compared = 0;
        for (input, expected) in inputs.zip(expected) {
            if let Ok(rows) = profiles(&Record::new(input)) {
                let rows: Vec<&str> = rows
                    .iter()
                    .map(|row| std::str::from_utf8(&row.value).unwrap())
                    .collect();
                assert_eq!(format!(r#"{{"outputs":[{}]}}"#, rows.join(",")), expected);
                compared += 1;
            }
        }
        assert!(compared >= 3, "{compared}");
    }

    #[test]
    fn malformed_input_is_a_bad_record() {
        for input in ["not json", "[1,2]", r#"{"results": 3}"#] {
            let error = profiles(&Record::new(input)).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::BadRecord, "{input}");
        }
    }
}
