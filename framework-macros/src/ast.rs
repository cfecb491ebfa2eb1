//! The functions and types the macros are put on, taken apart into the pieces the expansion names.

use proc_macro2::{Span, TokenStream};
use syn::{
    Attribute, DeriveInput, Expr, ExprLit, FnArg, GenericArgument, Ident, ItemFn, Lit, Meta,
    PathArguments, ReturnType, Type,
};

use crate::attr::{self, CommandArgs, EventArgs, HttpArgs, SubscriptionArgs, TaskArgs};

/// What a function is made into; it words the messages.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Command,
    Subscription,
    Task,
}

impl Kind {
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Command => "commands",
            Kind::Subscription => "subscriptions",
            Kind::Task => "tasks",
        }
    }

    pub fn attribute(self) -> &'static str {
        match self {
            Kind::Command => "command",
            Kind::Subscription => "subscription",
            Kind::Task => "task",
        }
    }
}

/// A `#[command]` with the `#[http]` stacked on it, if any.
pub struct Command<'a> {
    pub args: CommandArgs,
    pub http: Option<HttpArgs>,
    pub handler: Handler<'a>,
}

/// A `#[subscription]`.
pub struct Subscription<'a> {
    pub args: SubscriptionArgs,
    pub handler: Handler<'a>,
}

/// A `#[task]`.
pub struct Task<'a> {
    pub args: TaskArgs,
    pub handler: Handler<'a>,
}

/// The signature of a command or subscription function: `async fn f(ctx: Ctx, input: In) -> Result<Out, E>`.
pub struct Handler<'a> {
    pub func: &'a ItemFn,
    pub kind: Kind,
    /// The type of the first argument, which must be the context.
    pub ctx: &'a Type,
    /// The type of the second argument: a command's input or a subscription's event.
    pub input: Option<&'a Type>,
    /// Arguments after the input, which are refused.
    pub extra: Vec<&'a FnArg>,
    /// `Result` in the return type, whatever its path: `cohort::Result<T>`.
    pub result: &'a Ident,
    /// `T` of `Result<T, E>`.
    pub ok: &'a Type,
    /// `E` of `Result<T, E>`; `None` for `Result<T>`, whose alias fixes it.
    pub err: Option<&'a Type>,
}

/// The other Cohort attributes of a function, taken off it by the macro that expands first.
pub struct Siblings {
    pub commands: Vec<Attribute>,
    pub http: Vec<Attribute>,
    pub subscriptions: Vec<Attribute>,
    pub tasks: Vec<Attribute>,
}

/// A `#[derive(Event)]` type.
pub struct Event<'a> {
    pub input: &'a DeriveInput,
    pub args: EventArgs,
}

impl Siblings {
    /// Removes the `#[command]`, `#[http]` and `#[subscription]` attributes from `func`: the macro
    /// that runs first expands them all, so none may run again on its output.
    pub fn take(func: &mut ItemFn) -> Siblings {
        let mut siblings = Siblings {
            commands: Vec::new(),
            http: Vec::new(),
            subscriptions: Vec::new(),
            tasks: Vec::new(),
        };
        let mut kept = Vec::new();
        for attr in func.attrs.drain(..) {
            if attr::is_named(&attr, "command") {
                siblings.commands.push(attr);
            } else if attr::is_named(&attr, "http") {
                siblings.http.push(attr);
            } else if attr::is_named(&attr, "subscription") {
                siblings.subscriptions.push(attr);
            } else if attr::is_named(&attr, "task") {
                siblings.tasks.push(attr);
            } else {
                kept.push(attr);
            }
        }
        func.attrs = kept;
        siblings
    }
}

impl<'a> Command<'a> {
    /// `#[command(args)]` expanded first: an `#[http]` may wait among the function's attributes.
    pub fn from_command(
        args: TokenStream,
        func: &'a ItemFn,
        siblings: &Siblings,
    ) -> syn::Result<Self> {
        let args = CommandArgs::parse(args).and_then(|args| {
            if let Some(again) = siblings.commands.first() {
                return Err(syn::Error::new_spanned(
                    again,
                    "`#[command]` set more than once; keep one",
                ));
            }
            refuse_subscription(siblings)?;
            Ok(args)
        });
        let http = match siblings.http.as_slice() {
            [] => Ok(None),
            [http] => HttpArgs::from_attr(http).map(Some),
            [_, again, ..] => Err(http_twice(again)),
        };
        let handler = Handler::from_syn(func, Kind::Command);
        let ((args, http), handler) = both(both(args, http), handler)?;
        Ok(Command {
            args,
            http,
            handler,
        })
    }

    /// `#[http(args)]` expanded first: its `#[command]` must wait among the function's attributes.
    pub fn from_http(
        args: TokenStream,
        func: &'a ItemFn,
        siblings: &Siblings,
    ) -> syn::Result<Self> {
        let http = HttpArgs::parse(args).and_then(|http| match siblings.http.first() {
            Some(again) => Err(http_twice(again)),
            None => Ok(http),
        });
        let args = match siblings.commands.as_slice() {
            [] => Err(syn::Error::new(
                Span::call_site(),
                "`#[http]` belongs on a function that also has `#[command(service = \"...\")]`",
            )),
            [command] => {
                refuse_subscription(siblings).and_then(|()| CommandArgs::from_attr(command))
            }
            [_, again, ..] => Err(syn::Error::new_spanned(
                again,
                "`#[command]` set more than once; keep one",
            )),
        };
        let handler = Handler::from_syn(func, Kind::Command);
        let ((args, http), handler) = both(both(args, http), handler)?;
        Ok(Command {
            args,
            http: Some(http),
            handler,
        })
    }
}

impl<'a> Subscription<'a> {
    pub fn from_syn(args: TokenStream, func: &'a ItemFn, siblings: &Siblings) -> syn::Result<Self> {
        let args = SubscriptionArgs::parse(args).and_then(|args| {
            if let Some(http) = siblings.http.first() {
                return Err(syn::Error::new_spanned(
                    http,
                    "`#[http]` binds a route to a `#[command]`; a subscription has none: remove it",
                ));
            }
            if let Some(command) = siblings.commands.first() {
                return Err(either_or(command));
            }
            if let Some(again) = siblings.subscriptions.first() {
                return Err(syn::Error::new_spanned(
                    again,
                    "`#[subscription]` set more than once; keep one",
                ));
            }
            refuse_task(siblings)?;
            Ok(args)
        });
        let handler = Handler::from_syn(func, Kind::Subscription);
        let (args, handler) = both(args, handler)?;
        Ok(Subscription { args, handler })
    }
}

impl<'a> Task<'a> {
    pub fn from_syn(args: TokenStream, func: &'a ItemFn, siblings: &Siblings) -> syn::Result<Self> {
        let args = TaskArgs::parse(args).and_then(|args| {
            let other = siblings
                .commands
                .iter()
                .chain(&siblings.http)
                .chain(&siblings.subscriptions)
                .next();
            if let Some(other) = other {
                return Err(syn::Error::new_spanned(
                    other,
                    "a `#[task]` runs on a schedule, not on a call or an event: keep one attribute",
                ));
            }
            if let Some(again) = siblings.tasks.first() {
                return Err(syn::Error::new_spanned(
                    again,
                    "`#[task]` set more than once; keep one",
                ));
            }
            Ok(args)
        });
        let handler = Handler::from_syn(func, Kind::Task);
        let (args, handler) = both(args, handler)?;
        Ok(Task { args, handler })
    }
}

impl<'a> Handler<'a> {
    /// Takes the signature apart. What cannot be taken apart is refused here; what merely breaks a
    /// rule is refused by `valid`.
    pub fn from_syn(func: &'a ItemFn, kind: Kind) -> syn::Result<Self> {
        let sig = &func.sig;
        let ident = &sig.ident;
        let plural = kind.plural();
        let mut args = sig.inputs.iter();
        let ctx = match args.next() {
            Some(FnArg::Typed(ctx)) => Ok(&*ctx.ty),
            Some(FnArg::Receiver(receiver)) => Err(syn::Error::new_spanned(
                receiver,
                format!(
                    "{plural} are free functions: move `{ident}` out of the `impl` block and take `ctx: Ctx` instead of `self`"
                ),
            )),
            None => Err(syn::Error::new(
                sig.paren_token.span.join(),
                format!(
                    "{plural} take the context first: write `async fn {ident}(ctx: Ctx{})`",
                    match kind {
                        Kind::Command | Kind::Task => "",
                        Kind::Subscription => ", event: MyEvent",
                    }
                ),
            )),
        };
        let input = args.next().map(|arg| match arg {
            FnArg::Typed(input) => &*input.ty,
            // A receiver is only valid first, and syn refuses it elsewhere.
            FnArg::Receiver(receiver) => &*receiver.ty,
        });
        let extra = args.collect();
        let ret = result_type(sig, kind);
        let (ctx, (result, ok, err)) = both(ctx, ret)?;
        Ok(Handler {
            func,
            kind,
            ctx,
            input,
            extra,
            result,
            ok,
            err,
        })
    }

    /// The doc comment of the function, one line per `///` line, without the space after `///`.
    pub fn doc(&self) -> String {
        doc_comment(&self.func.attrs)
    }
}

impl<'a> Event<'a> {
    pub fn from_syn(input: &'a DeriveInput) -> syn::Result<Self> {
        Ok(Event {
            input,
            args: EventArgs::from_attrs(&input.attrs)?,
        })
    }
}

/// `Result`, `T` and `E` of `-> Result<T, E>` or `-> Result<T>`.
fn result_type(sig: &syn::Signature, kind: Kind) -> syn::Result<(&Ident, &Type, Option<&Type>)> {
    let example = match kind {
        Kind::Command => "Result<Output, Error>",
        Kind::Subscription | Kind::Task => "Result<(), Error>",
    };
    let plural = kind.plural();
    let ty = match &sig.output {
        ReturnType::Type(_, ty) => ty,
        ReturnType::Default => {
            return Err(syn::Error::new(
                sig.paren_token.span.close(),
                format!("missing return type: {plural} return a `Result`, write `-> {example}`"),
            ));
        }
    };
    let not_result = || {
        syn::Error::new_spanned(
            ty,
            format!("{plural} return a `Result`: write `-> {example}`"),
        )
    };
    let Type::Path(path) = &**ty else {
        return Err(not_result());
    };
    let Some(last) = path
        .path
        .segments
        .last()
        .filter(|last| last.ident == "Result")
    else {
        return Err(not_result());
    };
    let PathArguments::AngleBracketed(generics) = &last.arguments else {
        return Err(not_result());
    };
    let types: Vec<&Type> = generics
        .args
        .iter()
        .filter_map(|arg| match arg {
            GenericArgument::Type(ty) => Some(ty),
            _ => None,
        })
        .collect();
    match types.as_slice() {
        [ok] if generics.args.len() == 1 => Ok((&last.ident, ok, None)),
        [ok, err] if generics.args.len() == 2 => Ok((&last.ident, ok, Some(err))),
        _ => Err(syn::Error::new_spanned(
            generics,
            format!("write the output and error types: `{example}`, or `Result<T>` for cohort's"),
        )),
    }
}

fn doc_comment(attrs: &[Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|attr| attr.path().is_ident("doc"))
        .filter_map(|attr| match &attr.meta {
            Meta::NameValue(doc) => match &doc.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(text),
                    ..
                }) => Some(text.value()),
                _ => None,
            },
            _ => None,
        })
        .flat_map(|text| {
            // `split`, not `lines`: an empty `///` line is a paragraph break to keep.
            text.split('\n')
                .map(|line| line.strip_prefix(' ').unwrap_or(line).trim_end().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    lines.join("\n").trim().to_owned()
}

fn refuse_subscription(siblings: &Siblings) -> syn::Result<()> {
    refuse_task(siblings)?;
    match siblings.subscriptions.first() {
        Some(subscription) => Err(either_or(subscription)),
        None => Ok(()),
    }
}

fn refuse_task(siblings: &Siblings) -> syn::Result<()> {
    match siblings.tasks.first() {
        Some(task) => Err(syn::Error::new_spanned(
            task,
            "a `#[task]` runs on a schedule, not on a call or an event: keep one attribute",
        )),
        None => Ok(()),
    }
}

fn either_or(attr: &Attribute) -> syn::Error {
    syn::Error::new_spanned(
        attr,
        "a function is either a `#[command]` or a `#[subscription]`; keep one",
    )
}

fn http_twice(again: &Attribute) -> syn::Error {
    syn::Error::new_spanned(
        again,
        "`#[http]` set more than once: a command has one route; keep one",
    )
}

/// Both values, or every error of the two.
pub fn both<A, B>(a: syn::Result<A>, b: syn::Result<B>) -> syn::Result<(A, B)> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
        (Err(mut a), Err(b)) => {
            a.combine(b);
            Err(a)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;
    use syn::parse_quote;

    #[test]
    fn result_is_taken_apart() {
        let sig: syn::Signature = parse_quote!(async fn f(ctx: Ctx) -> Result<Vec<u8>, MyError>);
        let (_, ok, err) = result_type(&sig, Kind::Command).expect("a Result");
        assert_eq!(quote!(#ok).to_string().replace(' ', ""), "Vec<u8>");
        assert_eq!(
            err.map(|e| quote!(#e).to_string()).as_deref(),
            Some("MyError")
        );

        let sig: syn::Signature = parse_quote!(async fn f(ctx: Ctx) -> cohort::Result<()>);
        let (_, ok, err) = result_type(&sig, Kind::Command).expect("a Result");
        assert_eq!(quote!(#ok).to_string().replace(' ', ""), "()");
        assert!(err.is_none());
    }

    #[test]
    fn other_return_types_are_refused() {
        for sig in [
            quote!(async fn f(ctx: Ctx)),
            quote!(async fn f(ctx: Ctx) -> Order),
            quote!(async fn f(ctx: Ctx) -> Option<Order>),
            quote!(async fn f(ctx: Ctx) -> Result),
            quote!(async fn f(ctx: Ctx) -> Result<A, B, C>),
        ] {
            let sig: syn::Signature = syn::parse2(sig).expect("a signature");
            assert!(
                result_type(&sig, Kind::Command).is_err(),
                "{}",
                quote!(#sig)
            );
        }
    }

    #[test]
    fn doc_comments_become_the_description() {
        let func: ItemFn = parse_quote! {
            /// Places an order.
            ///
            /// Charges the card.
            #[inline]
            async fn f() {}
        };
        assert_eq!(
            doc_comment(&func.attrs),
            "Places an order.\n\nCharges the card."
        );
        let func: ItemFn = parse_quote!(
            async fn f() {}
        );
        assert_eq!(doc_comment(&func.attrs), "");
    }

    #[test]
    fn siblings_are_taken_off_the_function() {
        let mut func: ItemFn = parse_quote! {
            /// Doc.
            #[cohort::http(GET, "/a")]
            #[command(service = "a")]
            async fn f() {}
        };
        let siblings = Siblings::take(&mut func);
        assert_eq!(siblings.http.len(), 1);
        assert_eq!(siblings.commands.len(), 1);
        assert_eq!(func.attrs.len(), 1);
    }
}
