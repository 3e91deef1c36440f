//! TLS for the connectors that open their own connections (PostgreSQL, Cassandra): which CAs to
//! trust, a client certificate if the server asks for one, and how strictly to check the
//! server, with Vector's names for the keys. The files are read with a size bound and checked
//! when the configuration is, so a wrong path or a key that does not fit its certificate stops a
//! pipeline before it starts instead of failing every connection attempt.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use openssl::error::ErrorStack;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{
    ErrorCode, Ssl, SslConnector, SslConnectorBuilder, SslContext, SslMethod, SslVerifyMode,
};
use openssl::x509::{X509, X509VerifyResult};
use serde::Deserialize;

use crate::connectors::ConfigProblem;
use crate::secret::Secret;

/// The largest certificate or key file read: a CA bundle of a few hundred certificates fits.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// How long [`probe_nodes`] waits for one node's TCP connection and handshake.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connector's `tls` table. Its presence turns TLS on and makes it required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of CA certificates to trust besides the system's (`/etc/ssl/certs`), for a
    /// server whose certificate a private CA signed.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate (first) and its intermediates, for a server that
    /// authenticates clients by certificate. Needs `key_file`.
    #[serde(default)]
    pub crt_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Passphrase of an encrypted `key_file` (e.g. `"${WEIR_TLS_KEY_PASS}"`); never shown.
    #[serde(default)]
    pub key_pass: Option<Secret>,
    /// Check the server's certificate against the trusted CAs (default `true`). With `false`
    /// the connection is still encrypted, but anyone on the path can pose as the server.
    #[serde(default = "yes")]
    pub verify_certificate: bool,
    /// Check that the server's certificate names the host or IP address connected to (default
    /// `true`). `false` accepts any certificate the trusted CAs signed.
    #[serde(default = "yes")]
    pub verify_hostname: bool,
}

fn yes() -> bool {
    true
}

/// A `tls` table that cannot be turned into a TLS client.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is larger than any certificate bundle or key.
    #[error("`{path}` is larger than {MAX_PEM_BYTES} bytes; is it the right file?")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A certificate file holds no PEM certificate.
    #[error("`{path}` holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A key file holds no key that can be read (or `key_pass` does not open it).
    #[error(
        "`{path}` holds no PEM private key that can be read ({source}); an encrypted key needs `key_pass`"
    )]
    BadKey {
        /// The file.
        path: PathBuf,
        /// OpenSSL's reason.
        source: ErrorStack,
    },
    /// Only one of `crt_file` and `key_file` was given.
    #[error("`crt_file` and `key_file` go together: give both, or neither")]
    HalfAPair,
    /// The key does not belong to the certificate.
    #[error("the key in `{key}` does not belong to the certificate in `{crt}`")]
    KeyMismatch {
        /// The certificate file.
        crt: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// OpenSSL refused a setting.
    #[error("OpenSSL: {0}")]
    OpenSsl(#[from] ErrorStack),
}

impl TlsConfig {
    /// The system's CAs and every check: what `sslmode=require` gets without a `tls` table.
    pub fn system_trust() -> Self {
        TlsConfig {
            ca_file: None,
            crt_file: None,
            key_file: None,
            key_pass: None,
            verify_certificate: true,
            verify_hostname: true,
        }
    }

    /// Checks that the files exist, parse and fit together, as a configuration problem under
    /// `tls.KEY` (`field` is where the table sits, e.g. `tls`).
    pub fn check(&self, field: &str) -> Result<(), ConfigProblem> {
        self.connector().map(drop).map_err(|e| {
            let key = match self.key_named(&e) {
                Some(key) => format!("{field}.{key}"),
                None => field.to_owned(),
            };
            (key, e.to_string())
        })
    }

    /// The key an error is about, by which file it names.
    fn key_named(&self, error: &TlsError) -> Option<&'static str> {
        let path = match error {
            TlsError::Read { path, .. }
            | TlsError::TooLarge { path }
            | TlsError::NoCertificate { path }
            | TlsError::BadKey { path, .. } => Some(path),
            _ => None,
        };
        match (path, error) {
            (Some(p), _) if self.ca_file.as_ref() == Some(p) => Some("ca_file"),
            (Some(p), _) if self.crt_file.as_ref() == Some(p) => Some("crt_file"),
            (_, TlsError::HalfAPair | TlsError::KeyMismatch { .. } | TlsError::BadKey { .. }) => {
                Some("key_file")
            }
            (Some(p), _) if self.key_file.as_ref() == Some(p) => Some("key_file"),
            _ => None,
        }
    }

    /// An OpenSSL client set up as this table says: the system's CAs plus `ca_file`, the client
    /// certificate, and the checks of the server.
    pub fn connector(&self) -> Result<SslConnectorBuilder, TlsError> {
        let mut builder = SslConnector::builder(SslMethod::tls_client())?;
        if let Some(path) = &self.ca_file {
            let pem = read_bounded(path)?;
            let certificates = X509::stack_from_pem(&pem)
                .map_err(|_| TlsError::NoCertificate { path: path.clone() })?;
            if certificates.is_empty() {
                return Err(TlsError::NoCertificate { path: path.clone() });
            }
            for certificate in certificates {
                builder.cert_store_mut().add_cert(certificate)?;
            }
        }
        match (&self.crt_file, &self.key_file) {
            (Some(crt), Some(key)) => {
                let pem = read_bounded(crt)?;
                let mut chain = X509::stack_from_pem(&pem)
                    .map_err(|_| TlsError::NoCertificate { path: crt.clone() })?
                    .into_iter();
                let leaf = chain
                    .next()
                    .ok_or_else(|| TlsError::NoCertificate { path: crt.clone() })?;
                builder.set_certificate(&leaf)?;
                for intermediate in chain {
                    builder.add_extra_chain_cert(intermediate)?;
                }
                let private_key = self.private_key(key)?;
                // OpenSSL checks the pair as the key is set, and once more after.
                let mismatch = |_| TlsError::KeyMismatch {
                    crt: crt.clone(),
                    key: key.clone(),
                };
                builder.set_private_key(&private_key).map_err(mismatch)?;
                builder.check_private_key().map_err(mismatch)?;
            }
            (None, None) => {}
            _ => return Err(TlsError::HalfAPair),
        }
        if !self.verify_certificate {
            builder.set_verify(SslVerifyMode::NONE);
        } else if !self.verify_hostname {
            // The chain is still checked; only a name (or IP) that does not match is let pass.
            builder.set_verify_callback(SslVerifyMode::PEER, |preverified, context| {
                preverified || is_name_mismatch(context.error())
            });
        }
        Ok(builder)
    }

    fn private_key(&self, path: &Path) -> Result<PKey<Private>, TlsError> {
        let pem = read_bounded(path)?;
        let key = match &self.key_pass {
            Some(pass) => PKey::private_key_from_pem_passphrase(&pem, pass.expose().as_bytes()),
            None => PKey::private_key_from_pem(&pem),
        };
        key.map_err(|source| TlsError::BadKey {
            path: path.to_owned(),
            source,
        })
    }
}

/// Whether a verification failure is only about the name the certificate is for.
fn is_name_mismatch(result: X509VerifyResult) -> bool {
    let code = result.as_raw();
    code == openssl_sys::X509_V_ERR_HOSTNAME_MISMATCH
        || code == openssl_sys::X509_V_ERR_IP_ADDRESS_MISMATCH
}

/// A file's bytes, refused beyond [`MAX_PEM_BYTES`].
fn read_bounded(path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// A node that answered a TLS handshake with a refusal.
#[derive(Debug, thiserror::Error)]
#[error(
    "the TLS handshake with {node} failed: {reason}; check `tls.ca_file` (the CA that signed the node's certificate), that the certificate names the node's IP address (or set `tls.verify_hostname = false`), and the client certificate if the node asks for one"
)]
pub struct HandshakeRefused {
    /// The node, as `ip:port`.
    pub node: SocketAddr,
    /// OpenSSL's reason, with the certificate check's result when it failed.
    pub reason: String,
}

/// Tries one TLS handshake, with `context`, against the first of `nodes` (`host:port`) that
/// accepts a connection, checking its certificate against the node's IP address as the
/// Cassandra driver does. A refusal is an error; a node that cannot be reached, or a handshake
/// cut short by the network, is not: that is an outage, which the driver's own retries wait out.
pub async fn probe_nodes(nodes: &[String], context: &SslContext) -> Result<(), HandshakeRefused> {
    for node in nodes {
        let Ok(Ok(addresses)) =
            tokio::time::timeout(PROBE_TIMEOUT, tokio::net::lookup_host(node.as_str())).await
        else {
            continue;
        };
        for address in addresses {
            match probe(address, context).await {
                Probe::Accepted => return Ok(()),
                Probe::Refused(reason) => {
                    return Err(HandshakeRefused {
                        node: address,
                        reason,
                    });
                }
                Probe::Unreachable => {}
            }
        }
    }
    Ok(())
}

/// What one handshake found.
enum Probe {
    Accepted,
    Refused(String),
    Unreachable,
}

async fn probe(address: SocketAddr, context: &SslContext) -> Probe {
    let connected = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(address));
    let Ok(Ok(stream)) = connected.await else {
        return Probe::Unreachable;
    };
    let ssl = Ssl::new(context).and_then(|mut ssl| {
        ssl.set_connect_state();
        ssl.param_mut().set_ip(address.ip())?;
        Ok(ssl)
    });
    let mut stream = match ssl.and_then(|ssl| tokio_openssl::SslStream::new(ssl, stream)) {
        Ok(stream) => stream,
        Err(e) => return Probe::Refused(e.to_string()),
    };
    match tokio::time::timeout(PROBE_TIMEOUT, Pin::new(&mut stream).connect()).await {
        Ok(Ok(())) => Probe::Accepted,
        Ok(Err(e)) if e.code() == ErrorCode::SSL => {
            let verified = stream.ssl().verify_result();
            if verified == X509VerifyResult::OK {
                Probe::Refused(e.to_string())
            } else {
                Probe::Refused(format!("{e}: {}", verified.error_string()))
            }
        }
        Ok(Err(_)) | Err(_) => Probe::Unreachable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(ca: Option<&Path>, crt: Option<&Path>, key: Option<&Path>) -> TlsConfig {
        TlsConfig {
            ca_file: ca.map(Path::to_owned),
            crt_file: crt.map(Path::to_owned),
            key_file: key.map(Path::to_owned),
            ..TlsConfig::system_trust()
        }
    }

    #[test]
    fn problems_name_the_key_of_the_file_they_are_about() {
        let dir = tempfile::tempdir().unwrap();
        let huge = dir.path().join("bundle.pem");
        std::fs::write(&huge, vec![b'A'; MAX_PEM_BYTES as usize + 1]).unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let missing = dir.path().join("missing.pem");

        let (key, message) = table(Some(&huge), None, None).check("tls").unwrap_err();
        assert_eq!(key, "tls.ca_file");
        assert!(
            message.contains("bundle.pem") && message.contains("larger than"),
            "{message}"
        );

        let (key, message) = table(None, Some(&empty), Some(&missing))
            .check("tls")
            .unwrap_err();
        assert_eq!(key, "tls.crt_file");
        assert!(message.contains("no PEM certificate"), "{message}");

        let (key, message) = table(None, Some(&empty), None)
            .check("sink.tls")
            .unwrap_err();
        assert_eq!(key, "sink.tls.key_file");
        assert!(message.contains("go together"), "{message}");

        let (key, message) = table(Some(&missing), None, None).check("tls").unwrap_err();
        assert_eq!(key, "tls.ca_file");
        assert!(message.contains("missing.pem"), "{message}");

        // No files: the system's CAs, which always make a client.
        assert!(table(None, None, None).check("tls").is_ok());
    }
}
