//! Getting events out of the kernel: a BPF ring buffer where the kernel has
//! one (5.8+), per-CPU perf buffers where it does not.
//!
//! Both are drained the same way, so the collection loop does not care
//! which one it reads.
use std::{future::poll_fn, io, os::fd::AsRawFd, task::Poll};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{
        MapData, MapType, PerfEventArray, RingBuf, perf::PerfEvent, perf::PerfEventArrayBuffer,
    },
};
use netmon_common::{PeerEvent, maps};
use tokio::io::{Interest, unix::AsyncFd};

/// What `--transport` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportRequest {
    /// The ring buffer where the kernel supports it, else perf buffers.
    Auto,
    Ringbuf,
    Perf,
}

/// How events reach userspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    RingBuf,
    Perf,
}

impl TransportRequest {
    /// Probes the kernel (a test map, not its version number) for `auto`.
    pub fn resolve(self) -> Transport {
        match self {
            Self::Ringbuf => Transport::RingBuf,
            Self::Perf => Transport::Perf,
            Self::Auto => match aya::sys::is_map_supported(MapType::RingBuf) {
                Ok(true) => Transport::RingBuf,
                Ok(false) => {
                    log::info!("kernel has no BPF ring buffer (Linux 5.8+): using perf buffers");
                    Transport::Perf
                }
                // Probing needs the same permission as loading; let the load
                // report the real problem.
                Err(err) => {
                    log::debug!("probing for ring buffers failed ({err}); assuming they exist");
                    Transport::RingBuf
                }
            },
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::RingBuf => "ring buffer",
            Self::Perf => "perf buffers",
        })
    }
}

/// Pages per CPU for perf buffers (a power of two); 256 KiB on 4 KiB pages,
/// the ring buffer's default size per CPU.
const PERF_PAGES: usize = 64;

/// How long a reader woken by one event waits for others before draining
/// (see [`Events::readable`]): at most 100 wake-ups a second in a storm,
/// instead of one per event. Each wake-up costs netmon a fixed amount
/// (the interrupt, two context switches, the timer, the poll) whatever it
/// drains, and 10 ms of the fastest storm's events fill only a small part
/// of the default ring buffer (figures in docs/performance.md).
pub(crate) const BATCH: std::time::Duration = std::time::Duration::from_millis(10);

/// The open event channel.
pub enum Events {
    Ring(AsyncFd<RingBuf<MapData>>),
    Perf {
        buffers: Vec<AsyncFd<PerfEventArrayBuffer<MapData>>>,
        /// Samples the kernel dropped because a buffer was full.
        lost: u64,
    },
}

impl Events {
    /// Takes the `EVENTS` map out of `ebpf` and opens it for reading.
    pub fn open(ebpf: &mut Ebpf, transport: Transport) -> anyhow::Result<Self> {
        let map = ebpf
            .take_map(maps::EVENTS)
            .with_context(|| format!("the eBPF object has no map {}", maps::EVENTS))?;
        match transport {
            Transport::RingBuf => {
                let ring = RingBuf::try_from(map)?;
                Ok(Self::Ring(
                    register(ring).context("cannot poll the ring buffer")?,
                ))
            }
            Transport::Perf => {
                let mut array = PerfEventArray::try_from(map)?;
                let cpus = aya::util::online_cpus().map_err(|(path, err)| {
                    anyhow::anyhow!("cannot read the online CPUs from {path}: {err}")
                })?;
                let buffers = cpus
                    .into_iter()
                    .map(|cpu| {
                        let buffer = array
                            .open(cpu, Some(PERF_PAGES))
                            .with_context(|| format!("cannot open the perf buffer of CPU {cpu}"))?;
                        register(buffer).context("cannot poll a perf buffer")
                    })
                    .collect::<anyhow::Result<_>>()?;
                Ok(Self::Perf { buffers, lost: 0 })
            }
        }
    }

    /// Waits until there is something to drain, then a little longer.
    ///
    /// The kernel wakes the reader for a record only when the reader has
    /// caught up (the ring was empty), and each wake-up is an interrupt the
    /// eBPF program raises while it runs. Draining the instant one event
    /// arrives keeps the ring empty, so in a storm every event paid for a
    /// wake-up; waiting `BATCH` lets the events of the next moment join the
    /// first without waking anyone. An event is still read within about
    /// `BATCH` of its arrival.
    ///
    /// Readiness is cleared only after the wait, so cancelling this future
    /// midway (another `select!` branch won) leaves it set and loses
    /// nothing.
    pub async fn readable(&mut self) -> io::Result<()> {
        self.wait_ready(false).await?;
        tokio::time::sleep(BATCH).await;
        self.wait_ready(true).await
    }

    /// Waits until some buffer is readable; clears its readiness if `clear`.
    async fn wait_ready(&mut self, clear: bool) -> io::Result<()> {
        match self {
            Self::Ring(ring) => {
                let mut guard = ring.readable_mut().await?;
                if clear {
                    guard.clear_ready();
                }
                Ok(())
            }
            Self::Perf { buffers, .. } => {
                poll_fn(|cx| {
                    let mut ready = false;
                    for buffer in buffers.iter_mut() {
                        if let Poll::Ready(guard) = buffer.poll_read_ready_mut(cx) {
                            let mut guard = guard?;
                            if clear {
                                guard.clear_ready();
                            }
                            ready = true;
                        }
                    }
                    if ready {
                        Poll::Ready(Ok(()))
                    } else {
                        Poll::Pending
                    }
                })
                .await
            }
        }
    }

    /// Hands every waiting event to `sink`; returns how many records were
    /// not events (an object and binary built from different sources).
    pub fn drain(&mut self, mut sink: impl FnMut(&PeerEvent)) -> usize {
        let mut malformed = 0;
        let mut take = |head: &[u8], tail: &[u8]| match decode(head, tail) {
            Some(event) => sink(&event),
            None => malformed += 1,
        };
        match self {
            Self::Ring(ring) => {
                let ring = ring.get_mut();
                while let Some(item) = ring.next() {
                    take(&item[..], &[]);
                }
            }
            Self::Perf { buffers, lost } => {
                for buffer in buffers.iter_mut() {
                    buffer.get_mut().for_each(|event| match event {
                        PerfEvent::Sample { head, tail } => take(head, tail),
                        PerfEvent::Lost { count } => *lost = lost.saturating_add(count),
                    });
                }
            }
        }
        malformed
    }

    /// Losses the transport itself counted (perf buffers only).
    pub fn transport_lost(&self) -> u64 {
        match self {
            Self::Ring(_) => 0,
            Self::Perf { lost, .. } => *lost,
        }
    }
}

/// Registers an fd-owning value with tokio, for readability only.
pub(crate) fn register<T: AsRawFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `inner` owns its fd, which stays open and unchanged for as
    // long as `inner` lives, and the AsyncFd owns `inner`.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }.map_err(io::Error::from)
}

/// Copies one record, possibly split across the end of a perf buffer, into
/// an event. Perf samples are padded, so longer records are accepted.
fn decode(head: &[u8], tail: &[u8]) -> Option<PeerEvent> {
    const SIZE: usize = size_of::<PeerEvent>();
    if head.len() + tail.len() < SIZE {
        return None;
    }
    let mut bytes = [0u8; SIZE];
    let from_head = head.len().min(SIZE);
    bytes[..from_head].copy_from_slice(&head[..from_head]);
    bytes[from_head..].copy_from_slice(&tail[..SIZE - from_head]);
    // SAFETY: PeerEvent is plain integers, every bit pattern is valid, and
    // read_unaligned copes with the array's alignment.
    Some(unsafe { bytes.as_ptr().cast::<PeerEvent>().read_unaligned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_split_and_padded_records() {
        let event = PeerEvent {
            addr: netmon_common::Addr::v4_mapped(0x0100_007f),
            remote_port: 80,
            ..PeerEvent::default()
        };
        // SAFETY: viewing a plain-integer struct as bytes.
        let bytes: [u8; size_of::<PeerEvent>()] = unsafe { std::mem::transmute(event) };
        assert_eq!(decode(&bytes, &[]), Some(event));
        assert_eq!(decode(&bytes[..10], &bytes[10..]), Some(event));
        let mut padded = bytes.to_vec();
        padded.extend([0; 4]);
        assert_eq!(decode(&padded, &[]), Some(event));
        assert_eq!(decode(&bytes[..31], &[]), None);
    }
}
