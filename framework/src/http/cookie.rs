//! The session cookie: the session id a browser holds, read from requests and set or cleared as
//! the command's reply says.

use axum::http::{HeaderMap, HeaderValue, header};

use crate::config::Config;
use crate::message::Metadata;
use crate::session;

/// The cookie that carries the session id.
pub const SESSION_COOKIE: &str = "cohort_session";

/// The session id of the request's cookie; an id Cohort cannot have issued is ignored.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .filter_map(|cookie| {
            cookie
                .trim()
                .strip_prefix(SESSION_COOKIE)?
                .strip_prefix('=')
        })
        .find(|id| session::is_valid_id(id))
        .map(str::to_owned)
}

/// Sets or clears the cookie as the command's reply asks.
pub(super) fn set_session_cookie(config: &Config, reply: &Metadata, headers: &mut HeaderMap) {
    let secure = if config.session_cookie_secure {
        "; Secure"
    } else {
        ""
    };
    let cookie = match (&reply.session_set, reply.session_clear) {
        (Some(id), _) if session::is_valid_id(id) => format!(
            "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
            config.session_ttl.as_secs()
        ),
        (_, true) => {
            format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}")
        }
        _ => return,
    };
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        headers.append(header::SET_COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_cookie_ignores_forged_ids() {
        let valid = "a".repeat(64);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("other=1; cohort_session=../etc"),
        );
        assert_eq!(session_cookie(&headers), None);
        headers.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("cohort_session={valid}")).expect("ascii"),
        );
        assert_eq!(session_cookie(&headers), Some(valid));
    }

    fn set_cookie(config: &Config) -> String {
        let reply = Metadata {
            session_set: Some("b".repeat(64)),
            ..Metadata::default()
        };
        let mut headers = HeaderMap::new();
        set_session_cookie(config, &reply, &mut headers);
        let cookie = headers.get(header::SET_COOKIE).expect("a cookie is set");
        cookie.to_str().expect("ascii").to_owned()
    }

    #[test]
    fn the_cookie_is_secure_unless_opted_out() {
        let mut config = Config::default();
        let cookie = set_cookie(&config);
        assert!(cookie.ends_with("; Secure"), "{cookie}");
        assert!(cookie.contains("HttpOnly; SameSite=Lax"), "{cookie}");
        config.session_cookie_secure = false;
        let cookie = set_cookie(&config);
        assert!(!cookie.contains("Secure"), "{cookie}");
    }
}
