//! The attributes and the derive of Cohort. Use them through `cohort`, which re-exports them and
//! holds everything their expansion names (`cohort::__private`).
//!
//! Each macro goes parse (`ast`, `attr`) → validate (`valid`, which applies the naming rules of
//! `names`) → generate (`expand`); on error, `fallback` emits the user's item unchanged next to the
//! `compile_error!` and to what `expand` could salvage of the expansion.

mod ast;
mod attr;
mod expand;
mod fallback;
mod names;
mod valid;

use proc_macro::TokenStream;

/// `#[command(service = "...", version = 1, name = "...", timeout = "5s", description = "...")]`
/// on `async fn f(ctx: Ctx, input: In) -> Result<Out, E>`.
#[proc_macro_attribute]
pub fn command(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::command(args.into(), item.into()).into()
}

/// `#[http(POST, "/orders/{id}", status = 201)]`, stacked on a `#[command]` in either order.
#[proc_macro_attribute]
pub fn http(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::http(args.into(), item.into()).into()
}

/// `#[subscription(service = "...", name = "...", every_instance, start = "last:100")]` on
/// `async fn f(ctx: Ctx, event: Ev) -> Result<(), E>`.
#[proc_macro_attribute]
pub fn subscription(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::subscription(args.into(), item.into()).into()
}

/// `#[task(service = "...", every = "30s")]`, `cron = "0 3 * * *"` or `on_start`, on
/// `async fn f(ctx: Ctx) -> Result<(), E>`.
#[proc_macro_attribute]
pub fn task(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::task(args.into(), item.into()).into()
}

/// `#[derive(Event)]`, named by `#[event(name = "...")]` or the type's name in snake_case.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    expand::event(input.into()).into()
}
