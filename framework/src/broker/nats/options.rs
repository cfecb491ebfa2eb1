//! How an instance connects to NATS: which identity it signs in with (user and password or token
//! from the URL, a creds file, an nkey), which TLS it uses, and what a refused connection tells
//! the operator to fix.

use std::borrow::Cow;
use std::path::PathBuf;

use async_nats::{ConnectError, ConnectErrorKind, ConnectOptions, ServerAddr};
use percent_encoding::percent_decode_str;

use super::StreamSettings;
use crate::cluster_key::ClusterKey;
use crate::config::Config;
use crate::error::Error;
use crate::redact::mask_urls;
use crate::tls::{NATS_TLS, TlsFiles, is_tls_failure, read_file_setting, tls_advice};

/// Everything [`NatsBroker::connect_with`](super::NatsBroker::connect_with) takes besides the
/// URLs: how to create the streams, and how to sign in and secure the connection. A user and
/// password (`nats://user:password@host:4222`) or a token (`nats://token@host:4222`) come with the
/// URLs themselves.
///
/// ```
/// use cohort::broker::NatsOptions;
///
/// let mut options = NatsOptions::default();
/// options.nkey = Some("/run/secrets/orders.nk".into());
/// options.tls.ca = Some("/etc/cohort/nats-ca.pem".into());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsOptions {
    /// How the event streams are created when they do not exist yet.
    pub streams: StreamSettings,
    /// A `.creds` file (user JWT and nkey seed), for servers in operator (JWT) mode
    /// (`COHORT_NATS_CREDS`).
    pub creds: Option<PathBuf>,
    /// A file holding an nkey seed (`SU...`) (`COHORT_NATS_NKEY`).
    pub nkey: Option<PathBuf>,
    /// CA to trust and client certificate to present (`COHORT_NATS_TLS_*`); any of them makes TLS
    /// required.
    pub tls: TlsFiles,
    /// Signs every command, reply and event sent, and refuses those received without its
    /// signature or [`cluster_key_previous`](Self::cluster_key_previous)'s (`COHORT_CLUSTER_KEY`;
    /// see the guide's "Signed messages"). `None`: nothing is signed or checked.
    pub cluster_key: Option<ClusterKey>,
    /// A second key accepted, never used to sign, while the key is rotated
    /// (`COHORT_CLUSTER_KEY_PREVIOUS`).
    pub cluster_key_previous: Option<ClusterKey>,
}

impl NatsOptions {
    /// The options `config` asks for.
    pub fn from_config(config: &Config) -> Self {
        NatsOptions {
            streams: StreamSettings {
                max_age: config.event_retention,
                replicas: config.stream_replicas,
                storage: config.stream_storage,
                duplicate_window: config.duplicate_window,
            },
            creds: config.nats_creds.clone(),
            nkey: config.nats_nkey.clone(),
            tls: config.nats_tls.clone(),
            cluster_key: config.cluster_key.clone(),
            cluster_key_previous: config.cluster_key_previous.clone(),
        }
    }

    /// `options` with the identity and TLS set, and the servers to give them, or an error naming
    /// the setting to fix.
    pub(super) async fn apply(
        &self,
        servers: &[ServerAddr],
        options: ConnectOptions,
    ) -> Result<Prepared, Error> {
        let identity = self.identity(servers)?;
        let options = match &identity {
            Identity::Anonymous => options,
            Identity::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
            Identity::Token(token) => options.token(token.clone()),
            Identity::Nkey(path) => options.nkey(read_nkey_seed(path)?),
            Identity::Creds(path) => options.credentials_file(path).await.map_err(|err| {
                invalid_config(format!(
                    "cannot use the creds file that COHORT_NATS_CREDS names, `{}`: {err}",
                    path.display()
                ))
            })?,
        };
        Ok(Prepared {
            options: self.apply_tls(options)?,
            servers: servers.iter().map(without_credentials).collect(),
            identity,
        })
    }

    fn apply_tls(&self, mut options: ConnectOptions) -> Result<ConnectOptions, Error> {
        if self.tls.is_empty() {
            return Ok(options);
        }
        self.tls.check(NATS_TLS)?;
        // A CA or a certificate means TLS was meant: never fall back to a plain connection.
        options = options.require_tls(true);
        if let Some(ca) = &self.tls.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = self.tls.client_pair(NATS_TLS)? {
            options = options.add_client_certificate(cert.to_owned(), key.to_owned());
        }
        Ok(options)
    }

    /// The one way this instance signs in; two configured at once is a mistake to point out
    /// rather than guess at.
    fn identity(&self, servers: &[ServerAddr]) -> Result<Identity, Error> {
        let mut chosen = Vec::new();
        if let Some(from_url) = url_identity(servers)? {
            chosen.push(from_url);
        }
        if let Some(creds) = &self.creds {
            chosen.push(Identity::Creds(creds.clone()));
        }
        if let Some(nkey) = &self.nkey {
            chosen.push(Identity::Nkey(nkey.clone()));
        }
        if chosen.len() > 1 {
            let settings: Vec<&str> = chosen.iter().map(Identity::setting).collect();
            return Err(invalid_config(format!(
                "{} are all set, but a connection to NATS signs in one way only: keep one",
                settings.join(" and ")
            )));
        }
        Ok(chosen.pop().unwrap_or(Identity::Anonymous))
    }
}

/// A connection ready to be opened.
pub(super) struct Prepared {
    pub(super) options: ConnectOptions,
    /// The servers without the credentials of their URLs, which the options carry: the client
    /// logs the servers it fails to reach, URLs and all.
    pub(super) servers: Vec<ServerAddr>,
    pub(super) identity: Identity,
}

/// How this instance signs in to NATS.
pub(super) enum Identity {
    Anonymous,
    UserPassword { user: String, password: String },
    Token(String),
    Creds(PathBuf),
    Nkey(PathBuf),
}

impl Identity {
    fn setting(&self) -> &'static str {
        match self {
            Identity::Anonymous => "nothing",
            Identity::UserPassword { .. } | Identity::Token(_) => "credentials in COHORT_NATS_URL",
            Identity::Creds(_) => "COHORT_NATS_CREDS",
            Identity::Nkey(_) => "COHORT_NATS_NKEY",
        }
    }

    /// What to check when the server refused this identity.
    fn what_to_check(&self) -> Cow<'static, str> {
        match self {
            Identity::Anonymous => "the server requires authentication: put a user and password \
                 (nats://user:password@host:4222) or a token (nats://token@host:4222) in \
                 COHORT_NATS_URL, or set COHORT_NATS_CREDS or COHORT_NATS_NKEY"
                .into(),
            Identity::UserPassword { .. } => {
                "check the user and password in COHORT_NATS_URL (or use COHORT_NATS_CREDS / \
                 COHORT_NATS_NKEY if the server expects those)"
                    .into()
            }
            Identity::Token(_) => "check the token in COHORT_NATS_URL (or use COHORT_NATS_CREDS \
                 / COHORT_NATS_NKEY if the server expects those)"
                .into(),
            Identity::Creds(path) => format!(
                "check the creds file that COHORT_NATS_CREDS names, `{}`: its user must belong \
                 to an account the server trusts",
                path.display()
            )
            .into(),
            Identity::Nkey(path) => format!(
                "check the seed in the file that COHORT_NATS_NKEY names, `{}`: its public key \
                 must be one of the server's nkey users",
                path.display()
            )
            .into(),
        }
    }
}

/// The user and password, or the token, written into the URLs. The client signs in to every
/// server with the same identity, so URLs that disagree are refused.
fn url_identity(servers: &[ServerAddr]) -> Result<Option<Identity>, Error> {
    let mut found: Option<(Option<&str>, Option<&str>)> = None;
    for server in servers.iter().filter(|s| s.has_user_pass()) {
        let credentials = (server.username(), server.password());
        match found {
            Some(earlier) if earlier != credentials => {
                return Err(invalid_config(
                    "the servers in COHORT_NATS_URL carry different credentials; an instance \
                     signs in to all of them with the same ones",
                ));
            }
            _ => found = Some(credentials),
        }
    }
    Ok(match found {
        None => None,
        Some((user, None)) => Some(Identity::Token(decode(user.unwrap_or_default()))),
        Some((user, Some(password))) => Some(Identity::UserPassword {
            user: decode(user.unwrap_or_default()),
            password: decode(password),
        }),
    })
}

fn without_credentials(server: &ServerAddr) -> ServerAddr {
    let mut url = server.clone().into_inner();
    // Neither can fail on a nats:// or tls:// URL, which has a host.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    ServerAddr::from_url(url).unwrap_or_else(|_| server.clone())
}

/// URLs carry credentials percent-encoded (a password with `@` or `/` must be); NATS wants them
/// as they are.
fn decode(part: &str) -> String {
    percent_decode_str(part).decode_utf8_lossy().into_owned()
}

fn read_nkey_seed(path: &std::path::Path) -> Result<String, Error> {
    let bytes = read_file_setting("COHORT_NATS_NKEY", path)?;
    let seed = String::from_utf8_lossy(&bytes).trim().to_owned();
    if seed.starts_with("SU") {
        Ok(seed)
    } else {
        Err(invalid_config(format!(
            "the file that COHORT_NATS_NKEY names, `{}`, does not hold a user nkey seed: expected \
             one line starting with `SU` (made by `nk -gen user`)",
            path.display()
        )))
    }
}

/// What a failed first connection tells the operator to fix.
pub(super) fn explain_connect_error(
    err: &ConnectError,
    shown: &str,
    identity: &Identity,
    tls: &TlsFiles,
) -> Error {
    let text = err.to_string();
    let message = match err.kind() {
        ConnectErrorKind::AuthorizationViolation => format!(
            "NATS at `{shown}` refused the credentials (authorization violation); {}",
            identity.what_to_check()
        ),
        ConnectErrorKind::Authentication => format!(
            "cannot sign in to NATS at `{shown}`: {err}; {}",
            identity.what_to_check()
        ),
        ConnectErrorKind::Tls | ConnectErrorKind::Io if is_tls_failure(&text) => format!(
            "TLS with NATS at `{shown}` failed: {err}; {}",
            tls_advice(&text, tls, NATS_TLS)
        ),
        _ => format!(
            "cannot connect to NATS at `{shown}` (COHORT_NATS_URL): {err}; is nats-server running \
             there, with JetStream (-js)?"
        ),
    };
    Error::unavailable(message)
}

/// Checks the URLs before anything is sent, with credentials masked in the message.
pub(super) fn parse_servers(urls: &str) -> Result<Vec<ServerAddr>, Error> {
    let servers = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse::<ServerAddr>().map_err(|err| {
                Error::unavailable(format!(
                    "`{}` is not a NATS server address ({err}); check COHORT_NATS_URL",
                    mask_urls(url)
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err(Error::unavailable(
            "no NATS server address given; set COHORT_NATS_URL, such as nats://127.0.0.1:4222",
        ));
    }
    Ok(servers)
}

fn invalid_config(message: impl Into<String>) -> Error {
    Error::bad_request(message).with_code("invalid_config")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(urls: &str) -> Vec<ServerAddr> {
        parse_servers(urls).expect("valid URLs")
    }

    #[test]
    fn a_user_and_password_in_the_url_are_the_identity() {
        let identity = NatsOptions::default()
            .identity(&servers("nats://app:p%40ss@h1:4222,nats://h2:4222"))
            .expect("one identity");
        let Identity::UserPassword { user, password } = identity else {
            panic!("expected a user and password");
        };
        assert_eq!((user.as_str(), password.as_str()), ("app", "p@ss"));
    }

    #[test]
    fn the_client_gets_the_servers_without_their_credentials() {
        let stripped = without_credentials(&servers("tls://app:s3cret@h1:4222")[0]);
        assert_eq!(stripped.as_url_str(), "tls://h1:4222");
        assert!(!format!("{stripped:?}").contains("s3cret"));
    }

    #[test]
    fn a_user_alone_in_the_url_is_a_token() {
        let identity = NatsOptions::default()
            .identity(&servers("nats://s3cret@h:4222"))
            .expect("one identity");
        assert!(matches!(identity, Identity::Token(token) if token == "s3cret"));
    }

    #[test]
    fn two_identities_are_refused_naming_both_settings() {
        let options = NatsOptions {
            nkey: Some("/app.nk".into()),
            ..NatsOptions::default()
        };
        let Err(err) = options.identity(&servers("nats://u:hunter2@h:4222")) else {
            panic!("two identities must be refused");
        };
        let message = err.message();
        assert!(message.contains("COHORT_NATS_URL"), "{message}");
        assert!(message.contains("COHORT_NATS_NKEY"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn servers_with_different_credentials_are_refused() {
        let Err(err) =
            NatsOptions::default().identity(&servers("nats://a:x@h1:4222,nats://b:y@h2:4222"))
        else {
            panic!("different credentials must be refused");
        };
        assert!(err.message().contains("COHORT_NATS_URL"), "{err}");
    }
}
