//! ws::protocol::parse on any text frame.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    chatd::ws::fuzz::ws_protocol(data);
});
