//! Any bytes given to the checkpoint loader (netmon's format or the old
//! poller's address list) give a snapshot or an error, never a panic; the
//! fast reader and serde give the same answer; and a snapshot that loads
//! writes back to a file that loads to the same set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netmon::store;

fuzz_target!(|data: &[u8]| {
    let loaded = store::parse(data, 1_700_000_000);
    let general = store::parse_with_serde(data, 1_700_000_000);
    let (snapshot, _) = match (loaded, general) {
        (Ok(loaded), Ok((general, _))) => {
            assert_eq!(
                store::to_json(&loaded.0, "fuzz", 0).unwrap(),
                store::to_json(&general, "fuzz", 0).unwrap(),
                "the fast reader and serde read different sets"
            );
            loaded
        }
        (Err(_), Err(_)) => return,
        (loaded, general) => panic!(
            "the fast reader says {:?}, serde {:?}",
            loaded.map(|_| ()),
            general.map(|_| ())
        ),
    };
    let written =
        store::to_json(&snapshot, "fuzz", 1_700_000_000).expect("a loaded set can be written");
    let (again, _) = store::parse(&written, 0).expect("what netmon writes, netmon reads");
    assert_eq!(again.peers.len(), snapshot.peers.len());
    assert_eq!(
        store::to_json(&again, "fuzz", 1_700_000_000).unwrap(),
        written
    );
});
