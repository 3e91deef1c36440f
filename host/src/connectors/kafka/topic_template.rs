//! A `kafka` sink's topic may name fields of each record, `users-{{ nat }}`, so that one
//! pipeline writes each record to the topic its own fields pick (Spark's `topic` column,
//! Vector's templated topic). The fixed text is the pipeline's; a field fills its place only
//! with characters a topic's name may hold, so a record cannot send itself outside the names the
//! template allows, nor to one of Kafka's internal topics.

use std::fmt;

use crate::connectors::fields::{FieldPath, Leaf};

use super::topics::{MAX_TOPIC_NAME, illegal_character};

/// Opens a field's place in the template.
const OPEN: &str = "{{";
/// Closes it.
const CLOSE: &str = "}}";

/// Longest field value an error message quotes.
const QUOTED_CHARS: usize = 64;

/// A topic's name with the places of record fields in it.
#[derive(Debug, Clone)]
pub struct TopicTemplate {
    /// The template as the pipeline wrote it, for messages.
    text: String,
    /// Its fixed text and field places, in order.
    parts: Vec<Part>,
    /// The fields it names, in the order [`TopicTemplate::render`] takes their values.
    fields: Vec<FieldPath>,
    /// Each field's path as written, by its index in `fields`.
    paths: Vec<String>,
    /// Whether the fixed text at the start makes every topic an internal one's (`__`), as the
    /// pipeline chose; otherwise a record may not make it one.
    internal_prefix: bool,
}

/// A piece of the template.
#[derive(Debug, Clone)]
enum Part {
    /// Text every topic holds.
    Fixed(String),
    /// The place of the field at this index of [`TopicTemplate::paths`].
    Field(usize),
}

impl TopicTemplate {
    /// The template in `text`, `None` when `text` names no field (a topic's plain name), or why
    /// it is not a template a topic can come from.
    pub fn parse(text: &str) -> Result<Option<Self>, String> {
        if !text.contains(OPEN) {
            return Ok(None);
        }
        let mut parts = Vec::new();
        let mut paths: Vec<String> = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find(OPEN) {
            push_fixed(&mut parts, &rest[..open], text)?;
            let after = &rest[open + OPEN.len()..];
            let close = after.find(CLOSE).ok_or_else(|| {
                format!("`{text}` opens a field with `{OPEN}` that no `{CLOSE}` closes")
            })?;
            let path = after[..close].trim();
            if path.is_empty() {
                return Err(format!(
                    "`{text}` has a `{OPEN} {CLOSE}` that names no field: write a field's dotted path inside, as in `users-{OPEN} nat {CLOSE}`"
                ));
            }
            if path.contains(OPEN) {
                return Err(format!(
                    "`{text}` opens a field inside another: `{OPEN}` before `{CLOSE}`"
                ));
            }
            let index = match paths.iter().position(|known| known == path) {
                Some(index) => index,
                None => {
                    paths.push(path.to_owned());
                    paths.len() - 1
                }
            };
            parts.push(Part::Field(index));
            rest = &after[close + CLOSE.len()..];
        }
        push_fixed(&mut parts, rest, text)?;
        let fixed_length: usize = parts
            .iter()
            .map(|part| match part {
                Part::Fixed(fixed) => fixed.len(),
                Part::Field(_) => 1,
            })
            .sum();
        if fixed_length > MAX_TOPIC_NAME {
            return Err(format!(
                "`{text}` makes topics longer than a topic's name may be ({MAX_TOPIC_NAME} bytes) even with one character a field"
            ));
        }
        let internal_prefix =
            matches!(parts.first(), Some(Part::Fixed(fixed)) if fixed.starts_with("__"));
        Ok(Some(TopicTemplate {
            text: text.to_owned(),
            parts,
            fields: paths.iter().map(|path| FieldPath::parse(path)).collect(),
            paths,
            internal_prefix,
        }))
    }

    /// The fields the template names, whose values [`TopicTemplate::render`] takes in this
    /// order.
    pub fn fields(&self) -> &[FieldPath] {
        &self.fields
    }

    /// The topic of a record whose [`TopicTemplate::fields`] hold `found`, or why it has none:
    /// the reason a dead letter gives.
    pub fn render(&self, found: &[Option<Leaf<'_>>]) -> Result<String, String> {
        let mut topic = String::new();
        for part in &self.parts {
            match part {
                Part::Fixed(fixed) => topic.push_str(fixed),
                Part::Field(index) => {
                    let path = &self.paths[*index];
                    let leaf = found[*index].as_ref().ok_or_else(|| {
                        format!("topic field `{path}` is missing (the sink's topic is `{self}`)")
                    })?;
                    let piece = match leaf {
                        Leaf::Text(text) => text.as_ref().to_owned(),
                        Leaf::Number(number) => number.to_string(),
                        Leaf::Numeral(numeral) => (*numeral).to_owned(),
                        other => {
                            return Err(format!(
                                "topic field `{path}` is {other}, not text or a number (the sink's topic is `{self}`)"
                            ));
                        }
                    };
                    self.check_piece(path, &piece)?;
                    topic.push_str(&piece);
                }
            }
        }
        if topic.len() > MAX_TOPIC_NAME {
            return Err(format!(
                "the topic `{}...` made from the record's fields by `{self}` is {} bytes: a topic's name is at most {MAX_TOPIC_NAME}",
                topic.chars().take(QUOTED_CHARS).collect::<String>(),
                topic.len()
            ));
        }
        if topic == "." || topic == ".." {
            return Err(format!(
                "the record's fields make `{topic}` of `{self}`, which is not a topic's name"
            ));
        }
        if topic.starts_with("__") && !self.internal_prefix {
            return Err(format!(
                "the record's fields make `{topic}` of `{self}`: names beginning with `__` are Kafka's internal topics, which a record may not pick"
            ));
        }
        Ok(topic)
    }

    /// Refuses a field's text that is empty or holds a character no topic's name may.
    fn check_piece(&self, path: &str, piece: &str) -> Result<(), String> {
        if piece.is_empty() {
            return Err(format!(
                "topic field `{path}` is empty (the sink's topic is `{self}`)"
            ));
        }
        if let Some(bad) = illegal_character(piece) {
            let quoted: String = piece.chars().take(QUOTED_CHARS).collect();
            let cut = if quoted.len() < piece.len() {
                "..."
            } else {
                ""
            };
            return Err(format!(
                "topic field `{path}` is {}{cut}, and {bad:?} cannot be in a topic's name (letters, digits, `.`, `_` and `-` can; the sink's topic is `{self}`)",
                serde_json::Value::from(quoted)
            ));
        }
        Ok(())
    }

    /// "field `a`" or "fields `a`, `b`", for messages.
    pub fn named_fields(&self) -> String {
        let names: Vec<String> = self.paths.iter().map(|path| format!("`{path}`")).collect();
        match names.len() {
            1 => format!("field {}", names[0]),
            _ => format!("fields {}", names.join(", ")),
        }
    }
}

impl fmt::Display for TopicTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Adds the fixed text `fixed` of `template` to `parts`, refusing a character no topic's name
/// may hold.
fn push_fixed(parts: &mut Vec<Part>, fixed: &str, template: &str) -> Result<(), String> {
    if fixed.is_empty() {
        return Ok(());
    }
    if let Some(bad) = illegal_character(fixed) {
        return Err(format!(
            "`{template}` has {bad:?} outside `{OPEN} {CLOSE}`, which cannot be in a topic's name: the fixed text may hold letters, digits, `.`, `_` and `-`, and a field's place is written `{OPEN} path {CLOSE}`"
        ));
    }
    parts.push(Part::Fixed(fixed.to_owned()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::fields::FieldSet;

    fn template(text: &str) -> TopicTemplate {
        TopicTemplate::parse(text)
            .unwrap_or_else(|e| panic!("{e}"))
            .expect("a template")
    }

    /// The topic of the record `value`, its fields read as the sink reads them.
    fn render(template: &TopicTemplate, value: &str) -> Result<String, String> {
        let found = FieldSet::as_written(template.fields())
            .read(value.as_bytes())
            .expect("JSON");
        template.render(&found)
    }

    #[test]
    fn a_plain_name_is_no_template() {
        assert!(TopicTemplate::parse("users").unwrap().is_none());
        assert!(TopicTemplate::parse("users.v1-x_y").unwrap().is_none());
    }

    #[test]
    fn fields_fill_their_places_between_the_fixed_text() {
        let routed = template("users-{{ nat }}.{{location.country}}-v1");
        assert_eq!(
            render(
                &routed,
                r#"{"nat":"GB","location":{"country":"United_Kingdom"}}"#
            ),
            Ok("users-GB.United_Kingdom-v1".into())
        );
        // A JSON pointer, a number, a field named twice, and escapes decoded.
        let numbered = template("{{/shard}}-{{kind}}-{{ kind }}");
        assert_eq!(
            render(&numbered, r#"{"kind":"a\u002db","shard":7}"#),
            Ok("7-a-b-a-b".into())
        );
    }

    #[test]
    fn a_record_without_a_usable_field_gets_the_reason() {
        let routed = template("users-{{ nat }}");
        for (value, expected) in [
            (r#"{"name":"x"}"#, "topic field `nat` is missing"),
            (
                r#"{"nat":null}"#,
                "topic field `nat` is null, not text or a number",
            ),
            (r#"{"nat":{"c":"GB"}}"#, "topic field `nat` is an object"),
            (r#"{"nat":true}"#, "topic field `nat` is true"),
            (r#"{"nat":""}"#, "topic field `nat` is empty"),
            (
                r#"{"nat":"G B"}"#,
                "topic field `nat` is \"G B\", and ' ' cannot be",
            ),
            (r#"{"nat":"a/b"}"#, "'/' cannot be in a topic's name"),
            (r#"{"nat":"GB\u0000"}"#, "'\\0' cannot be"),
        ] {
            let reason = render(&routed, value).expect_err(value);
            assert!(reason.contains(expected), "{value}: {reason}");
            assert!(reason.contains("users-{{ nat }}"), "{reason}");
        }
    }

    #[test]
    fn a_long_field_is_quoted_cut_and_a_long_topic_refused() {
        let routed = template("users-{{ nat }}");
        let long_bad = format!(r#"{{"nat":"{} x"}}"#, "a".repeat(300));
        let reason = render(&routed, &long_bad).expect_err("a space");
        assert!(
            reason.contains(&format!("\"{}\"...", "a".repeat(64))),
            "{reason}"
        );
        let long = format!(r#"{{"nat":"{}"}}"#, "a".repeat(244));
        let reason = render(&routed, &long).expect_err("250 bytes");
        assert!(
            reason.contains("is 250 bytes: a topic's name is at most 249"),
            "{reason}"
        );
        let fits = format!(r#"{{"nat":"{}"}}"#, "a".repeat(243));
        assert_eq!(render(&routed, &fits).map(|t| t.len()), Ok(249));
    }

    #[test]
    fn a_record_cannot_pick_an_internal_topic_or_a_dot() {
        let open = template("{{ t }}");
        let internal = render(&open, r#"{"t":"__consumer_offsets"}"#).expect_err("internal");
        assert!(internal.contains("Kafka's internal topics"), "{internal}");
        let dot = render(&open, r#"{"t":".."}"#).expect_err("a dot");
        assert!(dot.contains("not a topic's name"), "{dot}");
        assert_eq!(render(&open, r#"{"t":"_x"}"#), Ok("_x".into()));
        // The pipeline may choose the prefix itself.
        let chosen = template("__weir-{{ t }}");
        assert_eq!(render(&chosen, r#"{"t":"a"}"#), Ok("__weir-a".into()));
    }

    #[test]
    fn a_template_that_cannot_make_a_topic_is_refused_with_the_fix() {
        for (text, expected) in [
            ("users-{{ nat", "no `}}` closes"),
            ("users-{{ }}", "names no field"),
            ("users-{{ a {{ b }} }}", "opens a field inside another"),
            ("users {{ nat }}", "' ' outside `{{ }}`"),
            ("users-{{ nat }}}", "'}' outside"),
            ("users-{ nat }-{{ x }}", "'{' outside"),
        ] {
            let reason = TopicTemplate::parse(text).expect_err(text);
            assert!(reason.contains(expected), "{text}: {reason}");
        }
        let long = format!("{}{{{{ x }}}}", "a".repeat(249));
        let reason = TopicTemplate::parse(&long).expect_err("too long");
        assert!(
            reason.contains("longer than a topic's name may be"),
            "{reason}"
        );
        assert!(TopicTemplate::parse(&format!("{}{{{{ x }}}}", "a".repeat(248))).is_ok());
    }
}
