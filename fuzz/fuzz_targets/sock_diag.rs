//! Any bytes read from the sock_diag notification socket parse to sockets
//! or to an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netmon::procnet;

fuzz_target!(|data: &[u8]| {
    for socket in procnet::notified_sockets(data) {
        std::hint::black_box(socket.ok());
    }
});
