//! Idempotency keys, as the IETF draft `Idempotency-Key` has them: a command sent again with the
//! same key and the same input gets the first reply instead of running again; with another input,
//! a 422; while the first still runs, a 409.
//!
//! The record of a key lives in the shared store, per command and caller (principal, else
//! session). The command's units of work are applied once per key as well, so a command whose
//! instance died after its unit committed, run again once the claim expired, replays the unit
//! instead of applying it twice.

use std::hash::{DefaultHasher, Hasher};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::message::{Message, Metadata, PROBLEM_JSON};
use crate::registry::CommandDescriptor;
use crate::runtime::{Runtime, problem_reply};
use crate::state::{decode, encode};

/// What is kept of a key: the input it came with, and the reply once there is one.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    /// A hash of the input, to tell a repeat from a reuse of the key.
    input: String,
    reply: Option<StoredReply>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredReply {
    status: u16,
    problem: bool,
    body: String,
}

/// A key this instance now runs the command for.
pub(crate) struct Claim {
    key: String,
    /// The scope of the command's units of work.
    scope: String,
    input: String,
}

/// What became of an attempt to claim a key.
pub(crate) enum Claimed {
    /// Run the command.
    Run(Claim),
    /// Do not: here is the reply (the first one, or why not).
    Reply(Box<Message>),
}

impl Claim {
    /// Claims the key of `msg` for `command` until its deadline, unless a record says otherwise.
    pub(crate) async fn take(
        runtime: &Runtime,
        command: &CommandDescriptor,
        msg: &Message,
        key: &str,
    ) -> Result<Claimed, Error> {
        let who = caller(&msg.meta);
        let scope = format!("idempotency:{}:{who}:{key}", command.name);
        let full = runtime.state_key(command.service, &scope);
        let input = fingerprint(&msg.payload);
        let running = encode(&Stored {
            input: input.clone(),
            reply: None,
        })?;
        // A claim lasts as long as the command may; a dead instance's claim then lapses.
        let lasts = msg.meta.time_left().unwrap_or_default() + Duration::from_secs(1);
        for _ in 0..2 {
            let store = &runtime.store;
            if store
                .compare_and_swap(&full, None, running.clone(), Some(lasts))
                .await?
                .is_some()
            {
                return Ok(Claimed::Run(Claim {
                    key: full,
                    scope,
                    input,
                }));
            }
            if let Some(stored) = store.get(&full).await? {
                let stored: Stored = decode(&full, &stored.value)?;
                return Ok(Claimed::Reply(Box::new(answer(runtime, stored, &input))));
            }
            // It lapsed in between: claim again.
        }
        Err(
            Error::conflict("the Idempotency-Key is contended; try again")
                .with_code("idempotency_key_in_use"),
        )
    }

    /// The scope of the command's units of work, so that they apply once per key.
    pub(crate) fn scope(&self) -> String {
        self.scope.clone()
    }

    /// Keeps `reply` for repeats; a 5xx is not kept, so that a repeat runs the command again.
    pub(crate) async fn finish(self, runtime: &Runtime, reply: &Message) {
        let kept = match reply.status() {
            500.. => {
                // Off the caller's path: a 5xx often means the store stalls, and the caller has
                // waited enough; until the claim is gone a repeat gets a 409.
                let store = runtime.store.clone();
                tokio::spawn(async move {
                    if let Err(err) = store.delete(&self.key).await {
                        tracing::warn!(error = %err, "could not release an idempotency key; it lapses with its claim");
                    }
                });
                Ok(())
            }
            status => {
                let stored = Stored {
                    input: self.input,
                    reply: Some(StoredReply {
                        status,
                        problem: reply.meta.content_type.as_deref() == Some(PROBLEM_JSON),
                        body: String::from_utf8_lossy(&reply.payload).into_owned(),
                    }),
                };
                let ttl = Some(runtime.config.idempotency_ttl);
                match encode(&stored) {
                    Ok(value) => runtime.store.put(&self.key, value, ttl).await.map(drop),
                    Err(err) => Err(err),
                }
            }
        };
        if let Err(err) = kept {
            tracing::warn!(error = %err, "could not keep the reply of an idempotency key; a repeat waits for the claim to lapse");
        }
    }
}

/// The reply to a key that has a record: the first reply, or why there is none.
fn answer(runtime: &Runtime, stored: Stored, input: &str) -> Message {
    let refusal = |err: Error| problem_reply(runtime.reply_meta(), &err);
    if stored.input != input {
        return refusal(
            Error::invalid(
                "Idempotency-Key",
                "this Idempotency-Key was sent before with another request",
            )
            .with_code("idempotency_key_reused"),
        );
    }
    let Some(reply) = stored.reply else {
        return refusal(
            Error::conflict(
                "a request with this Idempotency-Key is still running; try again later",
            )
            .with_code("idempotency_key_in_use"),
        );
    };
    let mut meta = runtime.reply_meta();
    meta.status = Some(reply.status);
    meta.content_type = reply.problem.then(|| PROBLEM_JSON.to_owned());
    Message {
        meta: Box::new(meta),
        payload: Bytes::from(reply.body),
    }
}

/// Whose key it is: the principal the caller named, else its session, else anyone's.
fn caller(meta: &Metadata) -> &str {
    meta.principal
        .as_deref()
        .or(meta.session.as_deref())
        .unwrap_or("-")
}

/// A hash of the input; every instance runs the same binary, so they agree on it.
fn fingerprint(input: &[u8]) -> String {
    let mut hasher = DefaultHasher::new();
    hasher.write(input);
    format!("{:016x}", hasher.finish())
}
