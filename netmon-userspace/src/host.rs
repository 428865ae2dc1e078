//! The host netmon runs on: its own IPv4 addresses, which a checkpoint
//! records so that files from many hosts can be joined.
use std::{io, net::Ipv4Addr};

use crate::store::MAX_ADDRESSES;

/// Every IPv4 address of every interface in netmon's network namespace,
/// loopback's excepted (every host has those), sorted, at most
/// [`MAX_ADDRESSES`]. glibc asks the kernel over rtnetlink (RTM_GETADDR).
pub fn ipv4_addresses() -> io::Result<Vec<Ipv4Addr>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: a valid out-pointer; freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut addresses = Vec::new();
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: a node of the list getifaddrs returned, not yet freed.
        let ifaddr = unsafe { &*entry };
        entry = ifaddr.ifa_next;
        if ifaddr.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr of the family it names;
        // AF_INET ones are sockaddr_in.
        let addr = unsafe {
            if i32::from((*ifaddr.ifa_addr).sa_family) != libc::AF_INET {
                continue;
            }
            let sin = &*ifaddr.ifa_addr.cast::<libc::sockaddr_in>();
            Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))
        };
        if !addr.is_loopback() {
            addresses.push(addr);
        }
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(list) };
    addresses.sort_unstable();
    addresses.dedup();
    addresses.truncate(MAX_ADDRESSES);
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_never_an_own_address() {
        let addresses = ipv4_addresses().unwrap();
        assert!(addresses.iter().all(|a| !a.is_loopback()), "{addresses:?}");
        assert!(addresses.is_sorted());
    }
}
