//! The wait a server asks for in `Retry-After` (RFC 9110, 10.2.3) on a throttled or unavailable
//! answer (429, 503): the source waits at least that long before asking again, instead of its
//! own backoff's first fraction of a second, which an API that rate-limits would count against
//! it.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// The longest wait taken from a server: a longer one (or a date far ahead) is cut to this, so
/// a wrong header cannot park the source for days; the source asks again after it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// The wait `headers` ask for at `now`, at most [`MAX_RETRY_AFTER`]: `Retry-After` as whole
/// seconds or as an HTTP date (a date already past asks for no wait). `None` when the header is
/// absent or is neither.
pub fn asked_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(value: &str, now: SystemTime) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, value.parse().unwrap());
        asked_wait(&headers, now)
    }

    #[test]
    fn seconds_and_dates_are_read_and_bounded() {
        // Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example date.
        let date = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let before = date - Duration::from_secs(90);
        assert_eq!(asked("120", before), Some(Duration::from_secs(120)));
        assert_eq!(asked(" 0 ", before), Some(Duration::ZERO));
        assert_eq!(
            asked("Sun, 06 Nov 1994 08:49:37 GMT", before),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            asked(
                "Sun, 06 Nov 1994 08:49:37 GMT",
                date + Duration::from_secs(5)
            ),
            Some(Duration::ZERO),
            "a date already past"
        );
        assert_eq!(asked("86400", before), Some(MAX_RETRY_AFTER));
        assert_eq!(asked("99999999999999999999", before), None);
        assert_eq!(asked("-5", before), None);
        assert_eq!(asked("soon", before), None);
        assert_eq!(asked_wait(&HeaderMap::new(), before), None);
    }
}
