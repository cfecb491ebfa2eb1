//! Accounts and sessions: sign up, log in (a session cookie), who am I, log out.
//!
//! The session lives in the shared store, so a user who logged in through one instance is known to
//! every other.

use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use cohort::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The session entry that holds the logged-in username.
const SESSION_USER: &str = "user";

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct Credentials {
    /// 3 to 32 characters.
    pub username: String,
    pub password: String,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct User {
    pub username: String,
}

/// What is stored per account: never the password itself.
#[derive(Debug, Deserialize, Serialize)]
struct Account {
    username: String,
    password_hash: String,
}

/// Creates an account.
#[command(service = "accounts", version = 1)]
#[http(POST, "/accounts", status = 201)]
pub async fn create_account(ctx: Ctx, input: Credentials) -> Result<User, Error> {
    let length = input.username.chars().count();
    if !(3..=32).contains(&length) {
        return Err(Error::invalid(
            "username",
            "must be 3 to 32 characters long",
        ));
    }
    if input.password.is_empty() {
        return Err(Error::invalid("password", "must not be empty"));
    }
    let account = Account {
        password_hash: hash_password(input.password).await?,
        username: input.username,
    };
    if !ctx
        .state()
        .insert_new(&user_key(&account.username), &account)
        .await?
    {
        return Err(
            Error::conflict(format!("the username `{}` is taken", account.username))
                .with_code("username_taken"),
        );
    }
    Ok(User {
        username: account.username,
    })
}

/// Logs in: checks the password and starts a session (the `cohort_session` cookie).
#[command(service = "accounts", version = 1)]
#[http(POST, "/sessions")]
pub async fn log_in(ctx: Ctx, input: Credentials) -> Result<User, Error> {
    let account: Option<Account> = ctx.state().get(&user_key(&input.username)).await?;
    let Some(account) = account else {
        return Err(Error::unauthorized("unknown username or wrong password"));
    };
    if !verify_password(input.password, account.password_hash.clone()).await? {
        return Err(Error::unauthorized("unknown username or wrong password"));
    }
    let session = ctx.session();
    // A fresh id at log-in: an id planted before it is worth nothing after it.
    session.renew().await?;
    session.insert(SESSION_USER, &account.username).await?;
    Ok(User {
        username: account.username,
    })
}

/// The logged-in user.
#[command(service = "accounts", version = 1)]
#[http(GET, "/me")]
pub async fn me(ctx: Ctx) -> Result<User, Error> {
    current_user(&ctx).await
}

/// Logs out: the session is deleted and the cookie cleared.
#[command(service = "accounts", version = 1)]
#[http(DELETE, "/sessions", status = 204)]
pub async fn log_out(ctx: Ctx) -> Result<(), Error> {
    ctx.session().destroy().await
}

/// The user of the caller's session, or a 401.
pub async fn current_user(ctx: &Ctx) -> Result<User, Error> {
    match ctx.session().get::<String>(SESSION_USER).await? {
        Some(username) => Ok(User { username }),
        None => Err(Error::unauthorized("log in first: POST /sessions")),
    }
}

fn user_key(username: &str) -> String {
    format!("user:{username}")
}

/// Argon2 takes tens of milliseconds of CPU by design: off the async threads, so other commands
/// on this instance keep flowing meanwhile.
async fn hash_password(password: String) -> Result<String, Error> {
    blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| Error::internal(format!("cannot hash a password: {e}")))
    })
    .await
}

async fn verify_password(password: String, hash: String) -> Result<bool, Error> {
    blocking(move || {
        Ok(PasswordHash::new(&hash).is_ok_and(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        }))
    })
    .await
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::internal(format!("password hashing failed: {e}")))?
}
