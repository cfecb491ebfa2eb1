//! Sessions: data about one HTTP client, kept in the shared state store under a random id.
//!
//! The HTTP layer reads the id from the `cohort_session` cookie and sends it with the command; the
//! instance that executes reads and writes the data in the store; a reply header tells the HTTP
//! layer to set or clear the cookie. No instance keeps session data in memory, so a session works
//! whichever instance runs the next command.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Error;
use crate::message::{Metadata, random_hex};
use crate::state::State;
use crate::state::spi::StateStore;

/// Bytes of randomness in a session id: 256 bits, as 64 hex digits.
pub(crate) const SESSION_ID_BYTES: usize = 32;

/// The session entry that holds the signed-in [`Principal`]. Handlers cannot write it with
/// [`Session::insert`]: only [`Session::sign_in`] can, so that it always comes with a fresh id.
const PRINCIPAL: &str = "cohort.principal";

/// The prefix of the session entries that are Cohort's own.
const RESERVED: &str = "cohort.";

/// Whether `id` looks like an id Cohort issued. Anything else from a cookie is ignored.
pub(crate) fn is_valid_id(id: &str) -> bool {
    id.len() == SESSION_ID_BYTES * 2 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Who signed in to a session, and their roles: what [`Session::sign_in`] recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The name the application signed the user in as, such as a username.
    pub name: String,
    /// The roles given at sign-in, such as `admin`.
    pub roles: Vec<String>,
}

impl Principal {
    /// Whether the principal was given `role` at sign-in.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// The area of the store the sessions live in: their keys are `{prefix:session}:...`.
pub(crate) const SESSIONS: &str = "session";

/// The session of the current caller. Get it with `ctx.session()`.
///
/// Each write renews the session's time to live (`COHORT_SESSION_TTL`, default 24 h).
#[derive(Debug)]
pub struct Session {
    state: State,
    ttl: Duration,
    cell: Arc<SessionCell>,
}

impl Session {
    pub(crate) fn new(
        store: Arc<dyn StateStore>,
        namespace: Arc<str>,
        ttl: Duration,
        cell: Arc<SessionCell>,
    ) -> Self {
        Session {
            state: State::new(store, namespace),
            ttl,
            cell,
        }
    }

    /// The session id, if the caller has a session.
    pub fn id(&self) -> Option<String> {
        self.cell.id()
    }

    /// Reads the value stored under `name` in the session.
    pub async fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Error> {
        let Some(id) = self.id() else { return Ok(None) };
        let data: Option<Map<String, Value>> = self.state.get(&id).await?;
        match data.and_then(|mut data| data.remove(name)) {
            None => Ok(None),
            Some(value) => serde_json::from_value(value).map(Some).map_err(|e| {
                Error::internal(format!("session value `{name}` has another shape: {e}"))
            }),
        }
    }

    /// Stores `value` under `name`, creating the session (and its cookie) if there is none.
    /// Names starting with `cohort.` are Cohort's own and refused.
    pub async fn insert<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<(), Error> {
        refuse_reserved(name)?;
        let value = serde_json::to_value(value)
            .map_err(|e| Error::internal(format!("cannot encode session value `{name}`: {e}")))?;
        let id = self.cell.id_for_write();
        let data = self
            .state
            .update_with_ttl(&id, self.ttl, |data: Option<Map<String, Value>>| {
                let mut data = data.unwrap_or_default();
                data.insert(name.to_owned(), value.clone());
                Ok(data)
            })
            .await?;
        self.keep_indexed(&id, &data).await
    }

    /// Removes `name` from the session. Names starting with `cohort.` are Cohort's own and refused.
    pub async fn remove(&self, name: &str) -> Result<(), Error> {
        refuse_reserved(name)?;
        let Some(id) = self.id() else { return Ok(()) };
        if self.state.get::<Map<String, Value>>(&id).await?.is_none() {
            return Ok(());
        }
        let data = self
            .state
            .update_with_ttl(&id, self.ttl, |data: Option<Map<String, Value>>| {
                let mut data = data.unwrap_or_default();
                data.remove(name);
                Ok(data)
            })
            .await?;
        self.keep_indexed(&id, &data).await
    }

    /// Moves the session's data to a new id and sends the client the new cookie. Call it on any
    /// change of privilege, so that an id an attacker planted before it is worth nothing after it
    /// ([`Session::sign_in`] does).
    pub async fn renew(&self) -> Result<(), Error> {
        let (id, data) = self.rotate(|_| {}).await?;
        match principal_of(&data) {
            Some(principal) => self.index_pruned(&principal.name, &id).await,
            None => Ok(()),
        }
    }

    /// Signs the caller in as `name` with `roles`: the session (created if there is none) moves to
    /// a new id, so that an id known before the sign-in is worth nothing after it, and records the
    /// [`Principal`], which the guards of [`cohort::guard`](crate::guard) check. The session is
    /// also indexed under `name`, for [`Session::revoke_all`].
    pub async fn sign_in(&self, name: &str, roles: &[&str]) -> Result<(), Error> {
        if name.is_empty() {
            return Err(Error::internal(
                "cannot sign in with an empty principal name",
            ));
        }
        let principal = Principal {
            name: name.to_owned(),
            roles: roles.iter().map(|&role| role.to_owned()).collect(),
        };
        let value = serde_json::to_value(&principal)
            .map_err(|e| Error::internal(format!("cannot encode the principal: {e}")))?;
        let (id, _) = self
            .rotate(|data| {
                data.insert(PRINCIPAL.to_owned(), value);
            })
            .await?;
        self.index_pruned(name, &id).await
    }

    /// The principal signed in to this session, if any; read from the store once per command.
    pub async fn principal(&self) -> Result<Option<Principal>, Error> {
        if let Some(known) = self.cell.principal() {
            return Ok(known);
        }
        let principal = self.get(PRINCIPAL).await?;
        self.cell.keep_principal(&principal);
        Ok(principal)
    }

    /// Signs the caller's principal out of every session it has, on every device, this one
    /// included ("log out everywhere"); a session nobody signed in to is just destroyed.
    pub async fn sign_out_everywhere(&self) -> Result<(), Error> {
        if let Some(principal) = self.principal().await? {
            self.revoke_all(&principal.name).await?;
        }
        self.destroy().await
    }

    /// Deletes every session `principal` is signed in to, and returns how many there were: after a
    /// password change, say, or to lock an account out. The caller's own cookie is cleared when its
    /// session is one of them.
    pub async fn revoke_all(&self, principal: &str) -> Result<usize, Error> {
        let ids: Vec<String> = self
            .state
            .get(&index_key(principal))
            .await?
            .unwrap_or_default();
        let mut revoked = 0;
        for id in &ids {
            if self.state.delete(id).await? {
                revoked += 1;
            }
        }
        // Only the revoked leave the index: a session signed in meanwhile must stay revocable.
        self.index(principal, None, &ids).await?;
        if self.id().is_some_and(|own| ids.contains(&own)) {
            self.cell.clear();
        }
        Ok(revoked)
    }

    /// Deletes the session and clears the client's cookie (log out).
    pub async fn destroy(&self) -> Result<(), Error> {
        if let Some(id) = self.id() {
            self.state.delete(&id).await?;
        }
        self.cell.clear();
        Ok(())
    }

    /// Moves the session's data, changed by `change`, to a new id and deletes the old one; returns
    /// the new id and the data.
    async fn rotate(
        &self,
        change: impl FnOnce(&mut Map<String, Value>),
    ) -> Result<(String, Map<String, Value>), Error> {
        let old = self.id();
        let mut data = match &old {
            Some(old) => self.state.get::<Map<String, Value>>(old).await?,
            None => None,
        }
        .unwrap_or_default();
        change(&mut data);
        let new = self.cell.replace_id();
        self.state.put_with_ttl(&new, &data, self.ttl).await?;
        if let Some(old) = old {
            self.state.delete(&old).await?;
        }
        Ok((new, data))
    }

    /// Adds `id` to the sessions of `principal`, and drops the ones that expired or were deleted.
    async fn index_pruned(&self, principal: &str, id: &str) -> Result<(), Error> {
        let known: Vec<String> = self
            .state
            .get(&index_key(principal))
            .await?
            .unwrap_or_default();
        let mut gone = Vec::new();
        for other in known.into_iter().filter(|other| other != id) {
            if self.state.get::<Value>(&other).await?.is_none() {
                gone.push(other);
            }
        }
        self.index(principal, Some(id), &gone).await
    }

    /// Adds `id` to the sessions of `principal` and removes `gone`. The index is written with the
    /// session's time to live whenever a session of the principal is, so that it lives as long as
    /// the newest of them and never loses a live one.
    async fn index(&self, principal: &str, id: Option<&str>, gone: &[String]) -> Result<(), Error> {
        self.state
            .update_with_ttl(
                &index_key(principal),
                self.ttl,
                |ids: Option<Vec<String>>| {
                    let mut ids = ids.unwrap_or_default();
                    ids.retain(|other| !gone.contains(other));
                    if let Some(id) = id.filter(|id| !ids.iter().any(|other| other == id)) {
                        ids.push(id.to_owned());
                    }
                    Ok(ids)
                },
            )
            .await?;
        Ok(())
    }

    /// A write renewed the session's time to live: the index of its principal must live as long.
    async fn keep_indexed(&self, id: &str, data: &Map<String, Value>) -> Result<(), Error> {
        match principal_of(data) {
            Some(principal) => self.index(&principal.name, Some(id), &[]).await,
            None => Ok(()),
        }
    }
}

/// The key of the index of a principal's sessions; session ids are hex, so it meets none of them.
fn index_key(principal: &str) -> String {
    format!("principal:{principal}")
}

fn principal_of(data: &Map<String, Value>) -> Option<Principal> {
    serde_json::from_value(data.get(PRINCIPAL)?.clone()).ok()
}

fn refuse_reserved(name: &str) -> Result<(), Error> {
    if name.starts_with(RESERVED) {
        return Err(Error::internal(format!(
            "the session entry `{name}` is reserved: names starting with `{RESERVED}` are Cohort's own; use `sign_in` to set the principal"
        )));
    }
    Ok(())
}

/// The session id of one command, and what the command did to it, for the reply headers.
#[derive(Debug, Default)]
pub(crate) struct SessionCell {
    inner: Mutex<Effects>,
}

#[derive(Debug, Default)]
struct Effects {
    id: Option<String>,
    /// The client must be sent this id as its cookie.
    set: bool,
    /// The client's cookie must be cleared.
    cleared: bool,
    /// The principal as read from the store, once read: a guard and its handler ask for it in the
    /// same command, and one read is enough. Forgotten when the id changes.
    principal: Option<Option<Principal>>,
}

impl SessionCell {
    pub(crate) fn new(id: Option<String>) -> Self {
        SessionCell {
            inner: Mutex::new(Effects {
                id,
                ..Effects::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Effects> {
        // Plain data, never left half-written: a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn id(&self) -> Option<String> {
        self.lock().id.clone()
    }

    /// The id to write under, created if there is none. The cookie is sent again either way,
    /// so that its Max-Age follows the session's TTL, which every write renews.
    fn id_for_write(&self) -> String {
        let mut effects = self.lock();
        let id = effects
            .id
            .get_or_insert_with(|| random_hex(SESSION_ID_BYTES))
            .clone();
        effects.set = true;
        effects.cleared = false;
        id
    }

    fn replace_id(&self) -> String {
        let mut effects = self.lock();
        let id = random_hex(SESSION_ID_BYTES);
        effects.id = Some(id.clone());
        effects.set = true;
        effects.cleared = false;
        effects.principal = None;
        id
    }

    fn clear(&self) {
        let mut effects = self.lock();
        effects.id = None;
        effects.set = false;
        effects.cleared = true;
        effects.principal = None;
    }

    fn principal(&self) -> Option<Option<Principal>> {
        self.lock().principal.clone()
    }

    fn keep_principal(&self, principal: &Option<Principal>) {
        self.lock().principal = Some(principal.clone());
    }

    /// Takes over what a called command did to the session.
    pub(crate) fn absorb(&self, reply: &Metadata) {
        let mut effects = self.lock();
        if let Some(id) = &reply.session_set {
            effects.id = Some(id.clone());
            effects.set = true;
            effects.cleared = false;
        } else if reply.session_clear {
            effects.id = None;
            effects.set = false;
            effects.cleared = true;
        }
    }

    /// Puts what this command did to the session into its reply headers.
    pub(crate) fn write_to(&self, reply: &mut Metadata) {
        let effects = self.lock();
        if effects.set {
            reply.session_set = effects.id.clone();
        }
        reply.session_clear = effects.cleared;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;

    fn session(cell: Arc<SessionCell>) -> Session {
        session_in(Arc::new(MemoryStore::new()), cell)
    }

    /// A session of a client of its own, in `store`.
    fn session_in(store: Arc<MemoryStore>, cell: Arc<SessionCell>) -> Session {
        Session::new(store, "t:session".into(), Duration::from_secs(60), cell)
    }

    fn new_client(store: &Arc<MemoryStore>) -> Session {
        session_in(store.clone(), Arc::new(SessionCell::new(None)))
    }

    #[tokio::test]
    async fn first_insert_creates_a_session_and_asks_for_the_cookie() {
        let cell = Arc::new(SessionCell::new(None));
        let session = session(cell.clone());
        session.insert("user", "alice").await.expect("insert");
        let id = session.id().expect("created");
        assert!(is_valid_id(&id));
        assert_eq!(
            session.get::<String>("user").await.expect("get").as_deref(),
            Some("alice")
        );
        let mut reply = Metadata::default();
        cell.write_to(&mut reply);
        assert_eq!(reply.session_set, Some(id));
    }

    #[tokio::test]
    async fn renew_moves_the_data_to_a_new_id() {
        let cell = Arc::new(SessionCell::new(None));
        let session = session(cell.clone());
        session.insert("cart", &3).await.expect("insert");
        let old = session.id().expect("id");
        session.renew().await.expect("renew");
        assert_ne!(session.id(), Some(old.clone()));
        assert_eq!(session.get::<u32>("cart").await.expect("get"), Some(3));
        assert_eq!(session.state.get::<Value>(&old).await.expect("get"), None);
    }

    #[tokio::test]
    async fn destroy_clears_the_cookie() {
        let cell = Arc::new(SessionCell::new(Some(random_hex(SESSION_ID_BYTES))));
        let session = session(cell.clone());
        session.insert("user", "bob").await.expect("insert");
        session.destroy().await.expect("destroy");
        assert_eq!(session.get::<String>("user").await.expect("get"), None);
        let mut reply = Metadata::default();
        cell.write_to(&mut reply);
        assert!(reply.session_clear && reply.session_set.is_none());
    }

    #[tokio::test]
    async fn sign_in_rotates_the_id_and_records_the_principal() {
        let cell = Arc::new(SessionCell::new(None));
        let session = session(cell.clone());
        session.insert("cart", &3).await.expect("insert");
        let before = session.id().expect("id");
        session.sign_in("alice", &["admin"]).await.expect("sign in");
        let after = session.id().expect("id");
        assert_ne!(before, after);
        assert_eq!(
            session.state.get::<Value>(&before).await.expect("get"),
            None
        );
        let principal = session.principal().await.expect("read").expect("signed in");
        assert_eq!(principal.name, "alice");
        assert!(principal.has_role("admin") && !principal.has_role("root"));
        assert_eq!(session.get::<u32>("cart").await.expect("get"), Some(3));
        let mut reply = Metadata::default();
        cell.write_to(&mut reply);
        assert_eq!(reply.session_set, Some(after));
    }

    #[tokio::test]
    async fn the_principal_entry_is_reserved() {
        let session = session(Arc::new(SessionCell::new(None)));
        let admin = Principal {
            name: "mallory".into(),
            roles: vec!["admin".into()],
        };
        let err = session
            .insert(PRINCIPAL, &admin)
            .await
            .expect_err("refused");
        assert!(err.message().contains("reserved"), "{err}");
        assert!(session.remove(PRINCIPAL).await.is_err());
        assert_eq!(session.principal().await.expect("read"), None);
    }

    #[tokio::test]
    async fn revoke_all_deletes_every_session_of_the_principal_only() {
        let store = Arc::new(MemoryStore::new());
        let (laptop, phone, bob) = (new_client(&store), new_client(&store), new_client(&store));
        laptop.sign_in("alice", &[]).await.expect("sign in");
        phone.sign_in("alice", &[]).await.expect("sign in");
        bob.sign_in("bob", &[]).await.expect("sign in");
        phone.insert("theme", "dark").await.expect("insert");
        laptop.sign_out_everywhere().await.expect("sign out");
        assert!(laptop.id().is_none(), "its own cookie is cleared");
        assert_eq!(phone.principal().await.expect("read"), None);
        assert_eq!(phone.get::<String>("theme").await.expect("read"), None);
        assert_eq!(
            bob.principal()
                .await
                .expect("read")
                .map(|p| p.name)
                .as_deref(),
            Some("bob")
        );
        assert_eq!(bob.revoke_all("alice").await.expect("revoke"), 0);
    }

    #[tokio::test]
    async fn the_index_forgets_sessions_that_are_gone() {
        let store = Arc::new(MemoryStore::new());
        let first = new_client(&store);
        first.sign_in("alice", &[]).await.expect("sign in");
        first.destroy().await.expect("log out");
        let second = new_client(&store);
        second.sign_in("alice", &[]).await.expect("sign in");
        let ids: Vec<String> = second
            .state
            .get(&index_key("alice"))
            .await
            .expect("read")
            .expect("indexed");
        assert_eq!(ids, vec![second.id().expect("id")]);
    }
}
