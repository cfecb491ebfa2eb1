//! Access guards: checks a command passes before its handler runs, on the instance that executes
//! it, so that they hold for HTTP clients and direct broker callers alike.
//!
//! A guard is an `async fn(ctx: &Ctx) -> Result<(), Error>` named by the command:
//! `#[command(service = "orders", guard = cohort::guard::signed_in)]`. This module has the common
//! ones, and [`has_role`] to write a role check in one line.

use futures_util::future::BoxFuture;

use crate::context::Ctx;
use crate::error::Error;
use crate::session::Principal;

/// Passes when the caller's session is signed in ([`Session::sign_in`](crate::Session::sign_in));
/// otherwise a 401 `unauthorized` problem.
pub async fn signed_in(ctx: &Ctx) -> Result<(), Error> {
    principal(ctx).await.map(drop)
}

/// Passes when the caller's session is signed in with `role`; a 403 `forbidden` problem when it
/// is signed in without it, a 401 `unauthorized` one when it is not signed in. Write a guard of a
/// role in one line:
///
/// ```
/// use cohort::prelude::*;
///
/// async fn admin(ctx: &Ctx) -> Result<(), Error> {
///     cohort::guard::has_role(ctx, "admin").await
/// }
/// ```
pub async fn has_role(ctx: &Ctx, role: &str) -> Result<(), Error> {
    if principal(ctx).await?.has_role(role) {
        Ok(())
    } else {
        Err(Error::forbidden(format!("this needs the role `{role}`")))
    }
}

/// The principal signed in to the caller's session, or a 401 `unauthorized` problem: for a
/// handler that needs to know who the caller is.
pub async fn principal(ctx: &Ctx) -> Result<Principal, Error> {
    ctx.session()
        .principal()
        .await?
        .ok_or_else(|| Error::unauthorized("this needs a signed-in session: sign in first"))
}

/// What `guard = path` accepts: an `async fn(&Ctx) -> Result<(), Error>` whose future is `Send`
/// (any instance thread may run it). Implemented for every such function; not to be implemented
/// by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a guard",
    label = "not an `async fn(ctx: &Ctx) -> Result<(), Error>`",
    note = "a guard is written `async fn signed_in(ctx: &Ctx) -> Result<(), Error>`: it takes the context by reference and returns `Result<(), cohort::Error>`"
)]
pub trait Guard<'a> {
    /// Runs the check.
    fn check(self, ctx: &'a Ctx) -> BoxFuture<'a, Result<(), Error>>;
}

impl<'a, F, Fut> Guard<'a> for F
where
    F: FnOnce(&'a Ctx) -> Fut,
    Fut: Future<Output = Result<(), Error>> + Send + 'a,
{
    fn check(self, ctx: &'a Ctx) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self(ctx))
    }
}
