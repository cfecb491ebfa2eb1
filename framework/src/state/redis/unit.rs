//! Units of work on Redis: one Lua script checks every version the unit read, its marker and its
//! bounded adds, then applies its writes, appends its events to the outbox (a Redis stream) and
//! writes its marker, as one atomic step on the server.

use std::time::Duration;

use bytes::Bytes;
use redis::Script;

use super::RedisStore;
use super::ttl_arg;
use crate::error::Error;
use crate::message::Message;
use crate::state::spi::{Commit, Marker, OutboxEntry, OutboxEvent, Outcome, Write};

/// The commit. `KEYS` are every key the unit touches, the outbox first; `ARGV` holds the counts of
/// reads, writes and events and whether there is a marker, then each of them, naming keys by
/// their index in `KEYS`:
/// reads `key, expected version ("" = absent)`; writes `op, key, a, b` (`put, key, value, ttl`,
/// `del, key, "", ""`, `add, key, by, min or ""`); events `subject, headers (JSON), payload`;
/// the marker `key, value, ttl`. Every check comes before the first write, because a script's
/// writes are not undone when it returns early.
const COMMIT: &str = r"
local nr, nw, ne, has_marker = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
local a = 5
local reads, writes, events, marker = {}, {}, {}, nil
for i = 1, nr do reads[i] = {KEYS[tonumber(ARGV[a])], ARGV[a + 1]}; a = a + 2 end
for i = 1, nw do writes[i] = {ARGV[a], KEYS[tonumber(ARGV[a + 1])], ARGV[a + 2], ARGV[a + 3]}; a = a + 4 end
for i = 1, ne do events[i] = {ARGV[a], ARGV[a + 1], ARGV[a + 2]}; a = a + 3 end
if has_marker then marker = {KEYS[tonumber(ARGV[a])], ARGV[a + 1], ARGV[a + 2]} end

for _, r in ipairs(reads) do
  local version = redis.call('HGET', r[1], 'v')
  if (r[2] == '' and version) or (r[2] ~= '' and version ~= r[2]) then
    return {'conflict', r[1]}
  end
end
if marker then
  local result = redis.call('HGET', marker[1], 'd')
  if result then return {'applied', result} end
end
local sums = {}
for i, w in ipairs(writes) do
  if w[1] == 'add' then
    local key = w[2]
    if sums[key] == nil then
      local stored = redis.call('HGET', key, 'd')
      sums[key] = stored and tonumber(stored) or 0
      if sums[key] == nil or sums[key] ~= math.floor(sums[key]) then return {'not_integer', key} end
    end
    sums[key] = sums[key] + tonumber(w[3])
    if math.abs(sums[key]) > 9007199254740991 then return {'overflow', key} end
    if w[4] ~= '' and sums[key] < tonumber(w[4]) then return {'below_min', tostring(i - 1)} end
  end
end

for _, w in ipairs(writes) do
  local key = w[2]
  if w[1] == 'put' then
    redis.call('HINCRBY', key, 'v', 1)
    redis.call('HSET', key, 'd', w[3])
    if w[4] == '' then redis.call('PERSIST', key) else redis.call('PEXPIRE', key, w[4]) end
  elseif w[1] == 'del' then
    redis.call('DEL', key)
  else
    redis.call('HINCRBY', key, 'd', w[3])
    redis.call('HINCRBY', key, 'v', 1)
  end
end
local reply = {'ok'}
for i, e in ipairs(events) do
  reply[i + 1] = redis.call('XADD', KEYS[1], '*', 's', e[1], 'h', e[2], 'p', e[3])
end
if marker then
  redis.call('HSET', marker[1], 'd', marker[2], 'v', 1)
  redis.call('PEXPIRE', marker[1], marker[3])
end
return reply
";

/// Outbox entries at least `ARGV[1]` ms old by the server's clock, oldest first, at most
/// `ARGV[2]`. `KEYS[1]` = the outbox.
const OUTBOX: &str = r"
local now = redis.call('TIME')
local before = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[1])
if before < 0 then return {} end
return redis.call('XRANGE', KEYS[1], '-', tostring(before), 'COUNT', ARGV[2])
";

/// The scripts of units of work, loaded once per store.
pub(super) struct UnitScripts {
    commit: Script,
    outbox: Script,
}

impl Default for UnitScripts {
    fn default() -> Self {
        UnitScripts {
            commit: Script::new(COMMIT),
            outbox: Script::new(OUTBOX),
        }
    }
}

/// The keys and arguments of the commit script.
#[derive(Default)]
struct Invocation {
    keys: Vec<String>,
    args: Vec<Vec<u8>>,
}

impl Invocation {
    /// The index of `key` in `KEYS` (1-based, as Lua counts), added if new.
    fn key(&mut self, key: &str) -> Vec<u8> {
        let index = match self.keys.iter().position(|k| k == key) {
            Some(index) => index,
            None => {
                self.keys.push(key.to_owned());
                self.keys.len() - 1
            }
        };
        (index + 1).to_string().into_bytes()
    }

    fn arg(&mut self, arg: impl Into<Vec<u8>>) {
        self.args.push(arg.into());
    }
}

fn invocation(commit: &Commit) -> Result<Invocation, Error> {
    let mut call = Invocation::default();
    call.key(&commit.outbox);
    call.arg(commit.reads.len().to_string());
    call.arg(commit.writes.len().to_string());
    call.arg(commit.events.len().to_string());
    call.arg(if commit.marker.is_some() { "1" } else { "" });
    for (key, version) in &commit.reads {
        let index = call.key(key);
        call.arg(index);
        call.arg(version.map(|v| v.to_string()).unwrap_or_default());
    }
    for write in &commit.writes {
        let (op, key, a, b) = match write {
            Write::Put { key, value, ttl } => ("put", key, value.to_vec(), ttl_arg(*ttl)),
            Write::Delete { key } => ("del", key, Vec::new(), String::new()),
            Write::Add { key, by, min } => (
                "add",
                key,
                by.to_string().into_bytes(),
                min.map(|m| m.to_string()).unwrap_or_default(),
            ),
        };
        call.arg(op);
        let index = call.key(key);
        call.arg(index);
        call.arg(a);
        call.arg(b);
    }
    for event in &commit.events {
        call.arg(event.subject.as_str());
        call.arg(headers_json(&event.message)?);
        call.arg(event.message.payload.to_vec());
    }
    if let Some(Marker { key, value, ttl }) = &commit.marker {
        let index = call.key(key);
        call.arg(index);
        call.arg(value.to_vec());
        call.arg(ttl_arg(Some(*ttl)));
    }
    Ok(call)
}

fn headers_json(message: &Message) -> Result<String, Error> {
    let headers: serde_json::Map<String, serde_json::Value> = message
        .meta
        .headers()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), serde_json::Value::String(value)))
        .collect();
    serde_json::to_string(&headers)
        .map_err(|e| Error::internal(format!("cannot encode the headers of an event: {e}")))
}

impl RedisStore {
    pub(super) async fn commit_unit(&self, commit: Commit) -> Result<Outcome, Error> {
        let call = invocation(&commit)?;
        let reply: Vec<Vec<u8>> = self
            .run(
                || "committing a unit of work".to_owned(),
                |mut c| async move {
                    let mut script = self.inner.units.commit.prepare_invoke();
                    for key in &call.keys {
                        script.key(key);
                    }
                    for arg in &call.args {
                        script.arg(arg.as_slice());
                    }
                    script.invoke_async(&mut c).await
                },
            )
            .await?;
        outcome(reply)
    }

    pub(super) async fn read_outbox(
        &self,
        outbox: &str,
        age: Duration,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, Error> {
        let millis = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        let entries: Vec<(String, Vec<Vec<u8>>)> = self
            .run(
                || format!("reading the outbox `{outbox}`"),
                |mut c| async move {
                    self.inner
                        .units
                        .outbox
                        .key(outbox)
                        .arg(millis)
                        .arg(limit)
                        .invoke_async(&mut c)
                        .await
                },
            )
            .await?;
        entries
            .into_iter()
            .map(|(id, fields)| entry(id, fields))
            .collect()
    }

    pub(super) async fn remove_from_outbox(
        &self,
        outbox: &str,
        ids: &[String],
    ) -> Result<(), Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let _: u64 = self
            .run(
                || format!("removing published events from the outbox `{outbox}`"),
                |mut c| async move {
                    redis::cmd("XDEL")
                        .arg(outbox)
                        .arg(ids)
                        .query_async(&mut c)
                        .await
                },
            )
            .await?;
        Ok(())
    }
}

fn outcome(reply: Vec<Vec<u8>>) -> Result<Outcome, Error> {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    match reply.split_first() {
        Some((status, ids)) if status == b"ok" => {
            Ok(Outcome::Committed(ids.iter().map(|id| text(id)).collect()))
        }
        Some((status, [key])) if status == b"conflict" => Ok(Outcome::Conflict(text(key))),
        Some((status, [index])) if status == b"below_min" => text(index)
            .parse()
            .map(Outcome::BelowMin)
            .map_err(|_| Error::internal("the commit script named no write")),
        Some((status, [result])) if status == b"applied" => {
            Ok(Outcome::Applied(Bytes::from(result.clone())))
        }
        Some((status, [key])) if status == b"not_integer" => Err(Error::conflict(format!(
            "`{}` does not hold an integer",
            text(key)
        ))),
        Some((status, [key])) if status == b"overflow" => Err(Error::conflict(format!(
            "adding to `{}` overflows",
            text(key)
        ))),
        _ => Err(Error::internal(format!(
            "unexpected reply {reply:?} from the commit script"
        ))),
    }
}

/// An outbox entry from its stream fields `s` (subject), `h` (headers) and `p` (payload).
fn entry(id: String, fields: Vec<Vec<u8>>) -> Result<OutboxEntry, Error> {
    let (mut subject, mut headers, mut payload) = (None, None, None);
    for pair in fields.chunks(2) {
        if let [name, value] = pair {
            match name.as_slice() {
                b"s" => subject = Some(String::from_utf8_lossy(value).into_owned()),
                b"h" => headers = Some(value.clone()),
                b"p" => payload = Some(Bytes::from(value.clone())),
                _ => {}
            }
        }
    }
    let malformed = || Error::internal(format!("the outbox entry `{id}` is malformed"));
    let headers: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&headers.ok_or_else(malformed)?).map_err(|_| malformed())?;
    let mut message = Message::new(payload.ok_or_else(malformed)?);
    for (name, value) in &headers {
        if let Some(value) = value.as_str() {
            message.meta.set_header(name, value);
        }
    }
    let subject = subject.ok_or_else(malformed)?;
    Ok(OutboxEntry {
        id,
        event: OutboxEvent { subject, message },
    })
}
