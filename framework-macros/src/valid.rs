//! The rules of the attributes and signatures. Each check turns what the user wrote into the value
//! the expansion needs, or into an error on the tokens at fault that says what to write instead.
//! Every problem is reported, not just the first.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};
use syn::ext::IdentExt;
use syn::{FnArg, Ident, LitBool, LitInt, LitStr, Type};

use crate::ast::{Command, Event, Handler, Kind, Subscription, both};
use crate::attr::HttpArgs;

/// A command's options, checked.
#[derive(Default)]
pub struct CommandSpec {
    pub service: String,
    pub version: u32,
    pub name: String,
    pub description: String,
    pub timeout_ms: Option<u64>,
    pub http: Option<Route>,
}

/// An `#[http]` route, checked.
#[derive(Default)]
pub struct Route {
    pub method: &'static str,
    pub path: String,
    pub status: u16,
}

/// A subscription's options, checked.
pub struct SubscriptionSpec<'a> {
    pub service: String,
    pub name: String,
    pub every_instance: bool,
    pub event: &'a Type,
}

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
const STATUSES: [u16; 4] = [200, 201, 202, 204];

impl Command<'_> {
    pub fn validate(&self) -> syn::Result<CommandSpec> {
        let mut problems = Problems::default();
        problems.take(self.handler.validate());
        let args = &self.args;
        let spec = CommandSpec {
            service: problems.take(service(args.service.as_ref(), &args.written, Kind::Command)),
            version: args
                .version
                .as_ref()
                .map_or(1, |lit| problems.take(version(lit))),
            name: problems.take(name(args.name.as_ref(), &self.handler, Kind::Command)),
            description: args
                .description
                .as_ref()
                .map_or_else(|| self.handler.doc(), LitStr::value),
            timeout_ms: args.timeout.as_ref().map(|lit| problems.take(timeout(lit))),
            http: self.http.as_ref().map(|http| problems.take(route(http))),
        };
        problems.finish(spec)
    }
}

impl<'a> Subscription<'a> {
    pub fn validate(&self) -> syn::Result<SubscriptionSpec<'a>> {
        let mut problems = Problems::default();
        problems.take(self.handler.validate());
        let args = &self.args;
        let kind = Kind::Subscription;
        let service = problems.take(service(args.service.as_ref(), &args.written, kind));
        let name = problems.take(name(args.name.as_ref(), &self.handler, kind));
        let sig = &self.handler.func.sig;
        let event = self.handler.input.ok_or_else(|| {
            let ident = &sig.ident;
            syn::Error::new(
                sig.paren_token.span.join(),
                format!(
                    "a subscription takes the event after the context: write `async fn {ident}(ctx: Ctx, event: MyEvent)`"
                ),
            )
        });
        let (event, ()) = both(event, problems.finish(()))?;
        Ok(SubscriptionSpec {
            service,
            name,
            every_instance: args.every_instance.as_ref().is_some_and(LitBool::value),
            event,
        })
    }
}

impl Handler<'_> {
    pub fn validate(&self) -> syn::Result<()> {
        let mut problems = Problems::default();
        let sig = &self.func.sig;
        let ident = &sig.ident;
        let plural = self.kind.plural();
        if sig.asyncness.is_none() {
            let fn_token = &sig.fn_token;
            problems.push(syn::Error::new_spanned(
                quote!(#fn_token #ident),
                format!("{plural} are async: write `async fn {ident}(...)`"),
            ));
        }
        if let Some(unsafety) = &sig.unsafety {
            problems.push(syn::Error::new_spanned(
                unsafety,
                format!("{plural} cannot be `unsafe`: remove `unsafe`"),
            ));
        }
        if !sig.generics.params.is_empty() {
            problems.push(syn::Error::new_spanned(
                &sig.generics,
                format!(
                    "{plural} cannot be generic: remove `{}` and name concrete types",
                    written(&sig.generics)
                ),
            ));
        } else if let Some(where_clause) = &sig.generics.where_clause {
            problems.push(syn::Error::new_spanned(
                where_clause,
                format!("{plural} cannot be generic: remove the `where` clause"),
            ));
        }
        if !is_ctx(self.ctx) {
            let example = match (self.kind, self.input) {
                (Kind::Command, None) => {
                    format!("async fn {ident}(ctx: Ctx, input: {})", written(self.ctx))
                }
                (Kind::Subscription, None) => {
                    format!("async fn {ident}(ctx: Ctx, event: {})", written(self.ctx))
                }
                (_, Some(_)) => "ctx: Ctx".to_owned(),
            };
            problems.push(syn::Error::new_spanned(
                self.ctx,
                format!("the first argument is the context: write `{example}`"),
            ));
        }
        let input_role = match self.kind {
            Kind::Command => "input",
            Kind::Subscription => "event",
        };
        for (ty, role) in [(self.input, input_role), (Some(self.ok), "output")] {
            match ty {
                Some(ty @ Type::ImplTrait(_)) => problems.push(syn::Error::new_spanned(
                    ty,
                    format!("{plural} cannot be generic: name the {role} type instead of `impl ...`"),
                )),
                Some(Type::Reference(reference)) => problems.push(syn::Error::new_spanned(
                    reference,
                    format!(
                        "the {role} crosses the network as an owned value: write `{}` instead of `{}`",
                        owned(&reference.elem),
                        written(reference)
                    ),
                )),
                _ => {}
            }
        }
        let extra = &self.extra;
        match self.kind {
            Kind::Command if !extra.is_empty() => problems.push(syn::Error::new_spanned(
                quote!(#(#extra),*),
                format!(
                    "too many arguments: a command takes `ctx: Ctx` and at most one input; move {} into the input type",
                    argument_names(extra)
                ),
            )),
            Kind::Command => {}
            Kind::Subscription => {
                if !extra.is_empty() {
                    problems.push(syn::Error::new_spanned(
                        quote!(#(#extra),*),
                        "too many arguments: a subscription takes `ctx: Ctx` and the event",
                    ));
                }
                if !is_unit(self.ok) {
                    problems.push(syn::Error::new_spanned(
                        self.ok,
                        format!(
                            "subscriptions return no value: write `()` instead of `{}`",
                            written(self.ok)
                        ),
                    ));
                }
            }
        }
        problems.finish(())
    }
}

impl Event<'_> {
    /// The event's name.
    pub fn validate(&self) -> syn::Result<String> {
        let mut problems = Problems::default();
        let generics = &self.input.generics;
        if !generics.params.is_empty() {
            problems.push(syn::Error::new_spanned(
                generics,
                format!(
                    "events are concrete types: remove `{}` and declare one type per event",
                    written(generics)
                ),
            ));
        }
        let name = match &self.args.name {
            Some(lit) => event_name(&lit.value())
                .map(|()| lit.value())
                .map_err(|message| syn::Error::new_spanned(lit, message)),
            None => {
                let ident = &self.input.ident;
                let name = snake_case(&ident.unraw().to_string());
                event_name(&name).map(|()| name).map_err(|_| {
                    syn::Error::new_spanned(
                        ident,
                        "this type's name does not make an event name: set one with `#[event(name = \"...\")]`",
                    )
                })
            }
        };
        let name = problems.take(name);
        problems.finish(name)
    }
}

fn service(lit: Option<&LitStr>, attr: &TokenStream, kind: Kind) -> syn::Result<String> {
    let Some(lit) = lit else {
        return Err(syn::Error::new_spanned(
            attr,
            format!(
                "missing `service`: write `#[{}(service = \"...\")]`",
                kind.attribute()
            ),
        ));
    };
    let text = lit.value();
    service_name(&text)
        .map(|()| text)
        .map_err(|message| syn::Error::new_spanned(lit, message))
}

fn name(lit: Option<&LitStr>, handler: &Handler, kind: Kind) -> syn::Result<String> {
    match lit {
        Some(lit) => {
            let text = lit.value();
            subject_name(&text)
                .map(|()| text)
                .map_err(|message| syn::Error::new_spanned(lit, message))
        }
        None => {
            let ident: &Ident = &handler.func.sig.ident;
            let text = ident.unraw().to_string();
            subject_name(&text).map(|()| text).map_err(|_| {
                syn::Error::new_spanned(
                    ident,
                    format!(
                        "`{ident}` does not make a {} name: set one with `name = \"...\"`",
                        kind.attribute()
                    ),
                )
            })
        }
    }
}

fn version(lit: &LitInt) -> syn::Result<u32> {
    match lit.base10_parse::<u32>() {
        Ok(0) => Err(syn::Error::new_spanned(
            lit,
            "versions start at 1: write `version = 1`",
        )),
        Ok(version) => Ok(version),
        Err(_) => Err(syn::Error::new_spanned(
            lit,
            "a version is a whole number from 1: write `version = 2`",
        )),
    }
}

fn timeout(lit: &LitStr) -> syn::Result<u64> {
    parse_timeout(&lit.value()).map_err(|message| syn::Error::new_spanned(lit, message))
}

fn route(http: &HttpArgs) -> syn::Result<Route> {
    let mut problems = Problems::default();
    let method = problems.take(
        method(&http.method.to_string())
            .map_err(|message| syn::Error::new_spanned(&http.method, message)),
    );
    let path = http.path.value();
    problems
        .take(route_params(&path).map_err(|message| syn::Error::new_spanned(&http.path, message)));
    let status = http
        .status
        .as_ref()
        .map_or(200, |lit| problems.take(status(lit)));
    problems.finish(Route {
        method,
        path,
        status,
    })
}

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

fn status(lit: &LitInt) -> syn::Result<u16> {
    lit.base10_parse::<u16>()
        .ok()
        .filter(|status| STATUSES.contains(status))
        .ok_or_else(|| {
            syn::Error::new_spanned(
                lit,
                format!(
                    "unsupported status `{lit}`; expected one of: `200`, `201`, `202`, `204` (errors carry their own status)"
                ),
            )
        })
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

/// `Ctx`, `cohort::Ctx`: the context, by the last segment of a path.
fn is_ctx(ty: &Type) -> bool {
    match ty {
        Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .is_some_and(|last| last.ident == "Ctx" && last.arguments.is_none()),
        Type::Paren(inner) => is_ctx(&inner.elem),
        _ => false,
    }
}

fn is_unit(ty: &Type) -> bool {
    match ty {
        Type::Tuple(tuple) => tuple.elems.is_empty(),
        Type::Paren(inner) => is_unit(&inner.elem),
        _ => false,
    }
}

/// What to write instead of a reference to `ty`: `String` for `&str`, `Vec<T>` for `&[T]`.
fn owned(ty: &Type) -> String {
    match ty {
        Type::Path(path) if path.path.is_ident("str") => "String".to_owned(),
        Type::Slice(slice) => format!("Vec<{}>", written(&slice.elem)),
        other => written(other),
    }
}

fn argument_names(args: &[&FnArg]) -> String {
    let names: Vec<String> = args
        .iter()
        .map(|arg| match arg {
            FnArg::Typed(arg) => format!("`{}`", written(&arg.pat)),
            FnArg::Receiver(_) => "`self`".to_owned(),
        })
        .collect();
    names.join(", ")
}

/// Tokens as a user would write them, for messages: `Vec<u8>` rather than `Vec < u8 >`.
fn written(tokens: &impl ToTokens) -> String {
    let spaced = tokens.to_token_stream().to_string();
    [
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" ::", "::"),
        (":: ", "::"),
        (" : ", ": "),
        (" ,", ","),
        ("& ", "&"),
    ]
    .iter()
    .fold(spaced, |text, (from, to)| text.replace(from, to))
}

/// Every error found, reported together.
#[derive(Default)]
struct Problems(Option<syn::Error>);

impl Problems {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// The checked value; on error, a default that is never used, as `finish` then fails.
    fn take<T: Default>(&mut self, checked: syn::Result<T>) -> T {
        checked.unwrap_or_else(|error| {
            self.push(error);
            T::default()
        })
    }

    fn finish<T>(self, value: T) -> syn::Result<T> {
        match self.0 {
            Some(error) => Err(error),
            None => Ok(value),
        }
    }
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

    #[test]
    fn borrowed_types_have_an_owned_counterpart() {
        let owned_of = |ty: Type| match ty {
            Type::Reference(reference) => owned(&reference.elem),
            other => panic!("not a reference: {}", written(&other)),
        };
        assert_eq!(owned_of(syn::parse_quote!(&str)), "String");
        assert_eq!(owned_of(syn::parse_quote!(&'static [u8])), "Vec<u8>");
        assert_eq!(owned_of(syn::parse_quote!(&Order)), "Order");
    }

    #[test]
    fn written_types_read_like_source() {
        let ty: Type = syn::parse_quote!(std::collections::HashMap<String, Vec<u8>>);
        assert_eq!(written(&ty), "std::collections::HashMap<String, Vec<u8>>");
        let ty: Type = syn::parse_quote!(&'static str);
        assert_eq!(written(&ty), "&'static str");
        let generics: syn::Generics = syn::parse_quote!(<T: serde::Serialize>);
        assert_eq!(written(&generics), "<T: serde::Serialize>");
    }
}
