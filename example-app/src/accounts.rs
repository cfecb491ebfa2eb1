//! Accounts and sessions: sign up, log in (a session cookie), who am I, log out, here or
//! everywhere.
//!
//! The session lives in the shared store, so a user who logged in through one instance is known to
//! every other. The usernames the shop's settings list in `admins` (`SHOP_ADMINS`, comma-separated)
//! get the `admin` role when they log in.

use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use cohort::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;
use tokio::sync::Semaphore;

use crate::settings::ShopConfig;

/// The role that may set the stock.
pub const ADMIN: &str = "admin";

/// What the password of an unknown username is checked against, so that a log-in takes as long
/// whether the username exists or not and its timing does not tell which usernames exist. A
/// well-formed hash with `Argon2::default()`'s parameters, of no password anyone knows.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$bUPfi3cPNx099apbfvFlDw$H1JTxr+txIO+v78ZeR42UX3cne33hBv/PWpNiKCG/eY";

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct Credentials {
    /// 3 to 32 characters.
    #[schemars(length(min = 3, max = 32))]
    pub username: String,
    /// Not empty; at most 256 characters, since hashing a longer one would only cost.
    #[schemars(length(min = 1, max = 256))]
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

/// Logs in: checks the password and signs the session in (the `cohort_session` cookie, with a
/// new id), with the `admin` role for the usernames `SHOP_ADMINS` lists.
#[command(service = "accounts", version = 1)]
#[http(POST, "/sessions")]
pub async fn log_in(ctx: Ctx, input: Credentials) -> Result<User, Error> {
    let account: Option<Account> = ctx.state().get(&user_key(&input.username)).await?;
    // The hash is checked whether the account exists or not: the time taken tells nothing.
    let hash = account
        .as_ref()
        .map_or(DUMMY_HASH, |account| &account.password_hash);
    let verified = verify_password(input.password, hash.to_owned()).await?;
    let Some(account) = account.filter(|_| verified) else {
        return Err(Error::unauthorized("unknown username or wrong password"));
    };
    let admins = &ctx.config::<ShopConfig>().admins;
    let roles: &[&str] = if admins.contains(&account.username) {
        &[ADMIN]
    } else {
        &[]
    };
    ctx.session().sign_in(&account.username, roles).await?;
    Ok(User {
        username: account.username,
    })
}

/// The logged-in user.
#[command(service = "accounts", version = 1, guard = cohort::guard::signed_in)]
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

/// Logs the user out of every session, on every device, this one included.
#[command(service = "accounts", version = 1, guard = cohort::guard::signed_in)]
#[http(DELETE, "/sessions/all", status = 204)]
pub async fn log_out_everywhere(ctx: Ctx) -> Result<(), Error> {
    ctx.session().sign_out_everywhere().await
}

/// The user of the caller's session, or a 401.
pub async fn current_user(ctx: &Ctx) -> Result<User, Error> {
    let principal = cohort::guard::principal(ctx).await?;
    Ok(User {
        username: principal.name,
    })
}

/// Only commands that have a caller in a role guard with it.
pub async fn admin(ctx: &Ctx) -> Result<(), Error> {
    cohort::guard::has_role(ctx, ADMIN).await
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

/// Runs `work` off the async threads, one at a time a core: each Argon2 run holds 19 MiB, and
/// more at once would not finish sooner, so a burst of log-ins waits instead of growing memory.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    static PERMITS: OnceLock<Semaphore> = OnceLock::new();
    let permits = PERMITS.get_or_init(|| Semaphore::new(hashes_at_once()));
    let _permit = permits
        .acquire()
        .await
        .map_err(|e| Error::internal(format!("password hashing stopped: {e}")))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::internal(format!("password hashing failed: {e}")))?
}

/// How many passwords are hashed at once: one a core.
fn hashes_at_once() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::{Algorithm, Params};

    #[tokio::test]
    async fn no_more_passwords_are_hashed_at_once_than_there_are_cores() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut hashes = tokio::task::JoinSet::new();
        for _ in 0..hashes_at_once() * 3 {
            let (running, most) = (running.clone(), most.clone());
            hashes.spawn(blocking(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(20));
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }));
        }
        while let Some(result) = hashes.join_next().await {
            result.expect("runs").expect("runs");
        }
        assert_eq!(most.load(Ordering::SeqCst), hashes_at_once());
    }

    #[test]
    fn the_dummy_hash_costs_what_a_real_one_does() {
        let dummy = PasswordHash::new(DUMMY_HASH).expect("a well-formed hash");
        let real_hash = Argon2::default()
            .hash_password(b"pw", &SaltString::generate(&mut OsRng))
            .expect("hashes")
            .to_string();
        let real = PasswordHash::new(&real_hash).expect("well-formed");
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.algorithm, Algorithm::default().ident());
        assert_eq!(
            Params::try_from(&dummy).expect("params"),
            Params::try_from(&real).expect("params")
        );
        assert_eq!(dummy.version, real.version);
        assert_eq!(dummy.hash.map(|h| h.len()), real.hash.map(|h| h.len()));
    }

    #[tokio::test]
    async fn no_password_matches_the_dummy_hash() {
        for password in ["", "password", "admin"] {
            let verified = verify_password(password.to_owned(), DUMMY_HASH.to_owned()).await;
            assert!(!verified.expect("runs"), "{password}");
        }
    }
}
