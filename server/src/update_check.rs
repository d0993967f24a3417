//! The non-recursive walk over Yjs v1 update bytes run before yrs decodes them; it lives in
//! [`tandem_wire::update_check`] with the rest of the wire format.

pub(crate) use tandem_wire::update_check::*;
