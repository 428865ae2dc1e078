//! The host netmon runs on: its own addresses, which a checkpoint
//! records so that files from many hosts can be joined.
use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use crate::store::MAX_ADDRESSES;

/// Every IPv4 and IPv6 address of every interface in netmon's network
/// namespace, sorted (IPv4 first), at most [`MAX_ADDRESSES`]; not
/// loopback's, which every host has, nor IPv6 link-local ones, which are
/// unique only on their link and so name no host across a fleet. glibc
/// asks the kernel over rtnetlink (RTM_GETADDR).
pub fn own_addresses() -> io::Result<Vec<IpAddr>> {
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
        // SAFETY: ifa_addr points to a sockaddr of the family it names:
        // sockaddr_in for AF_INET, sockaddr_in6 for AF_INET6.
        let addr = unsafe {
            match i32::from((*ifaddr.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*ifaddr.ifa_addr.cast::<libc::sockaddr_in>();
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let sin6 = &*ifaddr.ifa_addr.cast::<libc::sockaddr_in6>();
                    IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)).to_canonical()
                }
                _ => continue,
            }
        };
        let link_local = matches!(addr, IpAddr::V6(v6) if v6.is_unicast_link_local());
        if !addr.is_loopback() && !link_local {
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
        let addresses = own_addresses().unwrap();
        assert!(addresses.iter().all(|a| !a.is_loopback()), "{addresses:?}");
        assert!(addresses.is_sorted());
    }
}
