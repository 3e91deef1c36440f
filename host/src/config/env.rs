//! `${VAR}` substitution, so that secrets come from the environment and never sit in the file.
//!
//! Substitution happens inside the string values of the parsed document, not in the file's text:
//! the parser and every error message then only ever see the file as written, and the values
//! put in are remembered, so a message that quotes one can show the reference instead.

use std::borrow::Cow;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Replaces `${NAME}` and `${NAME:-default}` with values from `lookup` (the default also when
/// the value is empty, as in the shell); `$${` stays a literal `${`. An unset variable without a default is an error naming it; the caller says where.
pub fn substitute_env(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
            continue;
        }
        let Some(body) = tail.strip_prefix("${") else {
            out.push('$');
            rest = &tail[1..];
            continue;
        };
        let Some(end) = body.find('}') else {
            return Err("`${` is never closed with `}`".to_owned());
        };
        let expression = &body[..end];
        let (name, default) = match expression.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (expression, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`${{{expression}}}` is not a variable reference; names use letters, digits and `_`"
            ));
        }
        // Like the shell's `:-`, a default stands in for an empty value as well as a missing one.
        match (lookup(name), default) {
            (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(format!(
                    "environment variable `{name}` is not set; export it, or write `${{{name}:-default}}`"
                ));
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// One string value that substitution changed.
#[derive(Debug)]
struct Substitution {
    /// Where the value is in the file.
    span: Range<usize>,
    /// Its key, as in error messages: `pipeline[0].sink.url`.
    key: String,
    /// The value as written, references included.
    written: String,
    /// The value after substitution: what must not appear in messages.
    value: String,
}

/// The values substitution put into a document, to keep them out of error messages.
#[derive(Debug, Default)]
pub struct Substitutions(Vec<Substitution>);

impl Substitutions {
    /// Substitutes inside every string value of `document` (keys stay as written). `text` is
    /// the file the document was parsed from, to name the line of a bad reference.
    pub fn apply(
        document: &mut DeTable<'_>,
        text: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let mut substitutions = Substitutions::default();
        for (key, value) in document.iter_mut() {
            substitutions.value(value, key.get_ref().to_string(), text, lookup)?;
        }
        // Longest first, so a value that contains another is put back whole.
        substitutions
            .0
            .sort_by_key(|s| std::cmp::Reverse(s.value.len()));
        Ok(substitutions)
    }

    fn value(
        &mut self,
        value: &mut Spanned<DeValue<'_>>,
        key: String,
        text: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), String> {
        let span = value.span();
        match value.get_mut() {
            DeValue::String(string) if string.contains('$') => {
                let substituted = substitute_env(string, lookup).map_err(|message| {
                    format!("line {}, `{key}`: {message}", line_of(text, span.start))
                })?;
                if substituted != *string {
                    self.0.push(Substitution {
                        span,
                        key,
                        written: string.to_string(),
                        value: substituted.clone(),
                    });
                    *string = Cow::Owned(substituted);
                }
            }
            DeValue::Array(items) => {
                for (index, item) in items.iter_mut().enumerate() {
                    self.value(item, format!("{key}[{index}]"), text, lookup)?;
                }
            }
            DeValue::Table(table) => {
                for (name, item) in table.iter_mut() {
                    self.value(item, format!("{key}.{}", name.get_ref()), text, lookup)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// `message` with the substituted values that lie in `span` of the file put back as written
    /// (all of them when the span is unknown). Serde quotes a value it rejects, so a type error
    /// about a substituted value would otherwise print it.
    pub fn restore_in_span(&self, message: &str, span: Option<Range<usize>>) -> String {
        self.restore(message, |s| {
            span.as_ref()
                .is_none_or(|span| s.span.start < span.end && span.start < s.span.end)
        })
    }

    /// `message` about `key` (as `pipeline[0].source`) with the substituted values at or under
    /// that key put back as written.
    pub fn restore_under_key(&self, message: &str, key: &str) -> String {
        self.restore(message, |s| {
            s.key
                .strip_prefix(key)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        })
    }

    fn restore(&self, message: &str, applies: impl Fn(&Substitution) -> bool) -> String {
        let mut message = message.to_owned();
        for substitution in self.0.iter().filter(|s| applies(s) && !s.value.is_empty()) {
            // Quoted first: serde shows a string it rejects in its debug form, escapes and all.
            message = message
                .replace(
                    &format!("{:?}", substitution.value),
                    &format!("{:?}", substitution.written),
                )
                .replace(&substitution.value, &substitution.written);
        }
        message
    }
}

/// The 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "PG_PASSWORD" => Some("s3cret".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn a_default_replaces_an_empty_value_like_the_shell() {
        let out = substitute_env("a=${EMPTY:-x} b=[${EMPTY}]", lookup);
        assert_eq!(out.unwrap(), "a=x b=[]");
    }

    #[test]
    fn substitutes_set_variables_and_defaults() {
        let out = substitute_env("a=${PG_PASSWORD} b=${MISSING:-x} c=$HOME d=$${LIT}", lookup);
        assert_eq!(out.unwrap(), "a=s3cret b=x c=$HOME d=${LIT}");
    }

    #[test]
    fn unset_variable_names_it() {
        let err = substitute_env("x${NOPE}", lookup).unwrap_err();
        assert!(err.contains("`NOPE` is not set"), "{err}");
    }

    #[test]
    fn unclosed_reference_is_an_error() {
        assert!(substitute_env("${OPEN", lookup).is_err());
        assert!(substitute_env("${a b}", lookup).is_err());
    }
}
