//! Units of work on Redis: one Lua script checks every version the unit read, its marker and its
//! bounded adds, then applies its writes, appends its events to the outbox (a Redis stream) and
//! writes its marker, as one atomic step on the server.

use std::time::Duration;

use bytes::Bytes;
use redis::{Cmd, ErrorKind, Script, ServerErrorKind};

use super::RedisStore;
use super::ttl_arg;
use crate::error::Error;
use crate::message::Message;
use crate::state::spi::{Commit, MAX_SUM, Marker, OutboxEntry, OutboxEvent, Outcome, Write};

/// Lua that sets `result` to the result the unit's marker `marker` holds (a string), or `false`.
macro_rules! read_marker {
    () => {
        r"
  local result
  -- A marker written before markers were strings is a hash holding the result in `d`.
  if redis.call('TYPE', marker).ok == 'hash' then
    result = redis.call('HGET', marker, 'd')
  else
    result = redis.call('GET', marker)
  end
"
    };
}

/// The commit. `KEYS` are every key the unit touches, the outbox first; `ARGV` holds the counts of
/// reads, writes and events, then each of them and the marker if there is one, naming keys by
/// their index in `KEYS`:
/// reads `key, expected version ("" = absent)`; writes `op, key, a, b` (`put, key, value, ttl`,
/// `del, key, "", ""`, `add, key, by, min or ""`); events `subject, headers (JSON), payload`;
/// the marker `key, value, ttl`. A script's writes are not undone when it returns early, so the
/// only write before the last check is the marker's, which a refused unit deletes again. `ARGV`
/// is read in place, and no function is made: each costs every call its allocation.
const COMMIT: &str = concat!(
    r"
local nr, nw, ne = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local writes_at = 4 + 2 * nr
local events_at = writes_at + 4 * nw
local marker_at = events_at + 3 * ne

for a = 4, writes_at - 1, 2 do
  local key, expected = KEYS[tonumber(ARGV[a])], ARGV[a + 1]
  local version = redis.call('HGET', key, 'v')
  if (expected == '' and version) or (expected ~= '' and version ~= expected) then
    return {'conflict', key}
  end
end
-- Claimed before the adds are checked: a redelivery gets the first result even where the first
-- delivery's adds would now go below their minimum.
local marker = ARGV[marker_at] and KEYS[tonumber(ARGV[marker_at])]
if marker and not redis.call('SET', marker, ARGV[marker_at + 1], 'NX', 'PX', ARGV[marker_at + 2]) then
",
    read_marker!(),
    r"
  return {'applied', result}
end
local refused
local sums = {}
for a = writes_at, events_at - 1, 4 do
  if ARGV[a] == 'add' then
    local key = KEYS[tonumber(ARGV[a + 1])]
    local sum = sums[key]
    if sum == nil then
      -- Digits only, as `HINCRBY` takes them: `5.0` would pass `tonumber` and then fail the add.
      local held = redis.call('HGET', key, 'd') or '0'
      if not string.find(held, '^-?%d+$') then refused = {'not_integer', key} break end
      sum = tonumber(held)
    end
    sum = sum + tonumber(ARGV[a + 2])
    if math.abs(sum) > 9007199254740991 then refused = {'overflow', key} break end
    if ARGV[a + 3] ~= '' and sum < tonumber(ARGV[a + 3]) then
      refused = {'below_min', tostring((a - writes_at) / 4)}
      break
    end
    sums[key] = sum
  end
end
if refused then
  if marker then redis.call('DEL', marker) end
  return refused
end

for a = writes_at, events_at - 1, 4 do
  local op, key = ARGV[a], KEYS[tonumber(ARGV[a + 1])]
  if op == 'put' then
    redis.call('HINCRBY', key, 'v', 1)
    redis.call('HSET', key, 'd', ARGV[a + 2])
    if ARGV[a + 3] == '' then redis.call('PERSIST', key) else redis.call('PEXPIRE', key, ARGV[a + 3]) end
  elseif op == 'del' then
    redis.call('DEL', key)
  else
    redis.call('HINCRBY', key, 'd', ARGV[a + 2])
    redis.call('HINCRBY', key, 'v', 1)
  end
end
local reply = {'ok'}
for a = events_at, marker_at - 1, 3 do
  reply[#reply + 1] = redis.call('XADD', KEYS[1], '*', 's', ARGV[a], 'h', ARGV[a + 1], 'p', ARGV[a + 2])
end
return reply
"
);

/// The commonest unit, an event applied once: one add without a minimum, a marker, no reads, no
/// events. The same checks and outcomes as `COMMIT` in three commands, the sum taken from the add
/// itself (undone on overflow; a fresh key cannot overflow, as the amount is checked beforehand).
/// `KEYS` = the marker, the key; `ARGV` = the marker's value and ttl, the amount.
const ADD_ONCE: &str = concat!(
    r"
local marker, key = KEYS[1], KEYS[2]
if not redis.call('SET', marker, ARGV[1], 'NX', 'PX', ARGV[2]) then
",
    read_marker!(),
    r"
  return {'applied', result}
end
local sum = redis.pcall('HINCRBY', key, 'd', ARGV[3])
if type(sum) == 'table' then
  redis.call('DEL', marker)
  if string.find(sum.err, 'overflow') then return {'overflow', key} end
  return {'not_integer', key}
end
if math.abs(sum) > 9007199254740991 then
  redis.call('HINCRBY', key, 'd', -tonumber(ARGV[3]))
  redis.call('DEL', marker)
  return {'overflow', key}
end
redis.call('HINCRBY', key, 'v', 1)
return {'ok'}
"
);

/// The result the marker `KEYS[1]` holds, if it exists.
const APPLIED: &str = concat!("local marker = KEYS[1]", read_marker!(), "return result");

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
    add_once: Script,
    applied: Script,
    outbox: Script,
}

impl Default for UnitScripts {
    fn default() -> Self {
        UnitScripts {
            commit: Script::new(COMMIT),
            add_once: Script::new(ADD_ONCE),
            applied: Script::new(APPLIED),
            outbox: Script::new(OUTBOX),
        }
    }
}

/// A unit `ADD_ONCE` commits.
struct AddOnce<'a> {
    marker: &'a Marker,
    key: &'a str,
    by: i64,
}

impl<'a> AddOnce<'a> {
    /// The unit as `ADD_ONCE` takes it, if it has that shape.
    fn of(commit: &'a Commit) -> Option<Self> {
        let shape = (&commit.reads[..], &commit.writes[..], &commit.events[..]);
        match (shape, &commit.marker) {
            (([], [Write::Add { key, by, min: None }], []), Some(marker))
                if (-MAX_SUM..=MAX_SUM).contains(by) =>
            {
                Some(AddOnce {
                    marker,
                    key,
                    by: *by,
                })
            }
            _ => None,
        }
    }

    fn command(&self, verb: &str, script: &str) -> Cmd {
        let Marker { key, value, ttl } = self.marker;
        let mut cmd = Cmd::with_capacity(8, 96 + key.len() + self.key.len() + value.len());
        cmd.arg(verb).arg(script).arg(2).arg(key).arg(self.key);
        cmd.arg(value.as_ref())
            .arg(ttl_arg(Some(*ttl)))
            .arg(self.by);
        cmd
    }
}

/// The generic commit as one command. Written straight into the command's buffer: a unit's keys
/// and arguments are a few dozen small pieces, each otherwise copied twice.
fn commit_command(verb: &str, script: &str, commit: &Commit) -> Result<Cmd, Error> {
    let keys = keys_of(commit);
    // 1-based, as Lua counts; every key is in `keys`, which `keys_of` made sure of.
    let index = |key: &str| keys.iter().position(|k| *k == key).map_or(0, |i| i + 1);
    let args = arg_count(commit, keys.len());
    let mut cmd = Cmd::with_capacity(args, data_size(commit, &keys, args));
    cmd.arg(verb).arg(script).arg(keys.len()).arg(&keys);
    cmd.arg(commit.reads.len())
        .arg(commit.writes.len())
        .arg(commit.events.len());
    for (key, version) in &commit.reads {
        cmd.arg(index(key));
        match version {
            Some(version) => cmd.arg(version),
            None => cmd.arg(""),
        };
    }
    for write in &commit.writes {
        match write {
            Write::Put { key, value, ttl } => cmd
                .arg("put")
                .arg(index(key))
                .arg(value.as_ref())
                .arg(ttl_arg(*ttl)),
            Write::Delete { key } => cmd.arg("del").arg(index(key)).arg("").arg(""),
            Write::Add { key, by, min } => {
                cmd.arg("add").arg(index(key)).arg(by);
                match min {
                    Some(min) => cmd.arg(min),
                    None => cmd.arg(""),
                }
            }
        };
    }
    for event in &commit.events {
        cmd.arg(event.subject.as_str())
            .arg(headers_json(&event.message)?)
            .arg(event.message.payload.as_ref());
    }
    if let Some(Marker { key, value, ttl }) = &commit.marker {
        cmd.arg(index(key))
            .arg(value.as_ref())
            .arg(ttl_arg(Some(*ttl)));
    }
    Ok(cmd)
}

/// The arguments of the commit command, to size its buffers once instead of growing them.
fn arg_count(commit: &Commit, keys: usize) -> usize {
    let marker = if commit.marker.is_some() { 3 } else { 0 };
    3 + keys
        + 3
        + 2 * commit.reads.len()
        + 4 * commit.writes.len()
        + 3 * commit.events.len()
        + marker
}

/// About the bytes of the commit command's arguments: its keys and values, and a few digits or
/// letters for each other argument.
fn data_size(commit: &Commit, keys: &[&str], args: usize) -> usize {
    let values = commit.writes.iter().map(|write| match write {
        Write::Put { value, .. } => value.len(),
        Write::Delete { .. } | Write::Add { .. } => 0,
    });
    let events =
        (commit.events.iter()).map(|event| event.subject.len() + event.message.payload.len() + 256);
    let marker = commit
        .marker
        .as_ref()
        .map_or(0, |marker| marker.value.len());
    64 + keys.iter().map(|key| key.len()).sum::<usize>()
        + values.sum::<usize>()
        + events.sum::<usize>()
        + marker
        + 16 * args
}

/// Every key the commit touches, once each: the outbox, then in the order they first appear.
fn keys_of(commit: &Commit) -> Vec<&str> {
    let written = commit.writes.iter().map(|write| match write {
        Write::Put { key, .. } | Write::Delete { key } | Write::Add { key, .. } => key,
    });
    let mut keys: Vec<&str> = Vec::with_capacity(2 + commit.reads.len() + commit.writes.len());
    let touched = std::iter::once(&commit.outbox)
        .chain(commit.reads.iter().map(|(key, _)| key))
        .chain(written)
        .chain(commit.marker.iter().map(|marker| &marker.key));
    for key in touched {
        if !keys.contains(&key.as_str()) {
            keys.push(key);
        }
    }
    keys
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
        let add_once = AddOnce::of(&commit);
        let (script, code) = match add_once {
            Some(_) => (&self.inner.units.add_once, ADD_ONCE),
            None => (&self.inner.units.commit, COMMIT),
        };
        let command = |verb, script| match &add_once {
            Some(unit) => Ok(unit.command(verb, script)),
            None => commit_command(verb, script, &commit),
        };
        let evalsha = command("EVALSHA", script.get_hash())?;
        let reply: Vec<Vec<u8>> = self
            .run(
                || "committing a unit of work".to_owned(),
                |mut c| async move {
                    match evalsha.query_async(&mut c).await {
                        Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                            let eval = command("EVAL", code).map_err(|_| err)?;
                            eval.query_async(&mut c).await
                        }
                        reply => reply,
                    }
                },
            )
            .await?;
        outcome(reply)
    }

    pub(super) async fn read_marker(&self, marker: &str) -> Result<Option<Bytes>, Error> {
        let result: Option<Vec<u8>> = self
            .run(
                || format!("reading the marker `{marker}`"),
                |mut c| async move {
                    let script = &self.inner.units.applied;
                    script.key(marker).invoke_async(&mut c).await
                },
            )
            .await?;
        Ok(result.map(Bytes::from))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_bound_sums_by_max_sum() {
        let bound = format!("math.abs(sum) > {MAX_SUM} then");
        assert!(COMMIT.contains(&bound) && ADD_ONCE.contains(&bound));
    }
}
