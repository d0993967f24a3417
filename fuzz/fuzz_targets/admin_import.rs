#![no_main]
//! cargo-fuzz target: see `tandem::fuzz_entry::admin_import`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        // The server contains panics inside yrs with catch_unwind; libfuzzer-sys' hook would
        // abort on them anyway. Only what escapes (an unwind through libFuzzer aborts too),
        // stack overflows, aborts, hangs and memory blow-ups are findings.
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| tandem::fuzz_entry::admin_import(data)
);
