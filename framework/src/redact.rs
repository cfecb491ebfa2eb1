//! Keeping secrets out of messages and logs.

/// Server URLs (one, or a comma-separated list) with their credentials masked, for messages and
/// logs: `nats://user:secret@host` → `nats://user:***@host`; a user or token alone
/// (`nats://token@host`) → `nats://***@host`; the same without a scheme (`user:secret@host`,
/// which NATS accepts).
pub(crate) fn mask_urls(urls: &str) -> String {
    urls.split(',').map(mask_url).collect::<Vec<_>>().join(",")
}

fn mask_url(url: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let (scheme, rest) = url.split_at(scheme_end);
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let (credentials, host) = rest.split_at(at);
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}{user}:***{host}"),
        None => format!("{scheme}***{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_masked() {
        assert_eq!(
            mask_urls("nats://a:secret@h1:4222,nats://h2:4222"),
            "nats://a:***@h1:4222,nats://h2:4222"
        );
        assert_eq!(mask_urls("nats://token@h"), "nats://***@h");
        assert_eq!(mask_urls("127.0.0.1:4222"), "127.0.0.1:4222");
        assert_eq!(mask_urls("a:secret@h:4222"), "a:***@h:4222");
        assert_eq!(mask_urls(" token@h:4222"), "***@h:4222");
        assert_eq!(
            mask_urls("redis://user:secret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(mask_urls("redis://:secret@host"), "redis://:***@host");
        assert_eq!(
            mask_urls("redis://host:6379/a@b"),
            "redis://host:6379/a@b",
            "an @ after the host is not a credential"
        );
    }
}
