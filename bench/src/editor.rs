//! A simulated editor: one `yrs::Doc` with its own client id that types into a `Y.Text`.

use yrs::{Doc, ReadTxn, Text, TextRef, Transact};

use crate::proto;

/// Name of the shared text every simulated client types into.
pub const TEXT_NAME: &str = "text";

/// One simulated client's document.
///
/// It only ever holds its own edits (remote updates are not applied: that would cost the load
/// generator CPU without changing what the server sees). Each edit appends one ASCII character
/// after the client's previous one, so clock `k` is exactly the client's `k`-th update, and the
/// server integrates it in O(1) (its origin is the client's own last item), like a user typing in
/// their own paragraph.
pub struct Editor {
    doc: Doc,
    text: TextRef,
    len: u32,
}

impl Editor {
    /// Creates an empty document with the given yrs client id.
    pub fn new(client_id: u64) -> Self {
        let doc = Doc::with_client_id(client_id);
        let text = doc.get_or_insert_text(TEXT_NAME);
        Editor { doc, text, len: 0 }
    }

    /// The clock the next update will carry (= number of updates made so far).
    pub fn clock(&self) -> u32 {
        self.len
    }

    /// Every edit made so far as one framed sync Update message: what a client resends after
    /// a reconnect, so edits whose acknowledgement it never saw reach the server (again).
    pub fn full_update(&self) -> Vec<u8> {
        let update = self
            .doc
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        proto::frame_update(&update)
    }

    /// Types one character and returns `(clock, framed sync Update message)`.
    pub fn next_update(&mut self) -> (u32, Vec<u8>) {
        let clock = self.len;
        let mut buf = [0u8; 4];
        let s = char::from(b'a' + (clock % 26) as u8).encode_utf8(&mut buf);
        let update = {
            let mut txn = self.doc.transact_mut();
            self.text.insert(&mut txn, clock, s);
            txn.encode_update_v1()
        };
        self.len += 1;
        (clock, proto::frame_update(&update))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ClockRange, Incoming, parse_frame, update_ranges};

    #[test]
    fn each_update_is_one_clock() {
        let mut e = Editor::new(42);
        let mut out = Vec::new();
        for k in 0..100u32 {
            let (clock, frame) = e.next_update();
            assert_eq!(clock, k);
            let Ok(Incoming::Update(u)) = parse_frame(&frame) else {
                panic!("not an update frame");
            };
            update_ranges(u, &mut out).expect("parse");
            assert_eq!(
                out,
                vec![ClockRange {
                    client: 42,
                    start: Some(k),
                    end: k + 1
                }]
            );
        }
    }
}
