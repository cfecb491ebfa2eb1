//! The caller's side of commands: one subscription per connection takes the replies to every
//! request this instance sends, and the progress messages that tell it the command still runs.
//!
//! async-nats' own request multiplexer takes the first message on a reply subject and forgets the
//! request, so it cannot hear progress. This one works the same way (one wildcard subscription
//! on an inbox prefix, a map from each request's token to the request waiting for it), but keeps
//! a request waiting through its progress messages, and tells it when they stop. Its reply
//! subjects, `{inbox}.{token}.cohort-progress`, ask for the progress ([`PROGRESS_TOKEN`]).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::{Client, Subject, SubscribeError, Subscriber};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tokio::time::{Instant, timeout_at};

use super::signing::Signer;
use super::wire::PROGRESS_TOKEN;
use crate::message::header;

/// How long a caller waits without a word from the instance running its command before it takes
/// that instance as lost: two progress messages may be late or lost, not three.
pub(super) const SILENCE_LIMIT: Duration = Duration::from_millis(2500);

/// The requests of one connection that wait for their reply.
pub(super) struct Replies {
    /// `{inbox}.`: a request's reply subject is this, its token, `.` and [`PROGRESS_TOKEN`].
    prefix: String,
    next_token: AtomicU64,
    waiting: Mutex<HashMap<u64, Waiting, BuildHasherDefault<TokenHasher>>>,
    /// Checks progress messages; the request checks its reply itself, off this one task.
    signer: Signer,
}

/// One request that waits for its reply.
struct Waiting {
    reply: oneshot::Sender<async_nats::Message>,
    /// When its last progress message came.
    heard: Option<Instant>,
}

/// Why a request got no reply.
pub(super) enum Unanswered {
    /// Its deadline passed.
    Deadline,
    /// Nothing came for [`SILENCE_LIMIT`]: neither the reply nor progress.
    Silent,
    /// The connection was closed for good.
    Closed,
}

impl Replies {
    /// Subscribes to the replies of `client`'s requests and delivers them until the returned
    /// [`Delivering`] drops.
    pub(super) async fn start(
        client: &Client,
        signer: Signer,
    ) -> Result<(Arc<Replies>, Delivering), SubscribeError> {
        let prefix = format!("{}.", shortened(client.new_inbox()));
        let subscription = client
            .subscribe(format!("{prefix}*.{PROGRESS_TOKEN}"))
            .await?;
        let replies = Arc::new(Replies {
            prefix,
            next_token: AtomicU64::new(0),
            waiting: Mutex::default(),
            signer,
        });
        let delivering = tokio::spawn(deliver(replies.clone(), subscription));
        Ok((replies, Delivering(delivering.abort_handle())))
    }

    /// A reply subject of its own for a new request, and the request's wait for it. The request
    /// must be sent after this, so that no reply can come before it is expected.
    pub(super) fn expect(&self) -> (Subject, Pending<'_>) {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let mut subject = String::with_capacity(self.prefix.len() + 21 + PROGRESS_TOKEN.len());
        subject.push_str(&self.prefix);
        subject.push_str(itoa::Buffer::new().format(token));
        subject.push('.');
        subject.push_str(PROGRESS_TOKEN);
        let (sender, reply) = oneshot::channel();
        let waiting = Waiting {
            reply: sender,
            heard: None,
        };
        self.lock().insert(token, waiting);
        let pending = Pending {
            replies: self,
            token,
            reply,
            settled: false,
        };
        (Subject::from(subject), pending)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Waiting, BuildHasherDefault<TokenHasher>>> {
        // A panic cannot leave the map half-changed: every change is one call on it.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `message` to the request it answers, or notes the progress it reports.
    fn deliver(&self, message: async_nats::Message) {
        let Some(token) = message
            .subject
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_suffix(PROGRESS_TOKEN))
            .and_then(|rest| rest.strip_suffix('.'))
            .and_then(|token| token.parse::<u64>().ok())
        else {
            return;
        };
        if is_progress(&message) {
            let checked = self.signer.verify(
                message.subject.as_str(),
                message.headers.as_ref(),
                &message.payload,
            );
            if let Err(rejection) = checked {
                // Taken, it would keep a request waiting for an instance that may be gone.
                tracing::warn!(subject = %message.subject, reason = %rejection, "refused a progress message");
                return;
            }
            let now = Instant::now();
            if let Some(waiting) = self.lock().get_mut(&token) {
                waiting.heard = Some(now);
            }
            return;
        }
        // Outside the lock: the send wakes the request.
        let waiting = self.lock().remove(&token);
        if let Some(waiting) = waiting {
            // The request may have given up meanwhile: then nobody needs the reply.
            let _ = waiting.reply.send(message);
        }
    }

    /// When the request `token` last heard progress.
    fn heard(&self, token: u64) -> Option<Instant> {
        self.lock().get(&token).and_then(|waiting| waiting.heard)
    }
}

/// The inbox `inbox` (the client's inbox prefix, `.` and a 22-character NUID) with 72 random bits
/// in 12 characters for its NUID: a reply subject is signed twice per command and sent twice
/// (with the request, and as the reply's subject), and the shorter one keeps a plain reply's
/// signed form within three SHA-256 blocks.
fn shortened(inbox: String) -> String {
    let prefix = inbox
        .rsplit_once('.')
        .map_or(inbox.as_str(), |(prefix, _nuid)| prefix);
    let mut id = [0u8; 9];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut id);
    format!("{prefix}.{}", URL_SAFE_NO_PAD.encode(id))
}

/// Delivers the messages of `subscription` until the connection closes; then every request still
/// waiting learns that no reply will come.
async fn deliver(replies: Arc<Replies>, mut subscription: Subscriber) {
    while let Some(message) = subscription.next().await {
        replies.deliver(message);
    }
    replies.lock().clear();
}

/// Stops delivering replies when dropped, which ends the subscription and lets the connection
/// close. The broker drops it, once no request waits: each waiting request borrows the broker.
pub(super) struct Delivering(AbortHandle);

impl Drop for Delivering {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether `message` is a progress message rather than a reply: no body, `Cohort-Status: 100`.
fn is_progress(message: &async_nats::Message) -> bool {
    // The body first: every reply but NATS' "no responders" has one, and it costs nothing to test.
    message.payload.is_empty()
        && message.headers.as_ref().is_some_and(|headers| {
            headers.iter().any(|(name, values)| {
                let name: &str = name.as_ref();
                name == header::STATUS && values.iter().any(|value| value.as_str() == "100")
            })
        })
}

/// A request waiting for its reply. Dropped before it has one, it is no longer expected.
pub(super) struct Pending<'a> {
    replies: &'a Replies,
    token: u64,
    reply: oneshot::Receiver<async_nats::Message>,
    /// Whether it is out of the map already.
    settled: bool,
}

impl Pending<'_> {
    /// Waits for the reply until `deadline`, or until the executing instance has been silent
    /// for [`SILENCE_LIMIT`], counted from `sent` and then from each progress message.
    ///
    /// One timer, as a plain timeout would have: it ends at the deadline or at the silence limit,
    /// whichever comes first, and only a command that runs longer than the limit looks at its
    /// progress and sets the timer again.
    pub(super) async fn wait(
        mut self,
        sent: Instant,
        deadline: Instant,
    ) -> Result<async_nats::Message, Unanswered> {
        let mut heard = sent;
        loop {
            let give_up = (heard + SILENCE_LIMIT).min(deadline);
            match timeout_at(give_up, &mut self.reply).await {
                Ok(reply) => {
                    self.settled = true;
                    // The sender went without a reply: the connection closed for good.
                    return reply.map_err(|_closed| Unanswered::Closed);
                }
                Err(_) if give_up == deadline => return Err(Unanswered::Deadline),
                Err(_) => match self.replies.heard(self.token) {
                    Some(progress) if progress > heard => heard = progress,
                    _ => return Err(Unanswered::Silent),
                },
            }
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.replies.lock().remove(&self.token);
        }
    }
}

/// Hashes the tokens, a counter, by one multiplication: both the low bits that pick a bucket and
/// the high bits that the table compares first come out spread.
#[derive(Default)]
struct TokenHasher(u64);

impl Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(FIBONACCI);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(FIBONACCI);
    }
}

/// 2^64 divided by the golden ratio: Fibonacci hashing.
const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::HeaderMap;
    use bytes::Bytes;

    fn message(subject: &str, status: Option<&str>, payload: &'static [u8]) -> async_nats::Message {
        let headers = status.map(|status| {
            let mut headers = HeaderMap::new();
            headers.insert(header::STATUS, status);
            headers
        });
        async_nats::Message {
            subject: Subject::from(subject),
            reply: None,
            payload: Bytes::from_static(payload),
            headers,
            status: None,
            description: None,
            length: 0,
        }
    }

    fn replies() -> Replies {
        Replies {
            prefix: "_INBOX.test.".to_owned(),
            next_token: AtomicU64::new(0),
            waiting: Mutex::default(),
            signer: Signer::default(),
        }
    }

    #[test]
    fn only_an_empty_message_with_status_100_is_progress() {
        assert!(is_progress(&message("s", Some("100"), b"")));
        assert!(!is_progress(&message("s", Some("200"), b"")));
        assert!(!is_progress(&message("s", Some("100"), b"{}")));
        assert!(!is_progress(&message("s", None, b"")));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_keeps_a_request_waiting_until_its_reply() {
        let replies = replies();
        let (subject, pending) = replies.expect();
        let sent = Instant::now();
        let waiting = pending.wait(sent, sent + SILENCE_LIMIT * 10);
        let talking = async {
            for _ in 0..5 {
                tokio::time::sleep(SILENCE_LIMIT / 2).await;
                replies.deliver(message(&subject, Some("100"), b""));
            }
            replies.deliver(message(&subject, Some("200"), b"{}"));
        };
        let (reply, ()) = tokio::join!(waiting, talking);
        let Ok(reply) = reply else {
            panic!("a request that hears progress waits for its reply")
        };
        assert_eq!(reply.payload.as_ref(), b"{}");
        assert!(
            sent.elapsed() >= SILENCE_LIMIT * 2,
            "it waited past the limit"
        );
        assert!(
            replies.lock().is_empty(),
            "the answered request is forgotten"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn silence_ends_the_wait_at_the_limit_after_the_last_progress() {
        let replies = replies();
        let (subject, pending) = replies.expect();
        let sent = Instant::now();
        let waiting = pending.wait(sent, sent + SILENCE_LIMIT * 10);
        let talking = async {
            tokio::time::sleep(SILENCE_LIMIT / 2).await;
            replies.deliver(message(&subject, Some("100"), b""));
        };
        let (outcome, ()) = tokio::join!(waiting, talking);
        assert!(matches!(outcome, Err(Unanswered::Silent)));
        assert_eq!(sent.elapsed(), SILENCE_LIMIT / 2 + SILENCE_LIMIT);
        assert!(
            replies.lock().is_empty(),
            "the abandoned request is forgotten"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_before_the_limit_is_a_timeout() {
        let replies = replies();
        let (_subject, pending) = replies.expect();
        let sent = Instant::now();
        let outcome = pending.wait(sent, sent + SILENCE_LIMIT / 5).await;
        assert!(matches!(outcome, Err(Unanswered::Deadline)));
        assert_eq!(sent.elapsed(), SILENCE_LIMIT / 5);
    }

    #[test]
    fn messages_for_no_request_are_dropped() {
        let replies = replies();
        let (_subject, _pending) = replies.expect();
        replies.deliver(message("_INBOX.test.7.cohort-progress", Some("200"), b"{}"));
        replies.deliver(message(
            "_INBOX.other.0.cohort-progress",
            Some("200"),
            b"{}",
        ));
        replies.deliver(message("_INBOX.test.x.cohort-progress", Some("100"), b""));
        replies.deliver(message("_INBOX.test.0", Some("200"), b"{}"));
        assert_eq!(replies.lock().len(), 1, "the request still waits");
    }

    #[test]
    fn reply_subjects_ask_for_progress() {
        let replies = replies();
        let (first, _a) = replies.expect();
        let (second, _b) = replies.expect();
        assert_eq!(first.as_str(), "_INBOX.test.0.cohort-progress");
        assert_eq!(second.as_str(), "_INBOX.test.1.cohort-progress");
        assert!(super::super::wire::asks_for_progress(&first));
    }

    #[test]
    fn a_shortened_inbox_keeps_its_prefix_and_is_new_each_time() {
        let nuid = "X".repeat(22);
        let one = shortened(format!("_INBOX.{nuid}"));
        let two = shortened(format!("_INBOX.{nuid}"));
        assert_eq!(one.len(), "_INBOX.".len() + 12, "{one}");
        assert!(one.starts_with("_INBOX.") && !one.contains(&nuid), "{one}");
        assert_ne!(one, two);
        let custom = shortened(format!("_I.shop.{nuid}"));
        assert!(
            custom.starts_with("_I.shop.") && custom.len() == 20,
            "{custom}"
        );
        let token = &one["_INBOX.".len()..];
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "one subject token: {token}"
        );
    }
}
