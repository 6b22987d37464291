//! What one client connection may hold at once.
//!
//! Message sizes are bounded per request ([`crate::service::queue`]); the
//! number of requests in flight per connection is bounded by HTTP/2's
//! concurrent-stream limit (`max_streams_per_connection`: the client waits
//! for a free stream); and waiting receives (long-polls), which hold a
//! stream for up to 20 s each, are bounded here per connection
//! (`max_waits_per_connection`): one more is refused with
//! `RESOURCE_EXHAUSTED` at once instead of queueing behind the others. A
//! follower forwards all its clients' calls to the leader over one
//! connection, so it also bounds the waiting receives it forwards at once
//! ([`forwarded_waits`]): a few clients' long-polls cannot take the streams
//! the other calls through that follower need.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tonic::Status;

/// The key [`forwarded_waits`] are counted under.
pub const FORWARDED: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// How many waiting receives a follower forwards to the leader at once:
/// half the streams of its one connection to the leader (whose
/// `max_streams_per_connection` it assumes is its own), so that forwarded
/// waits never take the streams every other forwarded call needs.
pub fn forwarded_waits(max_streams_per_connection: u32) -> usize {
    (max_streams_per_connection as usize / 2).max(1)
}

/// Waiting receives held per connection (keyed by the remote address).
#[derive(Debug)]
pub struct WaitSlots {
    max: usize,
    held: Mutex<HashMap<SocketAddr, usize>>,
}

/// One waiting receive's slot; freed when dropped.
#[derive(Debug)]
pub struct WaitSlot {
    slots: Arc<WaitSlots>,
    addr: SocketAddr,
}

impl WaitSlots {
    /// At most `max` waiting receives per connection.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(WaitSlots {
            max,
            held: Mutex::default(),
        })
    }

    /// A slot for a receive from `addr` that may wait, or
    /// `RESOURCE_EXHAUSTED` when the connection holds `max` already. A
    /// request with no known remote address is not counted.
    pub fn take(self: &Arc<Self>, addr: Option<SocketAddr>) -> Result<Option<WaitSlot>, Status> {
        let Some(addr) = addr else {
            return Ok(None);
        };
        let mut held = self.held.lock().expect("wait slot lock is never poisoned");
        let count = held.entry(addr).or_default();
        if *count >= self.max {
            return Err(Status::resource_exhausted(format!(
                "this connection already holds {} waiting receives (max_waits_per_connection): \
                 wait for one to finish, or receive without waiting",
                self.max
            )));
        }
        *count += 1;
        Ok(Some(WaitSlot {
            slots: self.clone(),
            addr,
        }))
    }

    /// Waiting receives held by `addr` now.
    pub fn held(&self, addr: SocketAddr) -> usize {
        self.held
            .lock()
            .expect("wait slot lock is never poisoned")
            .get(&addr)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for WaitSlot {
    fn drop(&mut self) {
        let mut held = self
            .slots
            .held
            .lock()
            .expect("wait slot lock is never poisoned");
        if let Some(count) = held.get_mut(&self.addr) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_holds_at_most_max_waits_and_a_freed_slot_is_reusable() {
        let slots = WaitSlots::new(2);
        let a: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:5001".parse().expect("addr");
        let first = slots.take(Some(a)).expect("1");
        let _second = slots.take(Some(a)).expect("2");
        let refused = slots.take(Some(a)).expect_err("3rd");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(slots.take(Some(b)).expect("other connection").is_some());
        drop(first);
        assert_eq!(slots.held(a), 1);
        assert!(slots.take(Some(a)).expect("freed").is_some());
        assert!(slots.take(None).expect("unknown").is_none());
    }
}
