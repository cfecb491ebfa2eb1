//! The TLS files of one connection (to NATS or to Redis): which CA to trust, which certificate to
//! present, and the names of the settings they come from, for messages.

#[cfg(any(feature = "nats", feature = "redis"))]
use std::path::Path;
use std::path::PathBuf;

#[cfg(any(feature = "nats", feature = "redis"))]
use crate::error::Error;

/// The files a connection uses for TLS, all PEM: the CA that signed the server's certificate
/// (unset: the system's roots), and a client certificate with its key for servers that verify
/// their clients (mutual TLS).
///
/// ```
/// let mut tls = cohort::TlsFiles::default();
/// tls.ca = Some("/etc/cohort/nats-ca.pem".into());
/// assert!(!tls.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsFiles {
    /// The CA certificate(s) the server's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// The certificate this instance presents, for mutual TLS; needs [`key`](Self::key).
    pub cert: Option<PathBuf>,
    /// The private key of [`cert`](Self::cert).
    pub key: Option<PathBuf>,
}

/// The settings a [`TlsFiles`] is read from, so that every message names the one to fix.
#[cfg(any(feature = "nats", feature = "redis"))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct TlsSettings {
    pub(crate) ca: &'static str,
    pub(crate) cert: &'static str,
    pub(crate) key: &'static str,
}

#[cfg(feature = "nats")]
pub(crate) const NATS_TLS: TlsSettings = TlsSettings {
    ca: "COHORT_NATS_TLS_CA",
    cert: "COHORT_NATS_TLS_CERT",
    key: "COHORT_NATS_TLS_KEY",
};

#[cfg(feature = "redis")]
pub(crate) const REDIS_TLS: TlsSettings = TlsSettings {
    ca: "COHORT_REDIS_TLS_CA",
    cert: "COHORT_REDIS_TLS_CERT",
    key: "COHORT_REDIS_TLS_KEY",
};

/// The contents of a [`TlsFiles`], read and checked.
#[cfg(feature = "redis")]
pub(crate) struct TlsPem {
    pub(crate) ca: Option<Vec<u8>>,
    /// The client certificate and its key.
    pub(crate) client: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsFiles {
    /// Whether no file is set: the connection trusts the system's roots and presents nothing.
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }

    /// The client certificate and key, both or neither.
    #[cfg(any(feature = "nats", feature = "redis"))]
    pub(crate) fn client_pair(
        &self,
        settings: TlsSettings,
    ) -> Result<Option<(&Path, &Path)>, Error> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(setting_error(format!(
                "{} is set but {} is not: mutual TLS needs the certificate's private key too",
                settings.cert, settings.key
            ))),
            (None, Some(_)) => Err(setting_error(format!(
                "{} is set but {} is not: mutual TLS needs the certificate the key belongs to",
                settings.key, settings.cert
            ))),
        }
    }

    /// Checks that every file set can be read, so that a wrong path is reported as such rather
    /// than as a failed handshake.
    #[cfg(feature = "nats")]
    pub(crate) fn check(&self, settings: TlsSettings) -> Result<(), Error> {
        if let Some(ca) = &self.ca {
            read_file_setting(settings.ca, ca)?;
        }
        if let Some((cert, key)) = self.client_pair(settings)? {
            read_file_setting(settings.cert, cert)?;
            read_file_setting(settings.key, key)?;
        }
        Ok(())
    }

    /// Reads every file set.
    #[cfg(feature = "redis")]
    pub(crate) fn read(&self, settings: TlsSettings) -> Result<TlsPem, Error> {
        let ca = match &self.ca {
            Some(ca) => Some(read_file_setting(settings.ca, ca)?),
            None => None,
        };
        let client = match self.client_pair(settings)? {
            Some((cert, key)) => Some((
                read_file_setting(settings.cert, cert)?,
                read_file_setting(settings.key, key)?,
            )),
            None => None,
        };
        Ok(TlsPem { ca, client })
    }
}

/// Whether a connection error is TLS refusing the connection. rustls reports a rejected
/// certificate or a refused handshake as an I/O error, whose text is all that tells it apart
/// from a refused TCP connection.
#[cfg(any(feature = "nats", feature = "redis"))]
pub(crate) fn is_tls_failure(error: &str) -> bool {
    let error = error.to_ascii_lowercase();
    ["certificate", "handshake", "tls", "alert"]
        .iter()
        .any(|word| error.contains(word))
}

/// What to fix after TLS failed with `error`: the CA when this side rejected the server's
/// certificate, the client certificate when the server rejected (or missed) ours.
#[cfg(any(feature = "nats", feature = "redis"))]
pub(crate) fn tls_advice(error: &str, files: &TlsFiles, settings: TlsSettings) -> String {
    let ca = match &files.ca {
        Some(path) => format!(
            "check that {} (`{}`) holds the CA that signed the server's certificate",
            settings.ca,
            path.display()
        ),
        None => format!(
            "set {} to the CA that signed the server's certificate (without it, only the \
             system's roots are trusted)",
            settings.ca
        ),
    };
    let client = match &files.cert {
        Some(path) => format!(
            "the server rejected the client certificate: check that {} (`{}`) is signed by a CA \
             the server trusts",
            settings.cert,
            path.display()
        ),
        None => format!(
            "the server verifies its clients: set {} and {} to a client certificate, signed by a \
             CA the server trusts, and its key",
            settings.cert, settings.key
        ),
    };
    if error.contains("peer certificate") {
        ca
    } else if error.contains("alert") {
        client
    } else {
        format!("{ca}; if {client}")
    }
}

/// Reads the file a setting names; the error names the setting and the path, never the contents.
#[cfg(any(feature = "nats", feature = "redis"))]
pub(crate) fn read_file_setting(setting: &str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|err| {
        setting_error(format!(
            "cannot read the file that {setting} names, `{}`: {err}",
            path.display()
        ))
    })
}

#[cfg(any(feature = "nats", feature = "redis"))]
fn setting_error(message: String) -> Error {
    Error::bad_request(message).with_code("invalid_config")
}

#[cfg(all(test, feature = "nats", feature = "redis"))]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_without_its_key_names_both_settings() {
        let tls = TlsFiles {
            cert: Some("/c.pem".into()),
            ..TlsFiles::default()
        };
        let err = tls.client_pair(NATS_TLS).expect_err("incomplete pair");
        assert!(err.message().contains("COHORT_NATS_TLS_CERT"), "{err}");
        assert!(err.message().contains("COHORT_NATS_TLS_KEY"), "{err}");
    }

    #[test]
    fn an_unreadable_file_names_the_setting_and_the_path() {
        let err = read_file_setting("COHORT_REDIS_TLS_CA", Path::new("/nonexistent/ca.pem"))
            .expect_err("missing file");
        assert!(err.message().contains("COHORT_REDIS_TLS_CA"), "{err}");
        assert!(err.message().contains("/nonexistent/ca.pem"), "{err}");
    }
}
