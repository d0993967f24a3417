//! A non-recursive walk over Yjs v1 update bytes, run before yrs ever decodes them.
//!
//! yrs decodes lib0 `Any` values (and `serde_json` parses Embed/Format JSON) recursively: an
//! update of a few KB holding thousands of nested arrays overflows the thread's stack, which
//! aborts the whole process (`catch_unwind` cannot catch a stack overflow). A few thousand
//! levels that do decode still break every JavaScript client (`RangeError: Maximum call stack
//! size exceeded`). So every update from outside is walked here first, with an explicit stack,
//! and refused if any value nests deeper than the limit.
//!
//! The walk follows yrs 0.28's decoder (`Update::decode`, `ItemContent::decode`,
//! `Any::decode`, `IdSet::decode`) byte for byte, so both see the same structs. Where yrs and
//! Yjs disagree on framing (legacy JSON content, of which yrs reads one string more than it
//! writes; XmlHook, whose name yrs does not read) the walk refuses the construct. It is stricter than yrs where that
//! costs legitimate clients nothing (counts above `u32`, unknown type refs, trailing bytes),
//! never looser: whatever it accepts, yrs frames the same way.
//!
//! Because every announced count is checked against the bytes actually present, the walk also
//! means yrs' `try_reserve(count)` calls never see a count larger than the input.

use crate::{ReadError, Reader};

/// Largest `--max-nesting-depth` accepted. yrs' recursive decoder aborted at ~8,000 levels
/// on a 2 MiB tokio worker stack and JavaScript clients fail at a few thousand; this keeps a
/// wide margin below both.
pub const MAX_NESTING_DEPTH_CAP: usize = 1024;

/// Why update bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// A value nests deeper than the limit.
    #[error("nesting deeper than {limit} levels")]
    TooDeep {
        /// The limit in force.
        limit: usize,
    },
    /// The bytes are not a Yjs v1 update this server accepts.
    #[error("malformed update at byte {at}: {what}")]
    Malformed {
        /// What was wrong.
        what: &'static str,
        /// Offset into the update.
        at: usize,
    },
}

impl From<ReadError> for CheckError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::BadVarint(at) => CheckError::Malformed {
                what: "malformed varint",
                at,
            },
            ReadError::Truncated(at) => CheckError::Malformed {
                what: "truncated",
                at,
            },
        }
    }
}

fn malformed(r: &Reader<'_>, what: &'static str) -> CheckError {
    CheckError::Malformed { what, at: r.pos() }
}

// Struct info byte (yrs `block.rs`).
const BLOCK_GC: u8 = 0;
const BLOCK_SKIP: u8 = 10;
const HAS_ORIGIN: u8 = 0b1000_0000;
const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
const HAS_PARENT_SUB: u8 = 0b0010_0000;
/// yrs reads the content type from the low four bits; Yjs from five. A set fifth bit is never
/// produced by either, and refusing it keeps the two from framing the struct differently.
const CONTENT_BIT4: u8 = 0b0001_0000;

// Content types.
const CONTENT_DELETED: u8 = 1;
const CONTENT_JSON: u8 = 2;
const CONTENT_BINARY: u8 = 3;
const CONTENT_STRING: u8 = 4;
const CONTENT_EMBED: u8 = 5;
const CONTENT_FORMAT: u8 = 6;
const CONTENT_TYPE: u8 = 7;
const CONTENT_ANY: u8 = 8;
const CONTENT_DOC: u8 = 9;

// Type refs of content type 7 (yrs `types/mod.rs`).
const TYPE_XML_ELEMENT: u8 = 3;

// lib0 `Any` tags.
const ANY_UNDEFINED: u8 = 127;
const ANY_NULL: u8 = 126;
const ANY_VAR_INT: u8 = 125;
const ANY_F32: u8 = 124;
const ANY_F64: u8 = 123;
const ANY_BIGINT: u8 = 122;
const ANY_FALSE: u8 = 121;
const ANY_TRUE: u8 = 120;
const ANY_STRING: u8 = 119;
const ANY_OBJECT: u8 = 118;
const ANY_ARRAY: u8 = 117;
const ANY_BUFFER: u8 = 116;

/// Checks that `bytes` is a well-formed Yjs v1 update in which no lib0 `Any` value and no
/// JSON string nests deeper than `max_depth` containers (`[[1]]` is two levels).
pub fn check_update_v1(bytes: &[u8], max_depth: usize) -> Result<(), CheckError> {
    let mut r = Reader::new(bytes);
    let clients = var_u32(&mut r)?;
    // Yjs and yrs write one block per client. Two blocks of one client can overlap, and yrs
    // 0.28 then frees an item (replacing it with a GC block) that its parent still points to:
    // a use-after-free the admin_import fuzz target found. Refused here, before yrs sees them.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..clients {
        let structs = var_u32(&mut r)?;
        let client = r.var_uint()?;
        if !seen.insert(client) {
            return Err(malformed(
                &r,
                "the structs of one client appear in two blocks",
            ));
        }
        let _clock = var_u32(&mut r)?;
        for _ in 0..structs {
            check_struct(&mut r, max_depth)?;
        }
    }
    check_delete_set(&mut r)?;
    if !r.is_empty() {
        return Err(malformed(&r, "trailing bytes after the delete set"));
    }
    Ok(())
}

/// A varUint that yrs reads as `u32` (yrs wraps larger values; refusing them keeps us from
/// reading a different number than yrs does).
fn var_u32(r: &mut Reader<'_>) -> Result<u32, CheckError> {
    let value = r.var_uint()?;
    u32::try_from(value).map_err(|_| malformed(r, "count above 2^32"))
}

fn var_string<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], CheckError> {
    Ok(r.var_bytes()?)
}

fn id(r: &mut Reader<'_>) -> Result<(), CheckError> {
    r.var_uint()?;
    var_u32(r)?;
    Ok(())
}

fn check_struct(r: &mut Reader<'_>, max_depth: usize) -> Result<(), CheckError> {
    let info = r.u8()?;
    match info {
        // A skip range leaves a hole in the client's clocks; yrs 0.28 integrates around it,
        // and a later update spanning the hole's end makes it free a struct it still uses (a
        // heap-use-after-free the update_admission fuzz target found). Yjs and yrs only write
        // skips when merging updates with gaps; clients send updates in clock order.
        BLOCK_SKIP => {
            return Err(malformed(
                r,
                "skip ranges are not accepted: send a client's structs in clock order",
            ));
        }
        BLOCK_GC => {
            if var_u32(r)? == 0 {
                return Err(malformed(r, "empty GC range"));
            }
            return Ok(());
        }
        _ if info & CONTENT_BIT4 != 0 => return Err(malformed(r, "unknown content type")),
        _ => {}
    }
    let has_origin = info & HAS_ORIGIN != 0;
    let has_right_origin = info & HAS_RIGHT_ORIGIN != 0;
    if has_origin {
        id(r)?;
    }
    if has_right_origin {
        id(r)?;
    }
    if !has_origin && !has_right_origin {
        if var_u32(r)? == 1 {
            var_string(r)?;
        } else {
            id(r)?;
        }
        if info & HAS_PARENT_SUB != 0 {
            var_string(r)?;
        }
    }
    match info & 0x0f {
        CONTENT_DELETED => {
            var_u32(r)?;
        }
        // Legacy JSON content (Yjs has written Any content instead since v13). yrs 0.28 cannot
        // round-trip it: it decodes `count + 1` strings but encodes `count`, so a document
        // holding it could never be loaded again once stored. Refused.
        CONTENT_JSON => return Err(malformed(r, "legacy JSON content is not supported")),
        CONTENT_BINARY | CONTENT_STRING => {
            var_string(r)?;
        }
        CONTENT_EMBED => check_json(var_string(r)?, max_depth)?,
        CONTENT_FORMAT => {
            var_string(r)?;
            check_json(var_string(r)?, max_depth)?;
        }
        CONTENT_TYPE => match r.u8()? {
            // Array, Map, Text, XmlFragment, XmlText, SubDoc, Undefined: nothing follows.
            0 | 1 | 2 | 4 | 6 | 9 | 15 => {}
            TYPE_XML_ELEMENT => {
                var_string(r)?;
            }
            // XmlHook (5): Yjs writes a name after it and yrs reads none, so the two decoders
            // would frame everything after it differently. Weak links (7) are off in our yrs.
            _ => return Err(malformed(r, "unsupported type ref")),
        },
        CONTENT_ANY => {
            let len = var_u32(r)?;
            for _ in 0..len {
                check_any(r, max_depth)?;
            }
        }
        CONTENT_DOC => {
            var_string(r)?;
            check_any(r, max_depth)?;
        }
        _ => return Err(malformed(r, "unknown content type")),
    }
    Ok(())
}

fn check_delete_set(r: &mut Reader<'_>) -> Result<(), CheckError> {
    let clients = var_u32(r)?;
    for _ in 0..clients {
        let _client = r.var_uint()?;
        let ranges = var_u32(r)?;
        for _ in 0..ranges {
            let clock = var_u32(r)?;
            let len = var_u32(r)?;
            if clock.checked_add(len).is_none() {
                return Err(malformed(r, "delete range past 2^32"));
            }
        }
    }
    Ok(())
}

/// One open container of an `Any` value being walked.
struct Open {
    /// Children still to read.
    remaining: u64,
    /// Map entries carry a key before each value.
    is_map: bool,
}

/// Walks one lib0 `Any` value with an explicit stack (never deeper than `max_depth`).
fn check_any(r: &mut Reader<'_>, max_depth: usize) -> Result<(), CheckError> {
    let mut stack: Vec<Open> = Vec::new();
    loop {
        if stack.last().is_some_and(|top| top.is_map) {
            var_string(r)?;
        }
        let opened = match r.u8()? {
            ANY_UNDEFINED | ANY_NULL | ANY_FALSE | ANY_TRUE => None,
            // A signed varInt ends at the first byte without the high bit, like a varUint.
            ANY_VAR_INT => {
                r.var_uint()?;
                None
            }
            ANY_F32 => {
                r.skip(4)?;
                None
            }
            ANY_F64 | ANY_BIGINT => {
                r.skip(8)?;
                None
            }
            ANY_STRING | ANY_BUFFER => {
                r.var_bytes()?;
                None
            }
            tag @ (ANY_OBJECT | ANY_ARRAY) => Some(Open {
                remaining: r.var_uint()?,
                is_map: tag == ANY_OBJECT,
            }),
            _ => return Err(malformed(r, "unknown Any tag")),
        };
        if let Some(open) = opened {
            if stack.len() >= max_depth {
                return Err(CheckError::TooDeep { limit: max_depth });
            }
            // Every child takes at least one byte: a count beyond the input is a lie, and
            // refusing it here keeps the loop below bounded by the input length.
            if open.remaining > r.remaining() as u64 {
                return Err(malformed(r, "Any container count beyond the input"));
            }
            if open.remaining > 0 {
                stack.push(open);
                continue;
            }
        }
        // A value is complete: close every container it completes.
        loop {
            let Some(top) = stack.last_mut() else {
                return Ok(());
            };
            top.remaining -= 1;
            if top.remaining > 0 {
                break;
            }
            stack.pop();
        }
    }
}

/// Measures the bracket depth of a JSON text, counting `[` and `{` outside string literals.
/// It does not validate the JSON (yrs and the clients do); it only has to never under-count.
fn check_json(text: &[u8], max_depth: usize) -> Result<(), CheckError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in text {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(CheckError::TooDeep { limit: max_depth });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
