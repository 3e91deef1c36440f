//! A hostile test plugin that tries to leave its sandbox: deep recursion (`recurse`), reading a
//! host file (`file`), opening a socket (`socket`) and reading the environment (`env`). The host
//! must contain each: a stack-overflow trap, and errors for every capability it never granted.
//! `clock` answers with the seconds since the epoch that the plugin's wall clock shows: the real
//! time only when the manifest asked for the capability and the pipeline allowed it.

use weir_plugin::{Config, Error, Plugin, Record};

/// Tries to escape on demand.
pub struct Escape;

#[inline(never)]
fn recurse(depth: u64, pad: [u64; 16]) -> u64 {
    let pad = std::hint::black_box(pad);
    if depth == u64::MAX {
        return pad[0];
    }
    recurse(depth + 1, pad).wrapping_add(std::hint::black_box(1))
}

impl Plugin for Escape {
    fn init(_config: &Config) -> Result<Self, Error> {
        Ok(Escape)
    }

    fn transform(&self, record: Record) -> Result<Vec<Record>, Error> {
        let command = String::from_utf8_lossy(&record.value).into_owned();
        if command.contains("recurse") {
            let total = recurse(0, [1; 16]);
            return Err(Error::failure(format!("recursion ended at {total}")));
        }
        if command.contains("file") {
            return match std::fs::read_to_string("/etc/hostname") {
                Ok(text) => Ok(vec![Record::new(format!("ESCAPED file: {text}"))]),
                Err(error) => Err(Error::failure(format!("file access denied: {error}"))),
            };
        }
        if command.contains("socket") {
            return match std::net::TcpStream::connect("127.0.0.1:9") {
                Ok(_) => Ok(vec![Record::new("ESCAPED socket")]),
                Err(error) => Err(Error::failure(format!("socket denied: {error}"))),
            };
        }
        if command.contains("clock") {
            let seconds = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_secs());
            return Ok(vec![Record::new(format!("{{\"clock\":{seconds}}}"))]);
        }
        if command.contains("env") {
            let variables: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
            if !variables.is_empty() {
                return Ok(vec![Record::new(format!("ESCAPED env: {variables:?}"))]);
            }
            return Err(Error::failure("environment is empty"));
        }
        Ok(vec![record])
    }
}

#[cfg(target_arch = "wasm32")]
weir_plugin::export_plugin!(Escape);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_records_pass_through() {
        let record = Record::new("calm");
        assert_eq!(Escape.transform(record.clone()).unwrap(), vec![record]);
    }
}
