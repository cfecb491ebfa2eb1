//! The code the macros generate: each entry point parses, validates, then generates. On error it
//! salvages what it still can of the expansion and hands both to `fallback`.
//!
//! Generated checks on user types are spanned on those types (`check_span`), so that a missing
//! `Deserialize` is reported on the input type rather than on the attribute.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{DeriveInput, Ident, ItemFn};

use crate::ast::{Command, Event, Handler, Kind, Siblings, Subscription, Task};
use crate::fallback;
use crate::names::Start;
use crate::valid::{CommandSpec, Schedule, SubscriptionSpec, TaskSpec};

/// `#[command]`, which may find an `#[http]` below it.
pub fn command(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut func = match parse_fn(item, "command") {
        Ok(func) => func,
        Err(not_a_fn) => return not_a_fn,
    };
    let siblings = Siblings::take(&mut func);
    let command = Command::from_command(args, &func, &siblings);
    expand_command(&func, command)
}

/// `#[http]`, which must find a `#[command]` below it.
pub fn http(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut func = match parse_fn(item, "http") {
        Ok(func) => func,
        Err(not_a_fn) => return not_a_fn,
    };
    let siblings = Siblings::take(&mut func);
    let command = Command::from_http(args, &func, &siblings);
    expand_command(&func, command)
}

pub fn subscription(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut func = match parse_fn(item, "subscription") {
        Ok(func) => func,
        Err(not_a_fn) => return not_a_fn,
    };
    let siblings = Siblings::take(&mut func);
    let expanded = Subscription::from_syn(args, &func, &siblings).and_then(|subscription| {
        let spec = subscription.validate()?;
        Ok(subscription_tokens(&subscription.handler, &spec))
    });
    expanded.unwrap_or_else(|error| fallback::function(&func, error, None))
}

pub fn task(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut func = match parse_fn(item, "task") {
        Ok(func) => func,
        Err(not_a_fn) => return not_a_fn,
    };
    let siblings = Siblings::take(&mut func);
    let expanded = Task::from_syn(args, &func, &siblings).and_then(|task| {
        let spec = task.validate()?;
        Ok(task_tokens(&task.handler, &spec))
    });
    expanded.unwrap_or_else(|error| fallback::function(&func, error, None))
}

pub fn event(input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(error) => return error.to_compile_error(),
    };
    let expanded = Event::from_syn(&input).and_then(|event| {
        let name = event.validate()?;
        Ok(event_tokens(&input.ident, &name))
    });
    expanded.unwrap_or_else(|error| fallback::derive(error, salvaged_event_impl(&input)))
}

/// The struct named like the function and its `Command` impl, which make
/// `ctx.call::<place_order>(input)` typed.
fn command_type(handler: &Handler, spec: &CommandSpec) -> TokenStream {
    let vis = &handler.func.vis;
    let ident = &handler.func.sig.ident;
    let input = input_type(handler);
    let output = handler.ok;
    let CommandSpec {
        service,
        version,
        name,
        timeout_ms,
        idempotent,
        ..
    } = spec;
    let doc = format!(
        "The command `{service}.v{version}.{name}` of [`{ident}()`]: `ctx.call::<{ident}>(input)` calls it on any instance."
    );
    let timeout_ms = option(timeout_ms.map(|ms| quote!(#ms)));
    quote! {
        #[doc = #doc]
        #[allow(non_camel_case_types, dead_code)]
        #vis struct #ident {}

        impl ::cohort::Command for #ident {
            type Input = #input;
            type Output = #output;
            const SERVICE: &'static str = #service;
            const VERSION: u32 = #version;
            const NAME: &'static str = #name;
            const TIMEOUT_MS: ::core::option::Option<u64> = #timeout_ms;
            const IDEMPOTENT: bool = #idempotent;
        }
    }
}

fn event_impl(ident: &Ident, name: &str) -> TokenStream {
    quote! {
        impl ::cohort::Event for #ident {
            const NAME: &'static str = #name;
        }
    }
}

/// The `Event` impl with the type's schema when it implements `JsonSchema` (found by autoref
/// specialization on the concrete type), and the type registered for the drift check.
fn event_tokens(ident: &Ident, name: &str) -> TokenStream {
    // Written twice rather than naming `<T as Event>::schema`, which would repeat every error of
    // an impl that does not hold (a type that is not `Serialize`).
    let schema = quote! {{
        use ::cohort::__private::{WithSchema as _, WithoutSchema as _};
        (&::cohort::__private::SchemaProbe::<#ident>::NEW).event_schema()
    }};
    quote! {
        impl ::cohort::Event for #ident {
            const NAME: &'static str = #name;

            fn schema() -> ::core::option::Option<::cohort::__private::schemars::Schema> #schema
        }

        ::cohort::__private::inventory::submit! {
            ::cohort::__private::EventDescriptor {
                name: #name,
                schema: || #schema,
            }
        }
    }
}

fn parse_fn(item: TokenStream, attribute: &str) -> Result<ItemFn, TokenStream> {
    syn::parse2(item.clone()).map_err(|_| {
        let error = syn::Error::new_spanned(
            &item,
            format!(
                "`#[{attribute}]` goes on a free `async fn`: write `async fn name(ctx: Ctx, input: Input) -> Result<Output, Error>`"
            ),
        );
        fallback::item(item, error)
    })
}

fn expand_command(func: &ItemFn, command: syn::Result<Command>) -> TokenStream {
    let expanded = command.and_then(|command| {
        let spec = command.validate()?;
        Ok(command_tokens(&command.handler, &spec))
    });
    expanded.unwrap_or_else(|error| fallback::function(func, error, salvaged_command_type(func)))
}

/// The command type when the signature is sound (the error is then in the options), so that
/// `ctx.call::<f>(...)` elsewhere keeps type-checking.
fn salvaged_command_type(func: &ItemFn) -> Option<TokenStream> {
    let handler = Handler::from_syn(func, Kind::Command).ok()?;
    handler.validate().ok()?;
    Some(command_type(&handler, &CommandSpec::default()))
}

/// The `Event` impl when the type allows one, so that uses of the event do not fail too.
fn salvaged_event_impl(input: &DeriveInput) -> Option<TokenStream> {
    input
        .generics
        .params
        .is_empty()
        .then(|| event_impl(&input.ident, ""))
}

fn command_tokens(handler: &Handler, spec: &CommandSpec) -> TokenStream {
    let func = handler.func;
    let ident = &func.sig.ident;
    let command_type = command_type(handler, spec);
    let Locals {
        ctx,
        payload,
        input: value,
    } = Locals::new();

    let mut checks = Vec::new();
    let decode = match handler.input {
        Some(input) => {
            let span = check_span(input);
            checks.push(quote_spanned!(span=> ::cohort::__private::assert_input::<#input>();));
            quote_spanned! {span=>
                let #value: #input = ::cohort::__private::decode_input::<#input>(&#payload)?;
            }
        }
        None => quote!(::cohort::__private::no_input(&#payload)?;),
    };
    let output = handler.ok;
    let output_span = check_span(output);
    checks.push(quote_spanned!(output_span=> ::cohort::__private::assert_output::<#output>();));
    if let Some(error) = handler.err {
        checks.push(
            quote_spanned!(check_span(error)=> ::cohort::__private::assert_error::<#error>();),
        );
    }
    let call = match handler.input {
        Some(_) => quote!(#ident(#ctx, #value)),
        None => quote!(#ident(#ctx)),
    };
    // Each bound is required where its `assert_*` requires it, so rustc reports it once.
    let into_error = into_error(handler);
    let encode = quote_spanned! {output_span=>
        ::cohort::__private::encode_output::<#output, ::cohort::Error>(#call.await.map_err(#into_error))
    };

    let input = input_type(handler);
    let input_schema = match handler.input {
        Some(ty) => quote_spanned!(check_span(ty)=> ::cohort::__private::schema_for::<#input>),
        None => quote!(::cohort::__private::schema_for::<()>),
    };
    let output_schema = quote_spanned!(output_span=> ::cohort::__private::schema_for::<#output>);
    let CommandSpec {
        service,
        version,
        name,
        description,
        timeout_ms,
        idempotent,
        http,
        guard,
    } = spec;
    let timeout_ms = option(timeout_ms.map(|ms| quote!(#ms)));
    let http = option(http.as_ref().map(|route| {
        let (method, path, status) = (route.method, &route.path, route.status);
        quote!(::cohort::__private::HttpRoute { method: #method, path: #path, status: #status })
    }));
    let run = handler_closure(
        ident,
        quote!(::core::result::Result<::cohort::__private::Bytes, ::cohort::Error>),
        quote!(#decode #encode),
    );
    let guard = option(guard.as_ref().map(guard_fn));
    let location = location(ident);

    quote! {
        #func

        #command_type

        ::cohort::__private::inventory::submit! {
            {
                #(#checks)*
                ::cohort::__private::CommandDescriptor {
                    service: #service,
                    version: #version,
                    name: #name,
                    description: #description,
                    timeout_ms: #timeout_ms,
                    idempotent: #idempotent,
                    input_schema: #input_schema,
                    output_schema: #output_schema,
                    http: #http,
                    guard: #guard,
                    handler: #run,
                    location: #location,
                    package: ::cohort::__private::Package {
                        name: ::core::env!("CARGO_PKG_NAME"),
                        version: ::core::env!("CARGO_PKG_VERSION"),
                    },
                }
            }
        }
    }
}

fn subscription_tokens(handler: &Handler, spec: &SubscriptionSpec) -> TokenStream {
    let func = handler.func;
    let ident = &func.sig.ident;
    let Locals {
        ctx,
        payload,
        input: value,
    } = Locals::new();
    let event = spec.event;
    let event_span = check_span(event);

    let mut checks =
        vec![quote_spanned!(event_span=> ::cohort::__private::assert_event::<#event>();)];
    if let Some(error) = handler.err {
        checks.push(
            quote_spanned!(check_span(error)=> ::cohort::__private::assert_error::<#error>();),
        );
    }
    let decode = quote_spanned! {event_span=>
        let #value: #event = ::cohort::__private::decode_input::<#event>(&#payload)?;
    };
    let into_error = into_error(handler);
    let run = quote! {
        ::cohort::__private::into_event_result(#ident(#ctx, #value).await.map_err(#into_error))
    };
    let run = handler_closure(
        ident,
        quote!(::core::result::Result<(), ::cohort::Error>),
        quote!(#decode #run),
    );
    let SubscriptionSpec {
        service,
        name,
        every_instance,
        start,
        ..
    } = spec;
    let start = start_tokens(*start);
    let event_name = quote_spanned!(event_span=> <#event as ::cohort::Event>::NAME);
    let event_schema = quote_spanned!(event_span=> <#event as ::cohort::Event>::schema);
    let location = location(ident);

    quote! {
        #func

        ::cohort::__private::inventory::submit! {
            {
                #(#checks)*
                ::cohort::__private::SubscriptionDescriptor {
                    service: #service,
                    name: #name,
                    event: #event_name,
                    event_schema: #event_schema,
                    every_instance: #every_instance,
                    start: #start,
                    handler: #run,
                    location: #location,
                }
            }
        }
    }
}

fn start_tokens(start: Start) -> TokenStream {
    let position = quote!(::cohort::__private::StartPosition);
    match start {
        Start::Resume => quote!(#position::Resume),
        Start::New => quote!(#position::New),
        Start::Last(n) => quote!(#position::Last(#n)),
        Start::Since(ms) => quote!(#position::Since(::core::time::Duration::from_millis(#ms))),
    }
}

fn task_tokens(handler: &Handler, spec: &TaskSpec) -> TokenStream {
    let func = handler.func;
    let ident = &func.sig.ident;
    let Locals { ctx, .. } = Locals::new();
    let checks = handler.err.map(
        |error| quote_spanned!(check_span(error)=> ::cohort::__private::assert_error::<#error>();),
    );
    let into_error = into_error(handler);
    // The closure takes the context only; the payload of the other handlers has no use here.
    let boxed = quote_spanned! {check_span(ident)=>
        ::std::boxed::Box::pin(async move { #ident(#ctx).await.map_err(#into_error) })
    };
    let run = quote! {
        |#ctx: ::cohort::Ctx|
            -> ::cohort::__private::BoxFuture<'static, ::core::result::Result<(), ::cohort::Error>> { #boxed }
    };
    let TaskSpec {
        service,
        name,
        schedule,
    } = spec;
    let schedule = match schedule {
        Schedule::Every(ms) => quote!(::cohort::__private::TaskSchedule::Every { ms: #ms }),
        Schedule::Cron(expression) => {
            quote!(::cohort::__private::TaskSchedule::Cron { expression: #expression })
        }
        Schedule::OnStart => quote!(::cohort::__private::TaskSchedule::OnStart),
    };
    let location = location(ident);

    quote! {
        #func

        ::cohort::__private::inventory::submit! {
            {
                #checks
                ::cohort::__private::TaskDescriptor {
                    service: #service,
                    name: #name,
                    schedule: #schedule,
                    // The version of the crate that declares the task: the app's, not Cohort's.
                    app_version: ::core::env!("CARGO_PKG_VERSION"),
                    handler: #run,
                    location: #location,
                }
            }
        }
    }
}

/// The guard as the descriptor holds it: a function pointer that runs the user's guard. A function
/// that is no guard is reported on the user's path.
fn guard_fn(path: &syn::Path) -> TokenStream {
    let Locals { ctx, .. } = Locals::new();
    // An item, so not hygienic like the locals: named so that no user's guard is called the same.
    let wrapper = Ident::new("__cohort_guard", Span::call_site());
    let run = quote_spanned!(check_span(path)=> ::cohort::__private::run_guard(#path, #ctx));
    quote! {
        {
            fn #wrapper<'a>(#ctx: &'a ::cohort::Ctx)
                -> ::cohort::__private::BoxFuture<'a, ::core::result::Result<(), ::cohort::Error>> {
                #run
            }
            #wrapper as ::cohort::__private::GuardFn
        }
    }
}

/// The type-erased handler the descriptor points to, a closure that `body` fills: it decodes,
/// calls the user's function and converts its result. The checks, the schemas and the handler are
/// all in the one initializer, so that rustc reports a type's missing trait once, not once per use.
fn handler_closure(ident: &Ident, output: TokenStream, body: TokenStream) -> TokenStream {
    let Locals { ctx, payload, .. } = Locals::new();
    // The runtime runs handlers on any worker thread: a future that is not `Send` is reported on
    // the function's name.
    let boxed = quote_spanned! {check_span(ident)=>
        ::std::boxed::Box::pin(async move { #body })
    };
    quote! {
        |#ctx: ::cohort::Ctx, #payload: ::cohort::__private::Bytes|
            -> ::cohort::__private::BoxFuture<'static, #output> { #boxed }
    }
}

/// The conversion of the function's error into `cohort::Error`. rustc reports a missing bound on
/// the type argument written in the call, so each use names the user's type as its `assert_*` does:
/// both errors are then the same error, reported once.
fn into_error(handler: &Handler) -> TokenStream {
    // A closure rather than the function itself, which would add `map_err`'s `FnOnce` bound.
    match handler.err {
        Some(ty) => {
            let error = Ident::new("error", Span::mixed_site());
            quote_spanned! {check_span(ty)=>
                |#error| <#ty as ::cohort::__private::IntoError>::into_error(#error)
            }
        }
        // `Result<T>` names no error type: a wrong one is reported on `Result`, where the error
        // type is chosen, which is also where rustc points for the argument it converts.
        None => {
            let span = check_span(handler.result);
            let error = Ident::new("error", Span::mixed_site().located_at(span));
            quote_spanned! {span=>
                |#error| ::cohort::__private::IntoError::into_error(#error)
            }
        }
    }
}

/// The span of `tokens` for a check the expansion makes about them: the error lands on them, while
/// the code stays the macro's, which lints of the user's code skip.
fn check_span(tokens: &impl Spanned) -> Span {
    Span::call_site().located_at(tokens.span())
}

/// Where the function is: `file!()` and `line!()` take the span of the function's name.
fn location(ident: &Ident) -> TokenStream {
    quote_spanned! {ident.span()=>
        ::cohort::__private::Location { file: ::core::file!(), line: ::core::line!() }
    }
}

fn input_type(handler: &Handler) -> TokenStream {
    match handler.input {
        Some(input) => quote!(#input),
        None => quote!(()),
    }
}

fn option(value: Option<TokenStream>) -> TokenStream {
    match value {
        Some(value) => quote!(::core::option::Option::Some(#value)),
        None => quote!(::core::option::Option::None),
    }
}

/// The handler's local variables, hygienic so that a user's function named `ctx` or `input` is
/// still the one called.
struct Locals {
    ctx: Ident,
    payload: Ident,
    input: Ident,
}

impl Locals {
    fn new() -> Self {
        let local = |name| Ident::new(name, Span::mixed_site());
        Locals {
            ctx: local("ctx"),
            payload: local("payload"),
            input: local("input"),
        }
    }
}
