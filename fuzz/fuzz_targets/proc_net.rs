//! Any bytes in a /proc/net table parse to rows or are skipped, never a
//! panic, in both the IPv4 and the IPv6 layout.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netmon::procnet;

fuzz_target!(|data: &[u8]| {
    for v6 in [false, true] {
        for row in procnet::rows(data, v6) {
            // Rows hold what they parsed; touching them keeps the parse.
            std::hint::black_box(row);
        }
    }
});
