//! What an operator can do about a failed write to a file: the errors a filesystem gives while
//! it cannot take more (full, over quota, remounted read-only) are retried until it can, and the
//! message says so and what frees it, where the OS's words alone ("No space left on device")
//! leave the operator to guess whether weir gave up.

/// What is wrong and what cures it, for the errors a filesystem gives while it cannot take
/// more; `None` for others, whose own words are all there is to say.
pub(crate) fn what_to_do(error: &std::io::Error) -> Option<&'static str> {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::StorageFull => Some("the filesystem is full: free space on it"),
        ErrorKind::QuotaExceeded => {
            Some("the disk quota of weir's user is used up: raise it or free space")
        }
        ErrorKind::ReadOnlyFilesystem => Some(
            "the filesystem is mounted read-only, as after a disk error: remount it read-write",
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_says_to_free_space_and_other_errors_say_nothing_more() {
        // ENOSPC, as the kernel reports it.
        let full = std::io::Error::from_raw_os_error(28);
        assert!(what_to_do(&full).unwrap().contains("free space"), "{full}");
        let quota = std::io::Error::from_raw_os_error(122);
        assert!(what_to_do(&quota).unwrap().contains("quota"), "{quota}");
        let read_only = std::io::Error::from_raw_os_error(30);
        assert!(
            what_to_do(&read_only).unwrap().contains("read-only"),
            "{read_only}"
        );
        // EIO: nothing to add to the OS's words.
        let other = std::io::Error::from_raw_os_error(5);
        assert_eq!(what_to_do(&other), None, "{other}");
    }
}
