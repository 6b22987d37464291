//! Leader discovery: which node to send the next request to.
//!
//! The client starts from its seed list. Every answer (and every
//! `UNAVAILABLE` status) from a follower names the leader in its metadata
//! (`raftq-leader-addr`); the cache remembers it and sends the next request
//! there directly.
//!
//! A node that does not answer must not cost every call its timeout: a
//! stopped (`SIGSTOP`) or hung node still accepts TCP connections, so a call
//! to it waits for the whole attempt timeout. So, when the cache knows no
//! node that has answered, it asks every seed it is not skipping for its
//! status at once, each with a short deadline ([`PROBE_TIMEOUT`]), and takes
//! the first that answers (or the leader it names); when none answers in
//! time (a loaded machine), the call goes to the first of them with its own
//! timeout. A node that failed or timed out is skipped for [`SKIP_FOR`]
//! while others answer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::select_ok;
use raftq_proto::v1 as pb;
use raftq_proto::v1::cluster_service_client::ClusterServiceClient;
use raftq_proto::LEADER_ADDR_HEADER;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};
use crate::security::{ClientTls, Credentials, Transport};

/// How long to wait for a TCP connection to a node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a node has to answer a status probe before the client moves on.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a node that failed or did not answer is skipped.
pub const SKIP_FOR: Duration = Duration::from_secs(10);

/// The leader as last heard of, the seeds, and one channel per address.
#[derive(Debug)]
pub struct LeaderCache {
    seeds: Vec<String>,
    tls: Option<ClientTls>,
    credentials: Credentials,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    leader: Option<String>,
    next_seed: usize,
    channels: HashMap<String, Channel>,
    /// Addresses that answered since they last failed.
    answered: HashMap<String, bool>,
    /// Addresses to skip until the instant given.
    skipped: HashMap<String, Instant>,
}

impl State {
    fn channel(&mut self, addr: &str, cache: &LeaderCache) -> Result<Transport> {
        let channel = match self.channels.get(addr) {
            Some(channel) => channel.clone(),
            None => {
                let channel = endpoint(addr, cache.tls.as_ref())?.connect_lazy();
                self.channels.insert(addr.to_string(), channel.clone());
                channel
            }
        };
        Ok(Transport::new(channel, cache.credentials.clone()))
    }

    fn is_skipped(&self, addr: &str) -> bool {
        self.skipped
            .get(addr)
            .is_some_and(|until| *until > Instant::now())
    }
}

impl LeaderCache {
    /// A cache over `seeds` (`host:port` each), connecting with `tls` when
    /// given and sending `credentials` on every call.
    pub fn new(
        seeds: Vec<String>,
        tls: Option<ClientTls>,
        credentials: Credentials,
    ) -> Result<Self> {
        if seeds.is_empty() {
            return Err(Error::new(
                tonic::Code::InvalidArgument,
                "give at least one node address (host:port)",
            ));
        }
        for seed in &seeds {
            endpoint(seed, tls.as_ref())?;
        }
        Ok(LeaderCache {
            seeds,
            tls,
            credentials,
            state: Mutex::default(),
        })
    }

    /// A cache over other `seeds`, with the same TLS and credentials.
    pub fn with_seeds(&self, seeds: Vec<String>) -> Result<Self> {
        LeaderCache::new(seeds, self.tls.clone(), self.credentials.clone())
    }

    /// The seed addresses.
    pub fn seeds(&self) -> &[String] {
        &self.seeds
    }

    /// The address to try next, and a channel to it: the leader when known,
    /// else a node known to answer, else the first of the nodes not skipped
    /// to answer a status probe.
    pub async fn target(&self) -> Result<(String, Transport)> {
        let candidates = {
            let mut state = self.lock();
            if let Some(leader) = state.leader.clone() {
                if !state.is_skipped(&leader) {
                    let channel = state.channel(&leader, self)?;
                    return Ok((leader, channel));
                }
                state.leader = None;
            }
            let start = state.next_seed;
            let ordered: Vec<String> = (0..self.seeds.len())
                .map(|i| self.seeds[(start + i) % self.seeds.len()].clone())
                .collect();
            if let Some(addr) = ordered
                .iter()
                .find(|a| state.answered.get(*a) == Some(&true) && !state.is_skipped(a))
            {
                let channel = state.channel(addr, self)?;
                return Ok((addr.clone(), channel));
            }
            let mut open: Vec<String> = ordered
                .iter()
                .filter(|a| !state.is_skipped(a))
                .cloned()
                .collect();
            if open.is_empty() {
                // Every node is skipped: try them all again.
                state.skipped.clear();
                open = ordered;
            }
            open.into_iter()
                .map(|addr| state.channel(&addr, self).map(|channel| (addr, channel)))
                .collect::<Result<Vec<_>>>()?
        };
        self.probe(candidates).await
    }

    /// Asks every candidate for its status at once; the first to answer
    /// wins, or the leader it names. Those that fail are skipped for a while.
    async fn probe(&self, candidates: Vec<(String, Transport)>) -> Result<(String, Transport)> {
        if let [(addr, channel)] = candidates.as_slice() {
            // One seed: nothing to choose between, no probe to pay for.
            return Ok((addr.clone(), channel.clone()));
        }
        let addrs: Vec<String> = candidates.iter().map(|(a, _)| a.clone()).collect();
        let probes = candidates.into_iter().map(|(addr, channel)| {
            Box::pin(async move {
                let mut request = tonic::Request::new(pb::StatusRequest { digest: false });
                request.set_timeout(PROBE_TIMEOUT);
                let answer = tokio::time::timeout(
                    PROBE_TIMEOUT,
                    ClusterServiceClient::new(channel.clone()).status(request),
                )
                .await;
                match answer {
                    Ok(Ok(status)) => Ok((addr, channel, status.into_inner())),
                    _ => Err(addr),
                }
            })
        });
        match select_ok(probes).await {
            Ok(((addr, channel, status), _)) => {
                let mut state = self.lock();
                state.answered.insert(addr.clone(), true);
                state.skipped.remove(&addr);
                match status
                    .leader_addr
                    .filter(|l| *l != addr && !state.is_skipped(l))
                {
                    Some(leader) => {
                        state.leader = Some(leader.clone());
                        let channel = state.channel(&leader, self)?;
                        Ok((leader, channel))
                    }
                    None => Ok((addr, channel)),
                }
            }
            Err(_) => {
                // Nobody answered in time: a loaded machine, or every node
                // down. Try the first one with the call's own, longer
                // timeout rather than give up here.
                tracing::debug!(seeds = %addrs.join(","), "no node answered the probe in time");
                let mut state = self.lock();
                let first = addrs[0].clone();
                let channel = state.channel(&first, self)?;
                Ok((first, channel))
            }
        }
    }

    /// Learns the leader from response or status metadata.
    pub fn observe(&self, metadata: &MetadataMap) {
        if let Some(addr) = metadata
            .get(LEADER_ADDR_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            let mut state = self.lock();
            if state.leader.as_deref() != Some(addr) {
                tracing::debug!(leader = addr, "leader changed");
                state.leader = Some(addr.to_string());
            }
        }
    }

    /// Notes that `addr` answered.
    pub fn answered(&self, addr: &str) {
        let mut state = self.lock();
        if state.answered.get(addr) != Some(&true) {
            state.answered.insert(addr.to_string(), true);
        }
        state.skipped.remove(addr);
    }

    /// Notes a failed call to `addr`: a status the node answered itself
    /// (it names itself; "no leader here now") moves on to another node, a
    /// failed or cut connection also skips `addr` for a while.
    pub fn note_status(&self, addr: &str, status: &tonic::Status) {
        self.observe(status.metadata());
        if status.code() != tonic::Code::Unavailable
            || status.metadata().contains_key(LEADER_ADDR_HEADER)
        {
            return;
        }
        if status.metadata().contains_key(raftq_proto::NODE_ID_HEADER) {
            self.rotate(addr);
        } else {
            self.failed(addr);
        }
    }

    /// `addr` answered but could not serve (no leader known there right
    /// now): the next target is another node, without skipping this one.
    pub fn rotate(&self, addr: &str) {
        let mut state = self.lock();
        if state.leader.as_deref() == Some(addr) {
            state.leader = None;
        }
        // Not preferred next time: the next target is probed among all.
        state.answered.insert(addr.to_string(), false);
        state.next_seed = state.next_seed.wrapping_add(1);
    }

    /// Forgets `addr` as the leader (it failed) and skips it for a while;
    /// the next target is another node.
    pub fn failed(&self, addr: &str) {
        let mut state = self.lock();
        if state.leader.as_deref() == Some(addr) {
            state.leader = None;
        }
        state.answered.insert(addr.to_string(), false);
        state
            .skipped
            .insert(addr.to_string(), Instant::now() + SKIP_FOR);
        state.next_seed = state.next_seed.wrapping_add(1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("leader cache lock is never poisoned")
    }
}

fn endpoint(addr: &str, tls: Option<&ClientTls>) -> Result<Endpoint> {
    let bare = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    let url = match tls {
        Some(_) => format!("https://{bare}"),
        None if addr.starts_with("https://") => {
            return Err(Error::new(
                tonic::Code::InvalidArgument,
                format!(
                    "{addr:?} asks for TLS: give the cluster's CA certificate (--ca or RAFTQ_CA)"
                ),
            ))
        }
        None => format!("http://{bare}"),
    };
    let endpoint = Endpoint::from_shared(url).map_err(|err| {
        Error::new(
            tonic::Code::InvalidArgument,
            format!("bad node address {addr:?}: {err}"),
        )
    })?;
    // A missing or out-of-range port would only show as connection errors,
    // retried until the retry budget runs out.
    if endpoint.uri().port_u16().is_none_or(|port| port == 0) {
        return Err(Error::new(
            tonic::Code::InvalidArgument,
            format!("bad node address {addr:?}: give host:port, the port 1 to 65535"),
        ));
    }
    let endpoint = match tls {
        Some(tls) => endpoint.tls_config(tls.config()).map_err(|err| {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(inner) = source {
                text = format!("{text}: {inner}");
                source = inner.source();
            }
            Error::new(
                tonic::Code::InvalidArgument,
                format!("TLS settings for {addr}: {text}"),
            )
        })?,
        None => endpoint,
    };
    Ok(endpoint.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_address_needs_a_host_and_a_port_and_is_refused_at_once_otherwise() {
        for good in [
            "127.0.0.1:7400",
            "raftq-1.internal:7400",
            "http://[::1]:7400",
        ] {
            assert!(
                LeaderCache::new(vec![good.into()], None, Credentials::default()).is_ok(),
                "{good}"
            );
        }
        for bad in [
            "127.0.0.1",
            "127.0.0.1:99999",
            "127.0.0.1:0",
            "nonsense",
            "::::",
        ] {
            match LeaderCache::new(vec![bad.into()], None, Credentials::default()) {
                Ok(_) => panic!("{bad:?} was accepted"),
                Err(err) => {
                    assert_eq!(err.code, tonic::Code::InvalidArgument, "{bad}");
                    assert!(err.message.contains("bad node address"), "{}", err.message);
                }
            }
        }
    }
}
