//! The names in a `kafka` source's `topics`: a topic's name, or a pattern that subscribes to
//! every topic it matches. librdkafka takes a name starting with `^` as a POSIX extended regular
//! expression and matches it with the C library's `regcomp`/`regexec`; weir checks and matches
//! patterns with the same functions, so a pattern `weir validate` accepts is one librdkafka
//! accepts, and the topics weir counts for a canary's share are the ones the group reads.

use std::ffi::{CStr, CString};

/// Kafka's longest topic name.
pub(crate) const MAX_TOPIC_NAME: usize = 249;

/// Longest pattern compiled: far past any a person writes, short enough that compiling one is
/// cheap (the C library's compilation grows with the pattern).
const MAX_PATTERN_BYTES: usize = 1024;

/// What is wrong with an entry of `topics`, in words for the config error.
pub(crate) fn problem(entry: &str) -> Option<String> {
    if is_pattern(entry) {
        return TopicPattern::compile(entry).err();
    }
    name_problem(entry).map(|problem| match illegal_character(entry) {
        Some(_) => format!(
            "{problem}; to read every topic a regular expression matches, start it with `^` (`^{entry}`)"
        ),
        None => problem,
    })
}

/// What keeps `name` from being a topic's name, in words for the config error.
pub(crate) fn name_problem(name: &str) -> Option<String> {
    if name.len() > MAX_TOPIC_NAME {
        return Some(format!(
            "`{}...` is {} bytes: a topic's name is at most {MAX_TOPIC_NAME}",
            name.chars().take(40).collect::<String>(),
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Some(format!("`{name}` is not a topic's name"));
    }
    illegal_character(name).map(|bad| {
        format!("`{name}` is not a topic's name: {bad:?} is not a letter, digit, `.`, `_` or `-`")
    })
}

/// The first character of `text` that no topic's name may hold.
pub(crate) fn illegal_character(text: &str) -> Option<char> {
    text.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
}

/// Whether a `topics` entry is a pattern rather than a topic's name.
pub(crate) fn is_pattern(entry: &str) -> bool {
    entry.starts_with('^')
}

/// A compiled pattern.
pub(crate) struct TopicPattern {
    compiled: Box<libc::regex_t>,
}

// SAFETY: a compiled `regex_t` is only read by `regexec`, which POSIX makes safe to call from
// several threads on one compiled expression; it is freed once, by its owner's `Drop`.
unsafe impl Send for TopicPattern {}
unsafe impl Sync for TopicPattern {}

impl TopicPattern {
    /// Compiles `pattern` as librdkafka does (`REG_EXTENDED | REG_NOSUB`), or says why it
    /// cannot be: the C library's message.
    pub(crate) fn compile(pattern: &str) -> Result<Self, String> {
        if pattern.len() > MAX_PATTERN_BYTES {
            return Err(format!(
                "the pattern is {} bytes; at most {MAX_PATTERN_BYTES}",
                pattern.len()
            ));
        }
        let text = CString::new(pattern)
            .map_err(|_| format!("`{}` holds a NUL byte", pattern.escape_debug()))?;
        // SAFETY: `regex_t` is plain data that `regcomp` fills; all zeros is a valid start.
        let mut compiled: Box<libc::regex_t> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: `compiled` points to writable storage for one `regex_t`, `text` is
        // NUL-terminated, and both outlive the call.
        let code = unsafe {
            libc::regcomp(
                &mut *compiled,
                text.as_ptr(),
                libc::REG_EXTENDED | libc::REG_NOSUB,
            )
        };
        if code != 0 {
            let mut message = [0 as libc::c_char; 256];
            // SAFETY: `compiled` is what the failed `regcomp` left, as `regerror` takes it;
            // `message` is writable for its length, which is passed, and is NUL-terminated by
            // `regerror` within it.
            unsafe { libc::regerror(code, &*compiled, message.as_mut_ptr(), message.len()) };
            // SAFETY: `regerror` wrote a NUL-terminated string into `message`.
            let reason = unsafe { CStr::from_ptr(message.as_ptr()) }.to_string_lossy();
            return Err(format!(
                "`{pattern}` is not a valid pattern (a POSIX extended regular expression, as librdkafka reads one): {reason}"
            ));
        }
        Ok(TopicPattern { compiled })
    }

    /// Whether `topic` is one the pattern subscribes to: anywhere in the name, as `regexec`
    /// matches (a pattern's leading `^` anchors it at the start; `$` anchors the end).
    pub(crate) fn matches(&self, topic: &str) -> bool {
        let Ok(topic) = CString::new(topic) else {
            return false;
        };
        // SAFETY: `compiled` was filled by a successful `regcomp` and not freed; `topic` is
        // NUL-terminated; with `REG_NOSUB` no match array is read or written.
        let code =
            unsafe { libc::regexec(&*self.compiled, topic.as_ptr(), 0, std::ptr::null_mut(), 0) };
        code == 0
    }
}

impl Drop for TopicPattern {
    fn drop(&mut self) {
        // SAFETY: `compiled` was filled by a successful `regcomp` (a failed one is never
        // wrapped) and is freed only here.
        unsafe { libc::regfree(&mut *self.compiled) };
    }
}

/// The topics among `names` that `entries` (names and patterns) subscribe to, each once.
pub(crate) fn subscribed<'a>(
    entries: &[String],
    names: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<&'a str>, String> {
    let patterns = entries
        .iter()
        .filter(|entry| is_pattern(entry))
        .map(|entry| TopicPattern::compile(entry))
        .collect::<Result<Vec<_>, _>>()?;
    let mut found: Vec<&str> = names
        .into_iter()
        .filter(|name| {
            entries.iter().any(|entry| entry == name)
                || patterns.iter().any(|pattern| pattern.matches(name))
        })
        .collect();
    found.sort_unstable();
    found.dedup();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_matches_as_librdkafka_reads_it() {
        let pattern = TopicPattern::compile("^orders-(eu|us)\\.[0-9]+").unwrap();
        assert!(pattern.matches("orders-eu.1"));
        assert!(
            pattern.matches("orders-us.42-archive"),
            "unanchored at the end"
        );
        assert!(!pattern.matches("orders-asia.1"));
        assert!(!pattern.matches("old-orders-eu.1"), "anchored at the start");
        let whole = TopicPattern::compile("^users$").unwrap();
        assert!(whole.matches("users") && !whole.matches("users2"));
    }

    #[test]
    fn an_invalid_pattern_is_refused_with_the_c_librarys_reason() {
        let message = problem("^orders-[").unwrap();
        assert!(
            message.contains("`^orders-[` is not a valid pattern")
                && message.contains("POSIX extended")
                && message.len() > "`^orders-[` is not a valid pattern (a POSIX extended regular expression, as librdkafka reads one): ".len(),
            "{message}"
        );
        assert!(problem("^ok-.*").is_none());
        assert!(problem(&format!("^{}", "a".repeat(MAX_PATTERN_BYTES))).is_some());
    }

    #[test]
    fn a_name_that_no_topic_can_have_is_refused_with_the_pattern_hint() {
        assert!(problem("users").is_none());
        assert!(problem("weir.users_v2-eu").is_none());
        let message = problem("users.*").unwrap();
        assert!(
            message.contains("'*' is not a letter") && message.contains("`^users.*`"),
            "{message}"
        );
        assert!(problem("two words").is_some());
        assert!(problem("..").is_some());
        assert!(problem(&"t".repeat(MAX_TOPIC_NAME)).is_none());
        assert!(problem(&"t".repeat(MAX_TOPIC_NAME + 1)).is_some());
    }

    #[test]
    fn subscribed_topics_are_named_ones_and_those_a_pattern_matches_each_once() {
        let entries = vec![
            "audit".to_owned(),
            "^orders-".to_owned(),
            "^orders-eu".to_owned(),
        ];
        let names = [
            "orders-eu",
            "orders-us",
            "audit",
            "payments",
            "__consumer_offsets",
        ];
        assert_eq!(
            subscribed(&entries, names).unwrap(),
            ["audit", "orders-eu", "orders-us"]
        );
    }
}
