//! Secrets in configs: a type that never prints its value, and the one routine that takes
//! credentials out of URLs, connection strings and text echoed back by servers before any of them
//! reaches a log, a metric, an API answer or a dead letter.

use std::fmt;

use serde::Deserialize;

/// What every hidden value is shown as.
pub const HIDDEN: &str = "***";

/// Configured values shorter than this are not scrubbed from echoed text: a value like `50` (a
/// page size in a query) is no credential, and hiding every `50` would garble the excerpt.
const SHORTEST_SCRUBBED: usize = 4;

/// A config value that can hold a credential: a connection URL or string, a header, a query value,
/// a librdkafka property. `Debug` and `Display` print `***`; the value is reached only through
/// [`Secret::expose`], at the one place that hands it to a client library, or through
/// [`Secret::redacted`] for messages.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the client library that needs it. Never format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The value as messages may show it: a URL or a connection string with its credentials
    /// replaced by `***` (see [`redact`]).
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(HIDDEN)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(HIDDEN)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

/// A URL or a connection string as messages show it.
///
/// - A URL (`scheme://...` without whitespace): its password, every query value (API keys and
///   `?password=` ride there) and its fragment become `***`; user, host, port and path stay, so
///   the message still says where.
/// - Other text with a `://` in it (a URL that does not parse, say with a `#` or `/` in its
///   password, or a conninfo string with a `://` in a value) is shown conservatively:
///   everything from the first `://` to the last `@` becomes `***`, whatever follows the first
///   `?` or `#` after that is dropped, and what is left is redacted as `key=value` pairs.
/// - Anything else is read as `key=value` pairs (a PostgreSQL conninfo string such as
///   `host=db user=weir password='s e c'`): the value of every key naming a password
///   (`password`, `sslpassword`, ...) or another secret becomes `***`, quoted or not.
pub fn redact(text: &str) -> String {
    match text.find("://") {
        Some(scheme_end) => redact_url(text, scheme_end),
        None => redact_key_values(text),
    }
}

/// `url` redacted; `scheme_end` is where its first `://` starts.
fn redact_url(url: &str, scheme_end: usize) -> String {
    let parsed = reqwest::Url::parse(url)
        .ok()
        // Whitespace does not belong in a URL; a URL without an authority is no `scheme://`.
        .filter(|parsed| !url.contains(char::is_whitespace) && !parsed.cannot_be_a_base());
    let Some(mut parsed) = parsed else {
        return redact_unparsed_url(url, scheme_end);
    };
    if parsed.password().is_some() {
        // Only fails for URLs that cannot have credentials, which then have no password.
        let _ = parsed.set_password(Some(HIDDEN));
    }
    if parsed.query().is_some() {
        let names: Vec<String> = parsed
            .query_pairs()
            .map(|(name, _)| name.into_owned())
            .collect();
        let mut pairs = parsed.query_pairs_mut();
        pairs.clear();
        for name in &names {
            pairs.append_pair(name, HIDDEN);
        }
    }
    if parsed.fragment().is_some() {
        parsed.set_fragment(Some(HIDDEN));
    }
    parsed.to_string()
}

/// Text with a `://` that is no URL: hides from the `://` to the last `@` (a password may hold
/// `/`, `?`, `#` or `@`), drops what follows the next `?` or `#`, then hides sensitive
/// `key=value` pairs in what is left.
fn redact_unparsed_url(text: &str, scheme_end: usize) -> String {
    let authority = scheme_end + "://".len();
    let (head, rest) = match text[authority..].rfind('@') {
        Some(at) => (
            format!("{}{HIDDEN}", &text[..authority]),
            &text[authority + at..],
        ),
        None => (String::new(), text),
    };
    // The `://` itself may be inside a query or a fragment: search after it only.
    let searched = if head.is_empty() { authority } else { 0 };
    let cut = rest[searched..]
        .find(['?', '#'])
        .map_or(rest.len(), |at| searched + at);
    redact_key_values(&format!("{head}{}", &rest[..cut]))
}

/// Whether a key (of a conninfo string, a property map, a plugin config) names a credential.
pub fn is_sensitive_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password", "passwd", "secret", "token", "salt", "sasl", "apikey", "api_key",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// `key=value` text with the values of sensitive keys hidden. Values follow libpq's rules: either
/// single-quoted (`\'` and `\\` escaped inside) or up to the next whitespace (backslash escapes
/// allowed); spaces may surround `=`.
fn redact_key_values(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while at < bytes.len() {
        // Copy whitespace and anything that is not a key as it is.
        if !(bytes[at].is_ascii_alphanumeric() || bytes[at] == b'_') {
            let next = text[at..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&text[at..at + next]);
            at += next;
            continue;
        }
        let key_start = at;
        while at < bytes.len()
            && (bytes[at].is_ascii_alphanumeric() || matches!(bytes[at], b'_' | b'.' | b'-'))
        {
            at += 1;
        }
        let key = &text[key_start..at];
        let mut equals = at;
        while equals < bytes.len() && bytes[equals].is_ascii_whitespace() {
            equals += 1;
        }
        if equals >= bytes.len() || bytes[equals] != b'=' {
            out.push_str(key);
            continue;
        }
        let mut value_start = equals + 1;
        while value_start < bytes.len() && bytes[value_start].is_ascii_whitespace() {
            value_start += 1;
        }
        let value_end = value_end(bytes, value_start);
        out.push_str(&text[key_start..value_start]);
        if is_sensitive_key(key) {
            out.push_str(HIDDEN);
        } else {
            out.push_str(&text[value_start..value_end]);
        }
        at = value_end;
    }
    out
}

/// Where a conninfo value starting at `start` ends (exclusive).
fn value_end(bytes: &[u8], start: usize) -> usize {
    let mut at = start;
    if bytes.get(at) == Some(&b'\'') {
        at += 1;
        while at < bytes.len() {
            match bytes[at] {
                b'\\' => at += 2,
                b'\'' => return at + 1,
                _ => at += 1,
            }
        }
        // An unterminated quote runs to the end, and all of it is the value.
        return bytes.len();
    }
    while at < bytes.len() && !bytes[at].is_ascii_whitespace() {
        at += if bytes[at] == b'\\' { 2 } else { 1 };
    }
    at.min(bytes.len())
}

/// Hides configured values (header values, query values, a URL's password) in text a server sent
/// back, such as the body of an error response, which may echo the request. Each value is hidden
/// as written and as a query string encodes it.
#[derive(Debug, Clone, Default)]
pub struct Scrubber {
    /// The forms to hide, longest first so that a value containing another goes whole.
    needles: Vec<Secret>,
}

impl Scrubber {
    /// A scrubber for these values; empty and very short ones are ignored.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut needles: Vec<Secret> = Vec::new();
        for value in values {
            if value.chars().count() < SHORTEST_SCRUBBED {
                continue;
            }
            for form in [value.to_owned(), form_encode(value), percent_encode(value)] {
                if !needles.iter().any(|n| n.expose() == form) {
                    needles.push(Secret(form));
                }
            }
        }
        needles.sort_by_key(|n| std::cmp::Reverse(n.expose().len()));
        Scrubber { needles }
    }

    /// The longest text one hidden value can take, for callers that cut text after scrubbing:
    /// they scrub this much more than they keep, so no value is cut in half and half shown.
    pub fn longest(&self) -> usize {
        self.needles.first().map_or(0, |n| n.expose().len())
    }

    /// `text` with every configured value replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for needle in &self.needles {
            if text.contains(needle.expose()) {
                text = text.replace(needle.expose(), HIDDEN);
            }
        }
        text
    }

    /// Like [`Scrubber::scrub`], for bytes that may not be text (a response body).
    pub fn scrub_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        if self.needles.is_empty() {
            return bytes.to_vec();
        }
        let mut out = bytes.to_vec();
        for needle in &self.needles {
            let needle = needle.expose().as_bytes();
            if out.windows(needle.len()).any(|w| w == needle) {
                let mut replaced = Vec::with_capacity(out.len());
                let mut at = 0;
                while at < out.len() {
                    if out[at..].starts_with(needle) {
                        replaced.extend_from_slice(HIDDEN.as_bytes());
                        at += needle.len();
                    } else {
                        replaced.push(out[at]);
                        at += 1;
                    }
                }
                out = replaced;
            }
        }
        out
    }
}

/// `value` as `application/x-www-form-urlencoded` writes it (what a query string carries).
fn form_encode(value: &str) -> String {
    encode(value, true)
}

/// `value` percent-encoded, spaces as `%20`.
fn percent_encode(value: &str) -> String {
    encode(value, false)
}

fn encode(value: &str, plus_for_space: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(byte as char);
            }
            b' ' if plus_for_space => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_formats_its_value() {
        let secret = Secret::new("hunter2-canary");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(***)");
        assert_eq!(secret.expose(), "hunter2-canary");
        let parsed: Secret = serde_json::from_str("\"v\"").unwrap();
        assert_eq!(parsed.expose(), "v");
    }

    #[test]
    fn urls_hide_passwords_query_values_and_fragments() {
        assert_eq!(
            redact("https://user:hunter2@example.com/api?results=50&token=s3cret#frag"),
            "https://user:***@example.com/api?results=***&token=***#***"
        );
        assert_eq!(redact("http://example.com/api/"), "http://example.com/api/");
        assert_eq!(
            redact("not a url://user:hunter2@host/x?token=s3cret"),
            "not a url://***@host/x"
        );
        assert_eq!(
            redact("postgres://weir:secret@127.0.0.1:5432/weir"),
            "postgres://weir:***@127.0.0.1:5432/weir"
        );
        assert_eq!(
            redact("postgresql://weir@127.0.0.1/weir?password=secret&sslmode=disable"),
            "postgresql://weir@127.0.0.1/weir?password=***&sslmode=***"
        );
    }

    #[test]
    fn text_that_does_not_parse_as_a_url_hides_everything_up_to_the_last_at() {
        // A `#` in the password: no URL parser reads this as the user meant.
        assert_eq!(
            redact("postgres://weir:pa#ss@db:5432/weir"),
            "postgres://***@db:5432/weir"
        );
        assert_eq!(
            redact("postgres://weir:p/a?s@s@db:5432/weir?sslmode=x"),
            "postgres://***@db:5432/weir"
        );
        // A conninfo string with a `://` in a value is still a conninfo string.
        assert_eq!(
            redact("host=db password=ab://cd user=weir"),
            "host=db password=*** user=weir"
        );
        assert_eq!(
            redact("host=db password='a b://c@d' user=weir"),
            "host=db password=*** user=weir"
        );
        assert_eq!(
            redact("postgres://weir@db/weir password=hunter2"),
            "postgres://***@db/weir password=***"
        );
        for text in [
            "postgres://weir:pa#ss@db:5432/weir",
            "host=db password=ab://cd",
            "x:password=ab://cd",
        ] {
            let shown = redact(text);
            assert!(
                !shown.contains("pa#ss") && !shown.contains("ab://cd"),
                "{shown}"
            );
        }
    }

    #[test]
    fn conninfo_strings_hide_password_values_quoted_or_not() {
        assert_eq!(
            redact("host=127.0.0.1 user=weir password=secret dbname=weir"),
            "host=127.0.0.1 user=weir password=*** dbname=weir"
        );
        assert_eq!(
            redact("host=db password = 'se cr\\'et' sslpassword=x2 port=5432"),
            "host=db password = *** sslpassword=*** port=5432"
        );
        assert_eq!(
            redact("user=weir password='unterminated"),
            "user=weir password=***"
        );
        assert_eq!(redact("PASSWORD=a\\ b host=x"), "PASSWORD=*** host=x");
        assert_eq!(redact("host=localhost"), "host=localhost");
        assert_eq!(redact("just text, no pairs"), "just text, no pairs");
    }

    #[test]
    fn a_scrubber_hides_values_as_written_and_encoded() {
        let scrubber = Scrubber::new(["tok en/1", "50", ""]);
        assert_eq!(
            scrubber.scrub("got tok en/1, tok+en%2F1 and tok%20en%2F1; page 50"),
            "got ***, *** and ***; page 50"
        );
        assert_eq!(
            scrubber.scrub_bytes(b"\xff tok en/1 \xfe"),
            b"\xff *** \xfe".to_vec()
        );
        assert!(Scrubber::new(["x"]).scrub("x").contains('x'));
    }
}
