//! The parts of the supervisor protocol that carry what a customer sees:
//! notes a server child sends about one of its requests (one-way, on the
//! link it already has: the child never opens a customer's file itself),
//! and a pool's recent history for the status page. Same framing rules as
//! `protocol`: fixed-width little-endian integers, length-prefixed bytes,
//! every length bounded by the frame.

use super::protocol_codec::{Decoder, Encoder, ProtoError};

/// Longest note text sent (the rest is cut by the sender).
pub const MAX_NOTE_TEXT: usize = 16 * 1024;
/// `Note::worker` when the note is about no particular worker.
pub const NO_WORKER: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// FastCGI `STDERR` records of a request: `text` is lines joined by `\n`.
    Stderr = 1,
    /// The server refused a request of the pool before it reached the app
    /// (e.g. a wrapped script that others may write): `status`, `text` = reason.
    Refused = 2,
    /// A request of the pool failed or was turned away (502, 503, 504):
    /// `status`, `text` = reason.
    Failed = 3,
    /// A request still runs after `SuFcgiSlowLog`: `text` = method and URL,
    /// `elapsed_ms` = how long it has run, `worker`/`epoch` = whose.
    Slow = 4,
}

impl NoteKind {
    fn from_code(c: u8) -> Result<NoteKind, ProtoError> {
        match c {
            1 => Ok(NoteKind::Stderr),
            2 => Ok(NoteKind::Refused),
            3 => Ok(NoteKind::Failed),
            4 => Ok(NoteKind::Slow),
            _ => Err(ProtoError("unknown note kind")),
        }
    }
}

/// Something about one request of a pool that belongs in its owner's log.
/// The supervisor finds the pool from (slot, generation) itself and writes
/// only to the log that pool's own configuration names: a child can add
/// lines to a customer's log, never choose which file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub slot: u32,
    pub slot_generation: u32,
    pub kind: NoteKind,
    /// The HTTP status answered (Refused, Failed); 0 otherwise.
    pub status: u16,
    /// The worker's scoreboard entry and epoch, or `NO_WORKER`.
    pub worker: u32,
    pub epoch: u32,
    pub elapsed_ms: u32,
    pub text: Vec<u8>,
}

pub fn put_note(e: &mut Encoder, n: &Note) {
    let text = &n.text[..n.text.len().min(MAX_NOTE_TEXT)];
    e.u32(n.slot).u32(n.slot_generation).u8(n.kind as u8).u16(n.status);
    e.u32(n.worker).u32(n.epoch).u32(n.elapsed_ms).bytes(text);
}

pub fn get_note(d: &mut Decoder<'_>) -> Result<Note, ProtoError> {
    let slot = d.u32()?;
    let slot_generation = d.u32()?;
    let kind = NoteKind::from_code(d.u8()?)?;
    let status = d.u16()?;
    let worker = d.u32()?;
    let epoch = d.u32()?;
    let elapsed_ms = d.u32()?;
    let text = d.bytes()?;
    if text.len() > MAX_NOTE_TEXT {
        return Err(ProtoError("note text too long"));
    }
    Ok(Note { slot, slot_generation, kind, status, worker, epoch, elapsed_ms, text })
}

/// One thing that happened, for the status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Happened {
    /// Unix time (seconds).
    pub at: u64,
    /// The HTTP status it was answered with (refusals), else 0.
    pub status: u16,
    pub text: String,
}

/// What a customer needs to see about a pool besides its counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolHistory {
    /// The last request the server answered with an error itself (refused,
    /// failed, turned away), and why.
    pub last_refusal: Option<Happened>,
    /// The last worker that ended: how (status or signal), when, and why it
    /// was stopped if the supervisor stopped it.
    pub last_exit: Option<Happened>,
    /// The last lines the app wrote to stderr (oldest first).
    pub stderr: Vec<String>,
    /// While backing off after crashes at start: until when (unix time), else 0.
    pub backoff_until: u64,
    /// `SuFcgiLog` as resolved, and why it cannot be written, if so.
    pub log_file: Option<String>,
    pub log_error: Option<String>,
}

fn put_happened(e: &mut Encoder, h: &Option<Happened>) {
    match h {
        Some(h) => e.u8(1).u64(h.at).u16(h.status).bytes(h.text.as_bytes()),
        None => e.u8(0),
    };
}

fn get_happened(d: &mut Decoder<'_>) -> Result<Option<Happened>, ProtoError> {
    Ok(if d.bool()? { Some(Happened { at: d.u64()?, status: d.u16()?, text: d.string()? }) } else { None })
}

fn put_opt_string(e: &mut Encoder, s: &Option<String>) {
    match s {
        Some(s) => e.u8(1).bytes(s.as_bytes()),
        None => e.u8(0),
    };
}

fn get_opt_string(d: &mut Decoder<'_>) -> Result<Option<String>, ProtoError> {
    Ok(if d.bool()? { Some(d.string()?) } else { None })
}

pub fn put_history(e: &mut Encoder, h: &PoolHistory) {
    put_happened(e, &h.last_refusal);
    put_happened(e, &h.last_exit);
    e.u32(h.stderr.len() as u32);
    for l in &h.stderr {
        e.bytes(l.as_bytes());
    }
    e.u64(h.backoff_until);
    put_opt_string(e, &h.log_file);
    put_opt_string(e, &h.log_error);
}

pub fn get_history(d: &mut Decoder<'_>) -> Result<PoolHistory, ProtoError> {
    let last_refusal = get_happened(d)?;
    let last_exit = get_happened(d)?;
    let n = d.count(4)?;
    let mut stderr = Vec::with_capacity(n);
    for _ in 0..n {
        stderr.push(d.string()?);
    }
    let backoff_until = d.u64()?;
    let log_file = get_opt_string(d)?;
    let log_error = get_opt_string(d)?;
    Ok(PoolHistory { last_refusal, last_exit, stderr, backoff_until, log_file, log_error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_written_note() {
        let bytes: &[u8] = &[
            7, 0, 0, 0, // slot 7
            2, 0, 0, 0, // generation 2
            3, // Failed
            0xf6, 0x01, // status 502
            0xff, 0xff, 0xff, 0xff, // no worker
            0, 0, 0, 0, // epoch
            0, 0, 0, 0, // elapsed
            4, 0, 0, 0, b'g', b'o', b'n', b'e', // text
        ];
        let want = Note { slot: 7, slot_generation: 2, kind: NoteKind::Failed, status: 502, worker: NO_WORKER, epoch: 0, elapsed_ms: 0, text: b"gone".to_vec() };
        let mut e = Encoder::raw();
        put_note(&mut e, &want);
        assert_eq!(e.into_raw(), bytes);
        let mut d = Decoder::new(bytes);
        assert_eq!(get_note(&mut d).unwrap(), want);
        assert!(d.end().is_ok());
        for n in 0..bytes.len() {
            assert!(get_note(&mut Decoder::new(&bytes[..n])).is_err(), "truncated at {n}");
        }
        let mut bad = bytes.to_vec();
        bad[8] = 9;
        assert!(get_note(&mut Decoder::new(&bad)).is_err(), "unknown kind");
    }

    #[test]
    fn history_round_trip() {
        let h = PoolHistory {
            last_refusal: Some(Happened { at: 1_700_000_000, status: 403, text: "x.php is writable by others".into() }),
            last_exit: None,
            stderr: vec!["PHP Warning: oops".into(), String::new()],
            backoff_until: 1_700_000_060,
            log_file: Some("/home/a/logs/app.log".into()),
            log_error: None,
        };
        let mut e = Encoder::raw();
        put_history(&mut e, &h);
        let raw = e.into_raw();
        let mut d = Decoder::new(&raw);
        assert_eq!(get_history(&mut d).unwrap(), h);
        assert!(d.end().is_ok());
        // The empty history: two absent events, no lines, no back-off, no log.
        let mut e = Encoder::raw();
        put_history(&mut e, &PoolHistory::default());
        assert_eq!(e.into_raw(), [0u8; 16]);
    }
}
