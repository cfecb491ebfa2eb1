//! The naming rules of Cohort, on plain strings: what makes a service, command, event or route
//! parameter name, a timeout or an HTTP method, and the names suggested instead of a wrong one.
//! Each rule returns the message that says what to write; `valid` puts it on the user's tokens.

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// The upper-case method `written` names.
pub fn method(written: &str) -> Result<&'static str, String> {
    if let Some(method) = METHODS.into_iter().find(|m| *m == written) {
        return Ok(method);
    }
    if let Some(method) = METHODS
        .into_iter()
        .find(|m| m.eq_ignore_ascii_case(written))
    {
        return Err(format!("write the method in upper case: `{method}`"));
    }
    Err(format!(
        "unknown method `{written}`; expected one of: `GET`, `POST`, `PUT`, `PATCH`, `DELETE`"
    ))
}

/// The `{param}` names of a route path, checked: the path starts with `/`, a parameter takes a
/// whole segment and is an identifier (it fills the input field of that name), `{*rest}` comes last.
pub fn route_params(path: &str) -> Result<Vec<String>, String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("an HTTP path starts with `/`: write `\"/{path}\"`"));
    };
    if let Some(c) = path
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '?' | '#'))
    {
        return Err(format!(
            "`{c}` cannot appear in a route path: write the path alone, such as `\"/orders/{{id}}\"`"
        ));
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let mut params: Vec<String> = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if segment.is_empty() && !last {
            return Err("empty segment `//` in the path: remove the extra `/`".to_owned());
        }
        let Some(inner) = segment.strip_prefix('{') else {
            if segment.contains(['{', '}']) {
                return Err(format!(
                    "a parameter takes a whole segment: write `/{{name}}` instead of `/{segment}`"
                ));
            }
            continue;
        };
        let Some(inner) = inner.strip_suffix('}') else {
            return Err(format!(
                "a parameter takes a whole segment: write `/{{name}}` instead of `/{segment}`"
            ));
        };
        let (wildcard, param) = match inner.strip_prefix('*') {
            Some(param) => (true, param),
            None => (false, inner),
        };
        if !is_identifier(param) {
            return Err(format!(
                "`{{{inner}}}` does not name a parameter: write the input field it fills, such as `{{id}}`"
            ));
        }
        if wildcard && !last {
            return Err(format!(
                "`{{*{param}}}` takes the rest of the path: make it the last segment"
            ));
        }
        if params.iter().any(|p| p == param) {
            return Err(format!(
                "the parameter `{param}` appears twice: name each segment differently"
            ));
        }
        params.push(param.to_owned());
    }
    Ok(params)
}

/// Milliseconds of a timeout written `250ms`, `5s` or `2m`.
pub fn parse_timeout(text: &str) -> Result<u64, String> {
    let invalid = || {
        format!(
            "invalid timeout `{text}`: write a whole number followed by `ms`, `s` or `m`, such as `timeout = \"5s\"`"
        )
    };
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        _ => return Err(invalid()),
    };
    if number.is_empty() {
        return Err(invalid());
    }
    let too_long = || {
        format!(
            "timeout `{text}` is too long: write at most a few minutes, such as `timeout = \"2m\"`"
        )
    };
    let ms = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(too_long)?;
    if ms == 0 {
        return Err(format!(
            "a timeout of `{text}` would fail every call: write a duration such as `timeout = \"5s\"`"
        ));
    }
    Ok(ms)
}

/// Milliseconds of a task's period written `30s`, `5m` or `1h 30m`: at least a second.
pub fn parse_every(text: &str) -> Result<u64, String> {
    let period = humantime::parse_duration(text).map_err(|e| {
        format!("invalid period `{text}`: {e}; write a duration such as `every = \"30s\"` or `every = \"1h\"`")
    })?;
    let ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
    if ms < 1_000 || ms % 1_000 != 0 {
        return Err(format!(
            "a task's period is whole seconds, at least one: write `every = \"1s\"` or more instead of `{text}`"
        ));
    }
    Ok(ms)
}

/// Where an every-instance subscription starts, as `start = "..."` wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// No `start`: where the instance's consumer left off.
    #[default]
    Resume,
    New,
    Last(u64),
    /// Published within this many milliseconds before the start.
    Since(u64),
}

/// `new`, `last:100` or `since:10m`.
pub fn parse_start(text: &str) -> Result<Start, String> {
    const WRITE: &str =
        "write `start = \"new\"`, `start = \"last:100\"` or `start = \"since:10m\"`";
    if text == "new" {
        return Ok(Start::New);
    }
    if let Some(count) = text.strip_prefix("last:") {
        return match count.parse::<u64>() {
            Ok(0) => Err(format!(
                "`{text}` replays nothing: write `start = \"new\"`, or a count from 1 such as `start = \"last:100\"`"
            )),
            Ok(n) => Ok(Start::Last(n)),
            Err(_) => Err(format!(
                "invalid count `{count}` in `{text}`: write a whole number from 1, such as `start = \"last:100\"`"
            )),
        };
    }
    if let Some(window) = text.strip_prefix("since:") {
        let duration = humantime::parse_duration(window).map_err(|e| {
            format!("invalid duration `{window}` in `{text}`: {e}; write a duration such as `start = \"since:10m\"`")
        })?;
        return match u64::try_from(duration.as_millis()) {
            Ok(0) => Err(format!(
                "`{text}` replays nothing: write `start = \"new\"`, or a duration of at least `1ms` such as `start = \"since:10m\"`"
            )),
            Ok(ms) => Ok(Start::Since(ms)),
            Err(_) => Err(format!("`{text}` is too long: {WRITE}")),
        };
    }
    Err(format!("invalid start `{text}`: {WRITE}"))
}

/// Checks a five-field cron expression (minute hour day-of-month month day-of-week).
pub fn parse_cron(text: &str) -> Result<(), String> {
    use croner::parser::{CronParser, Seconds, Year};
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map(drop)
        .map_err(|e| {
            format!("invalid cron expression `{text}`: {e}; write five fields, minute hour day-of-month month day-of-week, such as `cron = \"0 3 * * *\"`")
        })
}

/// `OrderPlaced` → `order_placed`, `HTTPRequest` → `http_request`, `OrderV2` → `order_v2`.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut snake = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_uppercase() {
            snake.push(c);
            continue;
        }
        let prev = i.checked_sub(1).and_then(|i| chars.get(i));
        let next = chars.get(i + 1);
        let starts_word = match prev {
            Some(p) if p.is_lowercase() || p.is_ascii_digit() => true,
            // The last capital of an acronym starts the next word: HTTPRequest.
            Some(p) if p.is_uppercase() => next.is_some_and(|n| n.is_lowercase()),
            _ => false,
        };
        if starts_word && !snake.ends_with('_') {
            snake.push('_');
        }
        snake.extend(c.to_lowercase());
    }
    snake
}

/// Event names are NATS subject tokens: `[a-z0-9_]+`.
pub fn event_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
    {
        return Ok(());
    }
    Err(format!(
        "invalid event name `{name}`: event names are NATS subject tokens of lower-case letters, digits and `_`; write `name = \"{}\"`",
        suggest(name, |_| false, "order_placed")
    ))
}

/// Service names are subject tokens too, and queue and stream names: `[a-z0-9_-]+`.
pub fn service_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
    {
        return Ok(());
    }
    Err(format!(
        "invalid service name `{name}`: use lower-case letters, digits, `_` and `-`; write `service = \"{}\"`",
        suggest(name, |c| c == '-', "orders")
    ))
}

/// Command and subscription names are subject tokens: `[A-Za-z0-9_-]+`.
pub fn subject_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    {
        return Ok(());
    }
    Err(format!(
        "invalid name `{name}`: use letters, digits, `_` and `-`; write `name = \"{}\"`",
        suggest(name, |c| c == '-', "place_order")
    ))
}

/// `name` made lower-case snake_case of ASCII words, or `fallback` when nothing of it is left.
fn suggest(name: &str, keep: impl Fn(char) -> bool, fallback: &str) -> String {
    let words: Vec<String> = name
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || keep(c)))
        .filter(|word| !word.is_empty())
        .map(snake_case)
        .collect();
    let suggestion = words.join("_");
    if suggestion.is_empty() {
        fallback.to_owned()
    } else {
        suggestion
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok && name != "_" && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_splits_words_and_acronyms() {
        for (name, snake) in [
            ("OrderPlaced", "order_placed"),
            ("HTTPRequest", "http_request"),
            ("IOError", "io_error"),
            ("OrderV2Placed", "order_v2_placed"),
            ("Ipv4Addr", "ipv4_addr"),
            ("Order_Placed", "order_placed"),
            ("ABC", "abc"),
            ("already_snake", "already_snake"),
            ("X", "x"),
        ] {
            assert_eq!(snake_case(name), snake, "{name}");
        }
    }

    #[test]
    fn starts_are_new_last_or_since() {
        assert_eq!(parse_start("new"), Ok(Start::New));
        assert_eq!(parse_start("last:100"), Ok(Start::Last(100)));
        assert_eq!(parse_start("since:10m"), Ok(Start::Since(600_000)));
        assert_eq!(parse_start("since:1h 30m"), Ok(Start::Since(5_400_000)));
        for bad in [
            "",
            "all",
            "New",
            "last",
            "last:",
            "last:-1",
            "last:x",
            "since:",
            "since:soon",
        ] {
            let err = parse_start(bad).expect_err(bad);
            assert!(
                err.contains("`start = \"last:100\"`") || err.contains("`start = \"since:10m\"`"),
                "{err}"
            );
        }
        assert!(parse_start("last:0").is_err_and(|e| e.starts_with("`last:0` replays nothing")));
        assert!(
            parse_start("since:0s").is_err_and(|e| e.starts_with("`since:0s` replays nothing"))
        );
    }

    #[test]
    fn timeouts_are_whole_numbers_with_a_unit() {
        assert_eq!(parse_timeout("250ms"), Ok(250));
        assert_eq!(parse_timeout("5s"), Ok(5_000));
        assert_eq!(parse_timeout("2m"), Ok(120_000));
        for bad in ["", "5", "s", "5 s", "1.5s", "-1s", "5h", "5sec", "ms"] {
            let err = parse_timeout(bad).expect_err(bad);
            assert!(err.contains("`timeout = \"5s\"`"), "{err}");
        }
        assert!(
            parse_timeout("0s")
                .expect_err("zero")
                .contains("would fail every call")
        );
        assert!(
            parse_timeout("99999999999999999999m")
                .expect_err("huge")
                .contains("too long")
        );
    }

    #[test]
    fn route_params_are_whole_segment_identifiers() {
        assert_eq!(route_params("/"), Ok(vec![]));
        assert_eq!(route_params("/orders/"), Ok(vec![]));
        assert_eq!(
            route_params("/orders/{id}/items/{item_id}"),
            Ok(vec!["id".to_owned(), "item_id".to_owned()])
        );
        assert_eq!(route_params("/files/{*path}"), Ok(vec!["path".to_owned()]));
        for (bad, says) in [
            ("orders", "starts with `/`"),
            ("/orders/{}", "does not name a parameter"),
            ("/orders/{1d}", "does not name a parameter"),
            ("/orders/{order-id}", "does not name a parameter"),
            ("/orders/{id", "whole segment"),
            ("/orders/id}", "whole segment"),
            ("/orders/{id}.json", "whole segment"),
            ("/files/{*path}/x", "last segment"),
            ("/a/{id}/b/{id}", "appears twice"),
            ("/a//b", "empty segment"),
            ("/a?b=1", "cannot appear"),
        ] {
            let err = route_params(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn methods_are_upper_case() {
        assert_eq!(method("PATCH"), Ok("PATCH"));
        assert_eq!(
            method("post"),
            Err("write the method in upper case: `POST`".to_owned())
        );
        assert!(
            method("FETCH")
                .expect_err("unknown")
                .starts_with("unknown method `FETCH`")
        );
    }

    #[test]
    fn names_are_subject_tokens_and_errors_suggest_one() {
        assert!(event_name("order_placed_2").is_ok());
        assert!(event_name("").is_err());
        let err = event_name("Order.Placed").expect_err("dot and capitals");
        assert!(err.ends_with("write `name = \"order_placed\"`"), "{err}");
        assert!(service_name("order-service_2").is_ok());
        let err = service_name("Order Service").expect_err("space and capitals");
        assert!(
            err.ends_with("write `service = \"order_service\"`"),
            "{err}"
        );
        let err = service_name("").expect_err("empty");
        assert!(err.ends_with("write `service = \"orders\"`"), "{err}");
        assert!(subject_name("placeOrder-v2").is_ok());
        assert!(subject_name("place.order").is_err());
    }
}
