//! Sessions: data about one HTTP client, kept in the shared state store under a random id.
//!
//! The HTTP layer reads the id from the `cohort_session` cookie and sends it with the command; the
//! instance that executes reads and writes the data in the store; a reply header tells the HTTP
//! layer to set or clear the cookie. No instance keeps session data in memory, so a session works
//! whichever instance runs the next command.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::Error;
use crate::message::{Metadata, random_hex};
use crate::state::State;
use crate::state::spi::StateStore;

/// Bytes of randomness in a session id: 256 bits, as 64 hex digits.
pub(crate) const SESSION_ID_BYTES: usize = 32;

/// Whether `id` looks like an id Cohort issued. Anything else from a cookie is ignored.
pub(crate) fn is_valid_id(id: &str) -> bool {
    id.len() == SESSION_ID_BYTES * 2 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

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
        namespace: String,
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
    pub async fn insert<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<(), Error> {
        let value = serde_json::to_value(value)
            .map_err(|e| Error::internal(format!("cannot encode session value `{name}`: {e}")))?;
        let id = self.cell.id_for_write();
        self.state
            .update_with_ttl(&id, self.ttl, |data: Option<Map<String, Value>>| {
                let mut data = data.unwrap_or_default();
                data.insert(name.to_owned(), value.clone());
                Ok(data)
            })
            .await?;
        Ok(())
    }

    /// Removes `name` from the session.
    pub async fn remove(&self, name: &str) -> Result<(), Error> {
        let Some(id) = self.id() else { return Ok(()) };
        if self.state.get::<Map<String, Value>>(&id).await?.is_none() {
            return Ok(());
        }
        self.state
            .update_with_ttl(&id, self.ttl, |data: Option<Map<String, Value>>| {
                let mut data = data.unwrap_or_default();
                data.remove(name);
                Ok(data)
            })
            .await?;
        Ok(())
    }

    /// Moves the session's data to a new id and sends the client the new cookie. Call it when the
    /// caller logs in, so an id an attacker planted before the login is worth nothing after it.
    pub async fn renew(&self) -> Result<(), Error> {
        let old = self.id();
        let data = match &old {
            Some(old) => self.state.get::<Map<String, Value>>(old).await?,
            None => None,
        };
        let new = self.cell.replace_id();
        self.state
            .put_with_ttl(&new, &data.unwrap_or_default(), self.ttl)
            .await?;
        if let Some(old) = old {
            self.state.delete(&old).await?;
        }
        Ok(())
    }

    /// Deletes the session and clears the client's cookie (log out).
    pub async fn destroy(&self) -> Result<(), Error> {
        if let Some(id) = self.id() {
            self.state.delete(&id).await?;
        }
        self.cell.clear();
        Ok(())
    }
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
        id
    }

    fn clear(&self) {
        let mut effects = self.lock();
        effects.id = None;
        effects.set = false;
        effects.cleared = true;
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
        Session::new(
            Arc::new(MemoryStore::new()),
            "t:session".into(),
            Duration::from_secs(60),
            cell,
        )
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
}
