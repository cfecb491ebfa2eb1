//! The checks of the parsed attributes and signatures. Each turns what the user wrote into the value
//! the expansion needs, or into an error on the tokens at fault that says what to write instead;
//! the naming rules it applies are `names`'. Every problem is reported, not just the first.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};
use syn::ext::IdentExt;
use syn::{FnArg, Ident, LitBool, LitInt, LitStr, Path, Type};

use crate::ast::{Command, Event, Handler, Kind, Subscription, Task, both};
use crate::attr::{HttpArgs, TaskArgs};
use crate::names::{
    Start, event_name, method, parse_cron, parse_every, parse_start, parse_timeout, route_params,
    service_name, snake_case, subject_name,
};

/// A command's options, checked.
#[derive(Default)]
pub struct CommandSpec {
    pub service: String,
    pub version: u32,
    pub name: String,
    pub description: String,
    pub timeout_ms: Option<u64>,
    /// Running it twice has the effect of running it once: the runtime may retry it elsewhere.
    pub idempotent: bool,
    pub http: Option<Route>,
    /// The guard function's path, as written: the compiler checks its signature.
    pub guard: Option<Path>,
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
    pub start: Start,
    pub event: &'a Type,
}

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
            idempotent: args.idempotent.as_ref().is_some_and(LitBool::value),
            http: self.http.as_ref().map(|http| problems.take(route(http))),
            guard: args.guard.clone(),
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
        let every_instance = args.every_instance.as_ref().is_some_and(LitBool::value);
        let start = args
            .start
            .as_ref()
            .map_or(Ok(Start::Resume), |lit| start(lit, every_instance));
        let start = problems.take(start);
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
            every_instance,
            start,
            event,
        })
    }
}

/// When a task runs.
pub enum Schedule {
    /// Every so many milliseconds, aligned on the Unix epoch.
    Every(u64),
    /// At the times of a five-field cron expression, in UTC.
    Cron(String),
    /// Once per deployment version, before the instances turn ready.
    OnStart,
}

/// A task's options, checked.
pub struct TaskSpec {
    pub service: String,
    pub name: String,
    pub schedule: Schedule,
}

impl Task<'_> {
    pub fn validate(&self) -> syn::Result<TaskSpec> {
        let mut problems = Problems::default();
        problems.take(self.handler.validate());
        let args = &self.args;
        let kind = Kind::Task;
        let service = problems.take(service(args.service.as_ref(), &args.written, kind));
        let name = problems.take(name(args.name.as_ref(), &self.handler, kind));
        let schedule = schedule(args);
        let (schedule, ()) = both(schedule, problems.finish(()))?;
        Ok(TaskSpec {
            service,
            name,
            schedule,
        })
    }
}

/// The one schedule of `every`, `cron` and `on_start`.
fn schedule(args: &TaskArgs) -> syn::Result<Schedule> {
    let on_start = args.on_start.as_ref().filter(|flag| flag.value());
    match (&args.every, &args.cron, on_start) {
        (Some(every), None, None) => parse_every(&every.value())
            .map(Schedule::Every)
            .map_err(|message| syn::Error::new_spanned(every, message)),
        (None, Some(cron), None) => parse_cron(&cron.value())
            .map(|()| Schedule::Cron(cron.value()))
            .map_err(|message| syn::Error::new_spanned(cron, message)),
        (None, None, Some(_)) => Ok(Schedule::OnStart),
        (None, None, None) => Err(syn::Error::new_spanned(
            &args.written,
            "missing schedule: write `every = \"30s\"`, `cron = \"0 3 * * *\"` or `on_start`",
        )),
        _ => Err(syn::Error::new_spanned(
            &args.written,
            "a task has one schedule: keep one of `every`, `cron` and `on_start`",
        )),
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
                (Kind::Task, None) => format!("async fn {ident}(ctx: Ctx)"),
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
            Kind::Task => "argument",
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
            Kind::Task => {
                let args: Vec<&FnArg> = self.func.sig.inputs.iter().skip(1).collect();
                if !args.is_empty() {
                    problems.push(syn::Error::new_spanned(
                        quote!(#(#args),*),
                        format!("a task takes only the context: write `async fn {ident}(ctx: Ctx)`"),
                    ));
                }
                if !is_unit(self.ok) {
                    problems.push(syn::Error::new_spanned(
                        self.ok,
                        format!(
                            "tasks return no value: write `()` instead of `{}`",
                            written(self.ok)
                        ),
                    ));
                }
            }
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

/// A start position, which only an every-instance subscription has: a shared one resumes where
/// its group left off, since the group's consumer outlives every instance.
fn start(lit: &LitStr, every_instance: bool) -> syn::Result<Start> {
    if !every_instance {
        return Err(syn::Error::new_spanned(
            lit,
            "`start` sets where an `every_instance` subscription begins; a shared subscription resumes where its instances left off: add `every_instance` or remove `start`",
        ));
    }
    parse_start(&lit.value()).map_err(|message| syn::Error::new_spanned(lit, message))
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
