//! The `local` and `netns` backends: `raftq serve` processes started by the
//! drill, either on loopback, each behind a fault-injecting [`Proxies`]
//! proxy (no root needed), or each in a network namespace of its own, cut
//! apart with iptables ([`Netns`], root only).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::netns::Netns;
use super::{Backend, Cut, Proxies};
use crate::error::{Error, Result};

/// One node process of a [`LocalCluster`].
struct LocalNode {
    /// The proxy's address: what clients and peers use.
    addr: String,
    args: Vec<String>,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// How the nodes of a [`LocalCluster`] are wired, and cut apart.
enum Network {
    /// Loopback, a proxy in front of each node.
    Proxied(Proxies),
    /// A network namespace per node.
    Namespaces(Netns),
}

/// A cluster of `raftq serve` processes owned by the drill. Dropping it
/// kills every node (and deletes its namespaces).
pub struct LocalCluster {
    exe: PathBuf,
    nodes: BTreeMap<u64, LocalNode>,
    network: Network,
}

/// The flags every node of a local cluster gets: fast elections, so a drill
/// sees many failovers in a short run, and a snapshot every 500 entries, so
/// kills land between applies, snapshots and log purges.
fn node_args(id: u64, dir: &Path, initial: &str) -> Vec<String> {
    [
        "serve",
        "--id",
        &id.to_string(),
        "--data-dir",
        &dir.join(format!("node-{id}")).display().to_string(),
        "--initial-cluster",
        initial,
        "--heartbeat-ms",
        "200",
        "--election-timeout-min-ms",
        "800",
        "--election-timeout-max-ms",
        "1600",
        "--snapshot-after-entries",
        "500",
    ]
    .map(String::from)
    .to_vec()
}

fn check_size(size: u64) -> Result<()> {
    if (1..=7).contains(&size) {
        Ok(())
    } else {
        Err(Error::Setup(format!(
            "a local cluster has 1 to 7 nodes, not {size}"
        )))
    }
}

fn bind_loopback() -> Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0").map_err(|err| Error::Setup(format!("no free port: {err}")))
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr> {
    listener
        .local_addr()
        .map_err(|err| Error::Setup(format!("no local address: {err}")))
}

/// The loopback address node `id` connects to its peers from.
fn source_of(id: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, id as u8))
}

impl LocalCluster {
    /// Starts `size` nodes of the `raftq` binary `exe` on loopback behind
    /// proxies, with data under `dir`. Node N listens on a port of its own,
    /// advertises its proxy's address and connects to its peers from
    /// 127.0.1.N. Runs inside a tokio runtime (the proxies are tasks on it).
    pub fn start(exe: &Path, dir: &Path, size: u64) -> Result<Self> {
        Self::start_with(exe, dir, size, |_| Vec::new())
    }

    /// As [`LocalCluster::start`], with more `raftq serve` flags for each
    /// node (`extra(id)`: TLS and auth for a secured drill).
    pub fn start_with(
        exe: &Path,
        dir: &Path,
        size: u64,
        extra: impl Fn(u64) -> Vec<String>,
    ) -> Result<Self> {
        check_size(size)?;
        let sources = (1..=size).map(|id| (source_of(id), id)).collect();
        let mut proxies = Proxies::new(sources);
        let mut addrs = BTreeMap::new();
        for id in 1..=size {
            let proxy = bind_loopback()?;
            let advertised = local_addr(&proxy)?;
            // The node's own port: bound to find a free one, freed for the
            // node to take (a race with other programs, unlikely on loopback).
            let upstream = local_addr(&bind_loopback()?)?;
            proxies.add(id, proxy, upstream)?;
            addrs.insert(id, (advertised, upstream));
        }
        let initial: Vec<String> = addrs
            .iter()
            .map(|(id, (advertised, _))| format!("{id}={advertised}"))
            .collect();
        let mut cluster = LocalCluster {
            exe: exe.to_path_buf(),
            nodes: BTreeMap::new(),
            network: Network::Proxied(proxies),
        };
        for (id, (advertised, upstream)) in addrs {
            let mut args = node_args(id, dir, &initial.join(","));
            args.extend([
                "--listen".into(),
                upstream.to_string(),
                "--advertise".into(),
                advertised.to_string(),
                "--source-address".into(),
                source_of(id).to_string(),
            ]);
            args.extend(extra(id));
            cluster.launch(id, advertised.to_string(), args, dir)?;
        }
        Ok(cluster)
    }

    /// Starts `size` nodes of `exe`, each in a network namespace of its own
    /// (node N at 10.213.X.N:7400), with data under `dir`. Needs root.
    pub fn start_in_namespaces(exe: &Path, dir: &Path, size: u64) -> Result<Self> {
        check_size(size)?;
        let ids: Vec<u64> = (1..=size).collect();
        let net = Netns::create(&ids)?;
        let addrs: BTreeMap<u64, String> = ids
            .iter()
            .map(|id| (*id, format!("{}:7400", net.ip(*id))))
            .collect();
        let initial: Vec<String> = addrs
            .iter()
            .map(|(id, addr)| format!("{id}={addr}"))
            .collect();
        let mut cluster = LocalCluster {
            exe: exe.to_path_buf(),
            nodes: BTreeMap::new(),
            network: Network::Namespaces(net),
        };
        for (id, addr) in addrs {
            let mut args = node_args(id, dir, &initial.join(","));
            args.extend(["--listen".into(), addr.clone()]);
            cluster.launch(id, addr, args, dir)?;
        }
        Ok(cluster)
    }

    /// Adds node `id`, reached at `addr`, run with `args`, and starts it.
    fn launch(&mut self, id: u64, addr: String, args: Vec<String>, dir: &Path) -> Result<()> {
        self.nodes.insert(
            id,
            LocalNode {
                addr,
                args,
                data_dir: dir.join(format!("node-{id}")),
                log: dir.join(format!("node-{id}.log")),
                child: None,
            },
        );
        self.start(id)
    }

    /// Every node's address (the one clients and peers use).
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.addr.clone()).collect()
    }

    fn node(&mut self, id: u64) -> Result<&mut LocalNode> {
        self.nodes
            .get_mut(&id)
            .ok_or_else(|| Error::Setup(format!("no node {id} in the local cluster")))
    }

    /// Sends `signal` to node `id`'s process, if it runs.
    fn signal(&mut self, id: u64, signal: &str) -> Result<()> {
        let node = self.node(id)?;
        if let Some(child) = &node.child {
            Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .map_err(|err| Error::Setup(format!("cannot run kill: {err}")))?;
        }
        Ok(())
    }
}

impl Backend for LocalCluster {
    fn name(&self) -> &'static str {
        match self.network {
            Network::Proxied(_) => "local cluster",
            Network::Namespaces(_) => "cluster in network namespaces",
        }
    }

    fn members(&self) -> Vec<(u64, String)> {
        self.nodes
            .iter()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    }

    fn kill(&mut self, id: u64) -> Result<()> {
        let node = self.node(id)?;
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    fn start(&mut self, id: u64) -> Result<()> {
        let mut command = match &self.network {
            Network::Proxied(_) => Command::new(&self.exe),
            Network::Namespaces(net) => net.command(id, &self.exe),
        };
        let exe = self.exe.clone();
        let node = self.node(id)?;
        if node.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|err| Error::Setup(format!("cannot open {}: {err}", node.log.display())))?;
        let child = command
            .args(&node.args)
            .env_remove("RAFTQ_CLUSTER")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|err| Error::Setup(format!("cannot start {}: {err}", exe.display())))?;
        node.child = Some(child);
        Ok(())
    }

    fn pause(&mut self, id: u64) -> Result<()> {
        self.signal(id, "-STOP")
    }

    fn can_wipe(&self) -> bool {
        true
    }

    fn wipe(&mut self, id: u64) -> Result<()> {
        self.kill(id)?;
        let node = self.node(id)?;
        std::fs::remove_dir_all(&node.data_dir)
            .map_err(|err| Error::Setup(format!("cannot wipe {}: {err}", node.data_dir.display())))
    }

    fn resume(&mut self, id: u64) -> Result<()> {
        self.signal(id, "-CONT")
    }

    fn cut(&mut self, cuts: &[Cut]) -> Result<()> {
        match &mut self.network {
            Network::Proxied(proxies) => {
                proxies.cut(cuts);
                Ok(())
            }
            Network::Namespaces(net) => net.cut(cuts),
        }
    }

    fn mend(&mut self) -> Result<()> {
        match &mut self.network {
            Network::Proxied(proxies) => {
                proxies.mend();
                Ok(())
            }
            Network::Namespaces(net) => net.mend(),
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
