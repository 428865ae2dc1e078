//! The two ways a program reads kernel memory: `bpf_probe_read_kernel`
//! from any hook, or plain loads from a pointer the kernel's BTF types.
use aya_ebpf::helpers::bpf_probe_read_kernel;

use crate::maps::config;

/// How a program reads kernel memory.
pub trait Memory {
    /// Whether reads follow BTF-typed pointers with plain loads.
    const TYPED: bool;
    /// The `T` at `offset` in the kernel object at `base` (non-null).
    fn read<T: Copy>(base: *const u8, offset: u32) -> Result<T, i32>;
    /// The family, IPv4 peer, peer port (network order) and local port
    /// of `sk`.
    fn head(sk: *const u8) -> Result<Head, i32>;
}

/// What every peer needs from the start of `struct sock_common`.
pub struct Head {
    pub family: u16,
    pub daddr: u32,
    pub dport: u16,
    pub num: u16,
}

/// `bpf_probe_read_kernel`: any hook, any pointer, one helper call a read.
pub struct Probed;

impl Memory for Probed {
    const TYPED: bool = false;

    #[inline(always)]
    fn read<T: Copy>(base: *const u8, offset: u32) -> Result<T, i32> {
        // SAFETY: bpf_probe_read_kernel copes with any address; a bad one
        // only makes it fail.
        unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast()) }
    }

    #[inline(always)]
    fn head(sk: *const u8) -> Result<Head, i32> {
        let head = SockHead::read(sk)?;
        Ok(Head {
            family: head.field(sk, config(|c| &c.sock.family))?,
            daddr: head.field(sk, config(|c| &c.sock.daddr))?,
            dport: head.field(sk, config(|c| &c.sock.dport))?,
            num: head.field(sk, config(|c| &c.sock.num))?,
        })
    }
}

/// Plain loads from a pointer the kernel's BTF types (a BTF tracepoint's
/// `struct sock *` and the pointers read from it): the verifier checks
/// each against the kernel's types and the JIT makes it a load that
/// faults safely, a few instructions where a helper call is tens of ns.
/// The offsets are load-time constants (`.rodata`, frozen), as the
/// verifier needs them to be.
pub struct Typed;

impl Memory for Typed {
    const TYPED: bool = true;

    #[inline(always)]
    fn read<T: Copy>(base: *const u8, offset: u32) -> Result<T, i32> {
        // SAFETY: a BTF-typed kernel pointer: the verifier accepts the load
        // only where the kernel's types put a field of this size, and a
        // load that faults reads zeros instead.
        Ok(unsafe { core::ptr::read_volatile(base.wrapping_add(offset as usize).cast()) })
    }

    #[inline(always)]
    fn head(sk: *const u8) -> Result<Head, i32> {
        // One load a field: each must match a field of the kernel's types.
        Ok(Head {
            family: Self::read(sk, config(|c| &c.sock.family))?,
            daddr: Self::read(sk, config(|c| &c.sock.daddr))?,
            dport: Self::read(sk, config(|c| &c.sock.dport))?,
            num: Self::read(sk, config(|c| &c.sock.num))?,
        })
    }
}

/// The start of `struct sock_common`, from `skc_daddr` on, read with one
/// helper call: family, address and ports lie within its first 18 bytes
/// in every kernel (the layout has not changed since 2.6), and one read
/// makes a run measurably shorter than four.
struct SockHead([u8; SOCK_HEAD_LEN]);

const SOCK_HEAD_LEN: usize = 24;

impl SockHead {
    fn read(sk: *const u8) -> Result<Self, i32> {
        Probed::read(sk, config(|c| &c.sock.daddr)).map(Self)
    }

    /// The field at `offset`, from the head if it lies there (the
    /// offsets are load-time constants, so the verifier sees which),
    /// else read on its own.
    fn field<T: Copy>(&self, sk: *const u8, offset: u32) -> Result<T, i32> {
        let at = offset.wrapping_sub(config(|c| &c.sock.daddr)) as usize;
        match self.0.get(at..at.wrapping_add(size_of::<T>())) {
            // SAFETY: `bytes` holds size_of::<T>() bytes from `at`; T is
            // a plain integer.
            Some(bytes) => Ok(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast()) }),
            None => Probed::read(sk, offset),
        }
    }
}
