//! The arguments of the attributes, as written. Every value keeps its literal, so that an error
//! about it underlines what the user typed; checking the values is `valid`'s job.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::parse::{ParseStream, Parser};
use syn::{Attribute, Expr, ExprLit, Ident, Lit, LitBool, LitInt, LitStr, Meta, Path, Token};

/// `#[command(service = "...", version = 1, name = "...", timeout = "5s", description = "...",
/// idempotent, guard = path::to::guard)]`.
pub struct CommandArgs {
    /// The attribute, for errors about an option it lacks. Empty for the attribute being expanded:
    /// an empty span is the call site, which is that attribute.
    pub written: TokenStream,
    pub service: Option<LitStr>,
    pub version: Option<LitInt>,
    pub name: Option<LitStr>,
    pub timeout: Option<LitStr>,
    pub description: Option<LitStr>,
    pub idempotent: Option<LitBool>,
    /// The guard function, as written.
    pub guard: Option<Path>,
}

/// `#[http(POST, "/orders/{id}", status = 201)]`.
pub struct HttpArgs {
    pub method: Ident,
    pub path: LitStr,
    pub status: Option<LitInt>,
}

/// `#[subscription(service = "...", name = "...", every_instance, start = "last:100")]`.
pub struct SubscriptionArgs {
    /// As [`CommandArgs::written`].
    pub written: TokenStream,
    pub service: Option<LitStr>,
    pub name: Option<LitStr>,
    pub every_instance: Option<LitBool>,
    pub start: Option<LitStr>,
}

/// `#[task(service = "...", every = "30s" | cron = "0 3 * * *" | on_start, name = "...")]`.
pub struct TaskArgs {
    /// As [`CommandArgs::written`].
    pub written: TokenStream,
    pub service: Option<LitStr>,
    pub name: Option<LitStr>,
    pub every: Option<LitStr>,
    pub cron: Option<LitStr>,
    pub on_start: Option<LitBool>,
}

/// `#[event(name = "...")]` on a `#[derive(Event)]` type.
#[derive(Default)]
pub struct EventArgs {
    pub name: Option<LitStr>,
}

impl CommandArgs {
    /// The arguments of the `#[command]` being expanded.
    pub fn parse(args: TokenStream) -> syn::Result<Self> {
        Self::parse_written(args, TokenStream::new())
    }

    /// The arguments of a `#[command]` found on the function by the `#[http]` being expanded.
    pub fn from_attr(attr: &Attribute) -> syn::Result<Self> {
        let written = attr.to_token_stream();
        match &attr.meta {
            Meta::Path(_) => Self::parse_written(TokenStream::new(), written),
            Meta::List(list) => Self::parse_written(list.tokens.clone(), written),
            Meta::NameValue(_) => Err(syn::Error::new_spanned(
                attr,
                "write the options in parentheses: `#[command(service = \"...\")]`",
            )),
        }
    }

    fn parse_written(args: TokenStream, written: TokenStream) -> syn::Result<Self> {
        let mut parsed = CommandArgs {
            written,
            service: None,
            version: None,
            name: None,
            timeout: None,
            description: None,
            idempotent: None,
            guard: None,
        };
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("service") {
                set_once(&mut parsed.service, &meta, |m| {
                    string(m, "service = \"orders\"")
                })
            } else if meta.path.is_ident("version") {
                set_once(&mut parsed.version, &meta, |m| integer(m, "version = 1"))
            } else if meta.path.is_ident("name") {
                set_once(&mut parsed.name, &meta, |m| {
                    string(m, "name = \"place_order\"")
                })
            } else if meta.path.is_ident("timeout") {
                set_once(&mut parsed.timeout, &meta, |m| {
                    string(m, "timeout = \"5s\"")
                })
            } else if meta.path.is_ident("description") {
                set_once(&mut parsed.description, &meta, |m| {
                    string(m, "description = \"...\"")
                })
            } else if meta.path.is_ident("idempotent") {
                set_once(&mut parsed.idempotent, &meta, flag)
            } else if meta.path.is_ident("guard") {
                if parsed.guard.is_some() {
                    // One guard keeps the order of the checks in the user's own code.
                    return Err(syn::Error::new_spanned(
                        &meta.path,
                        "`guard` set more than once: a command has one guard; write a guard that awaits both checks",
                    ));
                }
                parsed.guard = Some(path(&meta, "guard = signed_in")?);
                Ok(())
            } else {
                Err(unknown_option(
                    &meta.path,
                    "one of: `service`, `version`, `name`, `timeout`, `description`, `idempotent`, `guard`",
                ))
            }
        });
        parser.parse2(args)?;
        Ok(parsed)
    }
}

impl SubscriptionArgs {
    /// The arguments of the `#[subscription]` being expanded.
    pub fn parse(args: TokenStream) -> syn::Result<Self> {
        let mut parsed = SubscriptionArgs {
            written: TokenStream::new(),
            service: None,
            name: None,
            every_instance: None,
            start: None,
        };
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("service") {
                set_once(&mut parsed.service, &meta, |m| {
                    string(m, "service = \"audit\"")
                })
            } else if meta.path.is_ident("name") {
                set_once(&mut parsed.name, &meta, |m| {
                    string(m, "name = \"record_order\"")
                })
            } else if meta.path.is_ident("every_instance") {
                set_once(&mut parsed.every_instance, &meta, flag)
            } else if meta.path.is_ident("start") {
                set_once(&mut parsed.start, &meta, |m| string(m, "start = \"new\""))
            } else {
                Err(unknown_option(
                    &meta.path,
                    "one of: `service`, `name`, `every_instance`, `start`",
                ))
            }
        });
        parser.parse2(args)?;
        Ok(parsed)
    }
}

impl TaskArgs {
    /// The arguments of the `#[task]` being expanded.
    pub fn parse(args: TokenStream) -> syn::Result<Self> {
        let mut parsed = TaskArgs {
            written: TokenStream::new(),
            service: None,
            name: None,
            every: None,
            cron: None,
            on_start: None,
        };
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("service") {
                set_once(&mut parsed.service, &meta, |m| {
                    string(m, "service = \"reports\"")
                })
            } else if meta.path.is_ident("name") {
                set_once(&mut parsed.name, &meta, |m| {
                    string(m, "name = \"daily_report\"")
                })
            } else if meta.path.is_ident("every") {
                set_once(&mut parsed.every, &meta, |m| string(m, "every = \"30s\""))
            } else if meta.path.is_ident("cron") {
                set_once(&mut parsed.cron, &meta, |m| {
                    string(m, "cron = \"0 3 * * *\"")
                })
            } else if meta.path.is_ident("on_start") {
                set_once(&mut parsed.on_start, &meta, flag)
            } else {
                Err(unknown_option(
                    &meta.path,
                    "one of: `service`, `name`, `every`, `cron`, `on_start`",
                ))
            }
        });
        parser.parse2(args)?;
        Ok(parsed)
    }
}

impl HttpArgs {
    /// The arguments of the `#[http]` being expanded.
    pub fn parse(args: TokenStream) -> syn::Result<Self> {
        Self::parse_args.parse2(args)
    }

    /// The arguments of an `#[http]` found on the function by the `#[command]` being expanded.
    pub fn from_attr(attr: &Attribute) -> syn::Result<Self> {
        match &attr.meta {
            Meta::List(list) => Self::parse(list.tokens.clone()),
            Meta::Path(_) | Meta::NameValue(_) => Err(syn::Error::new_spanned(
                attr,
                "write the method and the path: `#[http(POST, \"/orders\")]`",
            )),
        }
    }

    fn parse_args(input: ParseStream) -> syn::Result<Self> {
        const EXAMPLE: &str = "`#[http(POST, \"/orders\")]`";
        if input.is_empty() {
            return Err(input.error(format!("write the method and the path: {EXAMPLE}")));
        }
        if input.peek(LitStr) {
            let lit: LitStr = input.parse()?;
            let method = lit.value().to_uppercase();
            return Err(syn::Error::new_spanned(
                lit,
                format!("write the method as a word, not a string: `{method}`"),
            ));
        }
        let method: Ident = input.parse().map_err(|e| {
            syn::Error::new(e.span(), format!("expected a method such as {EXAMPLE}"))
        })?;
        if input.is_empty() {
            return Err(syn::Error::new_spanned(
                &method,
                format!("write the path after the method: `#[http({method}, \"/orders\")]`"),
            ));
        }
        input.parse::<Token![,]>()?;
        let path = match input.parse::<Expr>()? {
            Expr::Lit(ExprLit {
                lit: Lit::Str(path),
                ..
            }) => path,
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    "write the path as a string: `\"/orders/{id}\"`",
                ));
            }
        };
        let mut status = None;
        while !input.is_empty() {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            let option: Path = input.parse()?;
            if !option.is_ident("status") {
                return Err(unknown_option(&option, "`status`"));
            }
            if status.is_some() {
                return Err(set_twice(&option));
            }
            if !input.peek(Token![=]) {
                return Err(syn::Error::new_spanned(option, "write `status = 201`"));
            }
            input.parse::<Token![=]>()?;
            status = Some(match input.parse::<Expr>()? {
                Expr::Lit(ExprLit {
                    lit: Lit::Int(code),
                    ..
                }) => code,
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "write the status as a number: `status = 201`",
                    ));
                }
            });
        }
        Ok(HttpArgs {
            method,
            path,
            status,
        })
    }
}

impl EventArgs {
    /// The `#[event(...)]` attributes of a type; options may be spread over several of them.
    pub fn from_attrs(attrs: &[Attribute]) -> syn::Result<Self> {
        let mut parsed = EventArgs::default();
        for attr in attrs.iter().filter(|attr| attr.path().is_ident("event")) {
            if !matches!(attr.meta, Meta::List(_)) {
                return Err(syn::Error::new_spanned(
                    attr,
                    "write the name in parentheses: `#[event(name = \"order_placed\")]`",
                ));
            }
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("name") {
                    set_once(&mut parsed.name, &meta, |m| {
                        string(m, "name = \"order_placed\"")
                    })
                } else {
                    Err(unknown_option(&meta.path, "`name`"))
                }
            })?;
        }
        Ok(parsed)
    }
}

/// Whether `attr` is the attribute `name` however it is reached: `#[http]`, `#[cohort::http]`.
pub fn is_named(attr: &Attribute, name: &str) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|last| last.ident == name)
}

fn set_once<T>(
    slot: &mut Option<T>,
    meta: &ParseNestedMeta,
    value: impl FnOnce(&ParseNestedMeta) -> syn::Result<T>,
) -> syn::Result<()> {
    if slot.is_some() {
        return Err(set_twice(&meta.path));
    }
    *slot = Some(value(meta)?);
    Ok(())
}

fn set_twice(option: &Path) -> syn::Error {
    syn::Error::new_spanned(
        option,
        format!("`{}` set more than once; keep one", path_name(option)),
    )
}

fn unknown_option(option: &Path, expected: &str) -> syn::Error {
    syn::Error::new_spanned(
        option,
        format!(
            "unknown option `{}`; expected {expected}",
            path_name(option)
        ),
    )
}

fn path_name(path: &Path) -> String {
    path.to_token_stream().to_string().replace(' ', "")
}

/// The value after `option =`, which `example` shows how to write.
fn value(meta: &ParseNestedMeta, example: &str) -> syn::Result<Expr> {
    if !meta.input.peek(Token![=]) {
        return Err(syn::Error::new_spanned(
            &meta.path,
            format!(
                "`{}` needs a value: write `{example}`",
                path_name(&meta.path)
            ),
        ));
    }
    meta.value()?.parse()
}

fn string(meta: &ParseNestedMeta, example: &str) -> syn::Result<LitStr> {
    match value(meta, example)? {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Ok(lit),
        other => Err(syn::Error::new_spanned(
            other,
            format!("write a string literal: `{example}`"),
        )),
    }
}

fn integer(meta: &ParseNestedMeta, example: &str) -> syn::Result<LitInt> {
    match value(meta, example)? {
        Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) => Ok(lit),
        other => Err(syn::Error::new_spanned(
            other,
            format!("write a whole number: `{example}`"),
        )),
    }
}

/// The path of a function: `guard = signed_in`, `guard = cohort::guard::signed_in`.
fn path(meta: &ParseNestedMeta, example: &str) -> syn::Result<Path> {
    match value(meta, example)? {
        Expr::Path(expr) if expr.qself.is_none() => Ok(expr.path),
        other => Err(syn::Error::new_spanned(
            other,
            format!("name an async fn: `{example}`"),
        )),
    }
}

/// `every_instance` alone, or `every_instance = true` / `false`.
fn flag(meta: &ParseNestedMeta) -> syn::Result<LitBool> {
    if !meta.input.peek(Token![=]) {
        return Ok(LitBool::new(
            true,
            meta.path
                .get_ident()
                .map_or_else(proc_macro2::Span::call_site, Ident::span),
        ));
    }
    let name = path_name(&meta.path);
    match meta.value()?.parse::<Expr>()? {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(lit),
            ..
        }) => Ok(lit),
        other => Err(syn::Error::new_spanned(
            other,
            format!("write `{name}` alone, or `{name} = true` / `{name} = false`"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn command_options_keep_their_literals() {
        let args = CommandArgs::parse(quote!(service = "orders", version = 2, timeout = "5s"))
            .expect("valid options");
        assert_eq!(args.service.map(|s| s.value()).as_deref(), Some("orders"));
        assert_eq!(args.version.map(|v| v.to_string()).as_deref(), Some("2"));
        assert_eq!(args.timeout.map(|t| t.value()).as_deref(), Some("5s"));
        assert!(args.name.is_none() && args.description.is_none());
        assert!(args.idempotent.is_none() && args.guard.is_none());
        let idempotent = CommandArgs::parse(quote!(service = "a", idempotent)).ok();
        assert_eq!(
            idempotent.and_then(|a| a.idempotent).map(|b| b.value),
            Some(true)
        );
    }

    #[test]
    fn unknown_and_repeated_options_are_refused() {
        let err = CommandArgs::parse(quote!(service = "a", foo = 1))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "unknown option `foo`; expected one of: `service`, `version`, `name`, `timeout`, `description`, `idempotent`, `guard`"
            )
        );
        let err = CommandArgs::parse(quote!(service = "a", service = "b"))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("`service` set more than once; keep one")
        );
    }

    #[test]
    fn values_of_the_wrong_kind_say_how_to_write_them() {
        let err = CommandArgs::parse(quote!(service = "a", version = "1"))
            .err()
            .map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("write a whole number: `version = 1`"));
        let err = CommandArgs::parse(quote!(service = "a", timeout = 5))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("write a string literal: `timeout = \"5s\"`")
        );
    }

    #[test]
    fn guard_is_one_path() {
        let guard = |tokens| {
            CommandArgs::parse(tokens).map(|args| args.guard.map(|p| quote!(#p).to_string()))
        };
        assert_eq!(
            guard(quote!(service = "a", guard = cohort::guard::signed_in)).ok(),
            Some(Some("cohort :: guard :: signed_in".to_owned()))
        );
        let err = guard(quote!(service = "a", guard = "admin")).err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("name an async fn: `guard = signed_in`")
        );
        let err = guard(quote!(service = "a", guard = a, guard = b)).err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some(
                "`guard` set more than once: a command has one guard; write a guard that awaits both checks"
            )
        );
    }

    #[test]
    fn every_instance_is_a_flag_or_a_bool() {
        let flag = |tokens| {
            SubscriptionArgs::parse(tokens)
                .expect("valid options")
                .every_instance
                .map(|b| b.value)
        };
        assert_eq!(flag(quote!(service = "a", every_instance)), Some(true));
        assert_eq!(
            flag(quote!(service = "a", every_instance = false)),
            Some(false)
        );
        assert_eq!(flag(quote!(service = "a")), None);
    }

    #[test]
    fn http_takes_method_path_and_status() {
        let http =
            HttpArgs::parse(quote!(POST, "/orders/{id}", status = 201)).expect("valid route");
        assert_eq!(http.method, "POST");
        assert_eq!(http.path.value(), "/orders/{id}");
        assert_eq!(http.status.map(|s| s.to_string()).as_deref(), Some("201"));
        assert!(HttpArgs::parse(quote!(GET, "/a",)).is_ok());
        let err = HttpArgs::parse(quote!("post", "/a"))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("write the method as a word, not a string: `POST`")
        );
        let err = HttpArgs::parse(quote!(GET, "/a", code = 1))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("unknown option `code`; expected `status`")
        );
    }
}
