//! The error path. The `compile_error!` goes next to the user's item, unchanged, so that IDEs keep
//! working, and the names the expansion would have defined are still defined where that can be
//! done, so that the user sees this one error rather than one more at every use of the item.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{DeriveInput, ItemFn};

use crate::ast::{Handler, Kind};
use crate::expand;
use crate::valid::CommandSpec;

/// Something that is not a function, as written.
pub fn item(item: TokenStream, error: syn::Error) -> TokenStream {
    let error = error.to_compile_error();
    quote!(#error #item)
}

/// A command's function, and its command type when the signature is sound (the error is then in
/// the options): `ctx.call::<f>(...)` elsewhere keeps type-checking.
pub fn command(func: &ItemFn, error: syn::Error) -> TokenStream {
    let command_type = Handler::from_syn(func, Kind::Command)
        .ok()
        .filter(|handler| handler.validate().is_ok())
        .map(|handler| expand::command_type(&handler, &CommandSpec::default()));
    let function = function(func, error);
    quote!(#function #command_type)
}

/// The function, which nothing calls until the error is fixed.
pub fn function(func: &ItemFn, error: syn::Error) -> TokenStream {
    let error = error.to_compile_error();
    quote! {
        #error
        #[allow(dead_code)]
        #func
    }
}

/// A derive cannot repeat the type; it implements `Event` when the type allows, so that uses of
/// the event do not fail too.
pub fn event(input: &DeriveInput, error: syn::Error) -> TokenStream {
    let error = error.to_compile_error();
    let event_impl = input
        .generics
        .params
        .is_empty()
        .then(|| expand::event_impl(&input.ident, ""));
    quote!(#error #event_impl)
}
