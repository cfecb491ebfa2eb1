//! The error path. The `compile_error!` goes next to the user's item, unchanged, so that IDEs keep
//! working, and next to what the expansion could still make of it (`salvaged`): the names it would
//! have defined stay defined, so that the user sees this one error rather than one more at every
//! use of the item. What can be salvaged is the expansion's to say; this module only pastes.

use proc_macro2::TokenStream;
use quote::quote;
use syn::ItemFn;

/// Something that is not a function, as written.
pub fn item(item: TokenStream, error: syn::Error) -> TokenStream {
    let error = error.to_compile_error();
    quote!(#error #item)
}

/// The function, which nothing calls until the error is fixed, and what was salvaged of its
/// expansion.
pub fn function(func: &ItemFn, error: syn::Error, salvaged: Option<TokenStream>) -> TokenStream {
    let error = error.to_compile_error();
    quote! {
        #error
        #[allow(dead_code)]
        #func
        #salvaged
    }
}

/// A derive cannot repeat the type: only what was salvaged of its expansion goes with the error.
pub fn derive(error: syn::Error, salvaged: Option<TokenStream>) -> TokenStream {
    let error = error.to_compile_error();
    quote!(#error #salvaged)
}
