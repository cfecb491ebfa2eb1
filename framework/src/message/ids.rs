//! Random ids (messages, sessions, instances) and W3C `traceparent`s.

use std::cell::RefCell;

use rand::rngs::SmallRng;

/// Random bytes as lowercase hex: ids for messages, sessions, traces and instances.
///
/// The generator is rand's thread-local one: a CSPRNG seeded from the OS and reseeded
/// periodically, so it is fit for session ids, without a system call per id on the hot path.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut out = vec![0u8; bytes * 2];
    let mut random = [0u8; 32];
    for hex in out.chunks_mut(2 * random.len()) {
        let random = &mut random[..hex.len() / 2];
        rand::Rng::fill_bytes(&mut rand::rng(), random);
        write_hex(hex, random);
    }
    ascii_string(out)
}

/// Writes `bytes` in lowercase hex into `out` (twice their length): byte by byte into a buffer,
/// where pushing characters onto a `String` would encode each one as UTF-8 first.
fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// Text built from ASCII bytes.
fn ascii_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("hex digits and dashes are ASCII")
}

/// A fresh W3C `traceparent` with a new trace id.
pub(crate) fn new_traceparent() -> String {
    child_traceparent(None)
}

/// A `traceparent` for a child span of `parent`'s trace (or a new, sampled trace when it has
/// none): `00-{trace id: 32 hex}-{span id: 16 hex}-{flags}`, built in one buffer, as every span
/// starts one. The child keeps its parent's flags: the caller decided whether the trace is sampled.
pub(crate) fn child_traceparent(parent: Option<&str>) -> String {
    let mut random = [0u8; 24];
    SPAN_IDS.with_borrow_mut(|ids| rand::Rng::fill_bytes(ids, &mut random));
    let mut out = *b"00-................................-................-01";
    match parent.and_then(|parent| Some((trace_id_of(parent)?, flags_of(parent)))) {
        Some((trace_id, flags)) => {
            out[3..35].copy_from_slice(trace_id.as_bytes());
            out[53..].copy_from_slice(flags.as_bytes());
        }
        None => write_hex(&mut out[3..35], &random[..16]),
    }
    write_hex(&mut out[36..52], &random[16..]);
    ascii_string(out.to_vec())
}

thread_local! {
    /// Trace and span ids must be unique, not unpredictable (they are no secrets): a fast
    /// generator, seeded from the CSPRNG once per thread, as OpenTelemetry's SDK does.
    static SPAN_IDS: RefCell<SmallRng> = RefCell::new(rand::make_rng());
}

/// The trace id of a W3C `traceparent`, if it has a valid one (32 hex digits, not all zero).
/// Byte by byte: it is read several times per request.
pub(crate) fn trace_id_of(traceparent: &str) -> Option<&str> {
    // A byte search: `str::find` with a char sets up a searcher, to find what is at index 2.
    let start = traceparent.bytes().position(|b| b == b'-')? + 1;
    let trace_id = traceparent.get(start..start + 32)?;
    let ends = traceparent
        .as_bytes()
        .get(start + 32)
        .is_none_or(|&b| b == b'-');
    // One pass without early exits, which the compiler turns into a few vector instructions.
    let (mut hex, mut zero) = (true, true);
    for &b in trace_id.as_bytes() {
        hex &= b.is_ascii_hexdigit();
        zero &= b == b'0';
    }
    (ends && hex && !zero).then_some(trace_id)
}

/// The trace flags of a W3C `traceparent` (`01`: sampled), `01` when they are not two hex digits.
pub(crate) fn flags_of(traceparent: &str) -> &str {
    let flags = traceparent.len().checked_sub(2).and_then(|at| {
        let dash = traceparent.as_bytes().get(at.checked_sub(1)?)?;
        (*dash == b'-').then(|| &traceparent[at..])
    });
    match flags {
        Some(flags) if flags.bytes().all(|b| b.is_ascii_hexdigit()) => flags,
        _ => "01",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_trace_keeps_the_trace_id() {
        let parent = new_traceparent();
        let child = child_traceparent(Some(&parent));
        assert_eq!(trace_id_of(&parent), trace_id_of(&child));
        assert_ne!(parent, child);
    }

    #[test]
    fn a_child_keeps_its_parents_flags_and_an_all_zero_trace_is_none() {
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(child_traceparent(Some(unsampled)).ends_with("-00"));
        let zero = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        assert_eq!(trace_id_of(zero), None);
        assert_eq!(
            trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e47361-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(
            trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e473x-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(flags_of(unsampled), "00");
        assert_eq!(flags_of("garbage"), "01");
        assert_ne!(
            trace_id_of(&child_traceparent(Some(zero))),
            trace_id_of(zero)
        );
    }

    #[test]
    fn a_traceparent_is_version_trace_span_and_flags_in_hex() {
        let traceparent = new_traceparent();
        let parts: Vec<&str> = traceparent.split('-').collect();
        let lengths: Vec<usize> = parts.iter().map(|p| p.len()).collect();
        assert_eq!(lengths, [2, 32, 16, 2]);
        assert_eq!((parts[0], parts[3]), ("00", "01"));
        let hex = |p: &&str| p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        assert!(parts.iter().all(hex), "{parts:?}");
    }

    #[test]
    fn random_hex_has_two_digits_a_byte_at_any_length() {
        for bytes in [0, 1, 4, 32, 33, 100] {
            let id = random_hex(bytes);
            assert_eq!(id.len(), 2 * bytes);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
        }
        assert_ne!(
            random_hex(40)[64..],
            random_hex(40)[64..],
            "the tail is random too"
        );
    }
}
