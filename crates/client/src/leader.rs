//! Leader discovery: which node to send the next request to.
//!
//! The client starts from its seed list. Every answer (and every
//! `UNAVAILABLE` status) from a follower names the leader in its metadata
//! (`raftq-leader-addr`); the cache remembers it and sends the next request
//! there directly. When the leader stops answering, the cache forgets it and
//! moves on through the seeds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use raftq_proto::LEADER_ADDR_HEADER;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// How long to wait for a TCP connection to a node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The leader as last heard of, the seeds, and one channel per address.
#[derive(Debug)]
pub struct LeaderCache {
    seeds: Vec<String>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    leader: Option<String>,
    next_seed: usize,
    channels: HashMap<String, Channel>,
}

impl LeaderCache {
    /// A cache over `seeds` (`host:port` each).
    pub fn new(seeds: Vec<String>) -> Result<Self> {
        if seeds.is_empty() {
            return Err(Error::new(
                tonic::Code::InvalidArgument,
                "give at least one node address (host:port)",
            ));
        }
        for seed in &seeds {
            endpoint(seed)?;
        }
        Ok(LeaderCache {
            seeds,
            state: Mutex::default(),
        })
    }

    /// The seed addresses.
    pub fn seeds(&self) -> &[String] {
        &self.seeds
    }

    /// The address to try next, and a channel to it.
    pub fn target(&self) -> Result<(String, Channel)> {
        let mut state = self
            .state
            .lock()
            .expect("leader cache lock is never poisoned");
        let addr = match &state.leader {
            Some(leader) => leader.clone(),
            None => self.seeds[state.next_seed % self.seeds.len()].clone(),
        };
        if let Some(channel) = state.channels.get(&addr) {
            return Ok((addr, channel.clone()));
        }
        let channel = endpoint(&addr)?.connect_lazy();
        state.channels.insert(addr.clone(), channel.clone());
        Ok((addr, channel))
    }

    /// Learns the leader from response or status metadata.
    pub fn observe(&self, metadata: &MetadataMap) {
        if let Some(addr) = metadata
            .get(LEADER_ADDR_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            let mut state = self
                .state
                .lock()
                .expect("leader cache lock is never poisoned");
            if state.leader.as_deref() != Some(addr) {
                tracing::debug!(leader = addr, "leader changed");
                state.leader = Some(addr.to_string());
            }
        }
    }

    /// Forgets `addr` as the leader (it failed); the next target is the next seed.
    pub fn failed(&self, addr: &str) {
        let mut state = self
            .state
            .lock()
            .expect("leader cache lock is never poisoned");
        if state.leader.as_deref() == Some(addr) {
            state.leader = None;
        }
        state.next_seed = state.next_seed.wrapping_add(1);
    }
}

fn endpoint(addr: &str) -> Result<Endpoint> {
    let url = if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(url)
        .map_err(|err| {
            Error::new(
                tonic::Code::InvalidArgument,
                format!("bad node address {addr:?}: {err}"),
            )
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true))
}
