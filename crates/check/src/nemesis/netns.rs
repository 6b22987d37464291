//! Network namespaces for a [`LocalCluster`](super::LocalCluster): each node
//! in a namespace of its own with its own address, all joined by a bridge in
//! a "switch" namespace that the host also has a leg in (for the drill's
//! client). A cut is a pair of iptables DROP rules, one in each node's
//! namespace: packets vanish in the kernel, as with a real firewall or a
//! pulled cable. Needs root (`ip netns`, `iptables`); nothing on the host's
//! own firewall or routes is touched beyond one veth with an address on a
//! private /24.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;

use super::Cut;
use crate::error::{Error, Result};

/// The namespaces, links and rules of one cluster; dropping it deletes them.
pub struct Netns {
    tag: String,
    subnet: [u8; 3],
    ids: Vec<u64>,
    namespaces: Vec<String>,
    cut: BTreeSet<Cut>,
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let output = Command::new(program).args(args).output().map_err(|err| {
        Error::Setup(format!(
            "cannot run {program}: {err} (install iproute2 and iptables, run as root)"
        ))
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Setup(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

impl Netns {
    /// Creates the switch, one namespace per node in `ids` and the host's
    /// link. Needs root.
    pub fn create(ids: &[u64]) -> Result<Self> {
        if ids.iter().any(|id| !(1..=200).contains(id)) {
            return Err(Error::Setup("node ids in namespaces are 1 to 200".into()));
        }
        let pid = std::process::id();
        let tag = format!("rq{}", pid % 100_000);
        let subnet = [10, 213, (pid % 250) as u8];
        let mut net = Netns {
            tag,
            subnet,
            ids: ids.to_vec(),
            namespaces: Vec::new(),
            cut: BTreeSet::new(),
        };
        net.build().map_err(|err| match err {
            Error::Setup(why) if why.contains("Operation not permitted") => Error::Setup(format!(
                "network namespaces need root ({why}); without root, use --nemesis local"
            )),
            other => other,
        })?;
        Ok(net)
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.tag)
    }

    fn namespace(&self, id: u64) -> String {
        format!("{}-n{id}", self.tag)
    }

    /// The address node `id` listens on, reachable from the host.
    pub fn ip(&self, id: u64) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, id as u8)
    }

    fn host_link(&self) -> String {
        format!("{}h", self.tag)
    }

    fn build(&mut self) -> Result<()> {
        let switch = self.switch();
        run("ip", &["netns", "add", &switch])?;
        self.namespaces.push(switch.clone());
        let in_switch = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &switch, "ip"];
            all.extend_from_slice(args);
            run("ip", &all)
        };
        in_switch(&["link", "add", "br0", "type", "bridge"])?;
        in_switch(&["link", "set", "br0", "up"])?;
        let [a, b, c] = self.subnet;
        // The host's leg: its end keeps an address on the subnet.
        let host = self.host_link();
        let host_peer = format!("{}hp", self.tag);
        run(
            "ip",
            &[
                "link", "add", &host, "type", "veth", "peer", "name", &host_peer,
            ],
        )?;
        run("ip", &["link", "set", &host_peer, "netns", &switch])?;
        in_switch(&["link", "set", &host_peer, "master", "br0"])?;
        in_switch(&["link", "set", &host_peer, "up"])?;
        run(
            "ip",
            &["addr", "add", &format!("{a}.{b}.{c}.250/24"), "dev", &host],
        )?;
        run("ip", &["link", "set", &host, "up"])?;
        for id in self.ids.clone() {
            let ns = self.namespace(id);
            run("ip", &["netns", "add", &ns])?;
            self.namespaces.push(ns.clone());
            let node_end = format!("{}n{id}", self.tag);
            let switch_end = format!("{}p{id}", self.tag);
            run(
                "ip",
                &[
                    "link",
                    "add",
                    &node_end,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &switch_end,
                ],
            )?;
            run("ip", &["link", "set", &switch_end, "netns", &switch])?;
            in_switch(&["link", "set", &switch_end, "master", "br0"])?;
            in_switch(&["link", "set", &switch_end, "up"])?;
            run("ip", &["link", "set", &node_end, "netns", &ns])?;
            let in_node = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &ns, "ip"];
                all.extend_from_slice(args);
                run("ip", &all)
            };
            in_node(&["link", "set", "lo", "up"])?;
            in_node(&["link", "set", &node_end, "name", "eth0"])?;
            in_node(&["addr", "add", &format!("{}/24", self.ip(id)), "dev", "eth0"])?;
            in_node(&["link", "set", "eth0", "up"])?;
        }
        // iptables must work inside a node's namespace before any fault.
        self.iptables(self.ids[0], &["-L", "INPUT", "-n"])
    }

    fn iptables(&self, id: u64, args: &[&str]) -> Result<()> {
        let ns = self.namespace(id);
        let mut all = vec!["netns", "exec", &ns, "iptables", "-w"];
        all.extend_from_slice(args);
        run("ip", &all).map_err(|err| match err {
            Error::Setup(why) if why.contains("cannot run") || why.contains("No such file") => {
                Error::Setup(format!(
                    "{why}; the netns nemesis needs iptables (apt-get install iptables)"
                ))
            }
            other => other,
        })
    }

    /// The command that runs a program in node `id`'s namespace.
    pub fn command(&self, id: u64, program: &std::path::Path) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace(id)])
            .arg(program);
        command
    }

    /// Drops the traffic between each pair in `cuts`, both ways.
    pub fn cut(&mut self, cuts: &[Cut]) -> Result<()> {
        for &(a, b) in cuts {
            let link = (a.min(b), a.max(b));
            if !self.cut.insert(link) {
                continue;
            }
            for (here, there) in [(a, b), (b, a)] {
                let from = self.ip(there).to_string();
                self.iptables(here, &["-A", "INPUT", "-s", &from, "-j", "DROP"])?;
            }
        }
        Ok(())
    }

    /// Removes every DROP rule.
    pub fn mend(&mut self) -> Result<()> {
        if self.cut.is_empty() {
            return Ok(());
        }
        for id in self.ids.clone() {
            self.iptables(id, &["-F", "INPUT"])?;
        }
        self.cut.clear();
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace deletes the links in it, and so their peers.
        for ns in self.namespaces.drain(..).rev() {
            let _ = run("ip", &["netns", "del", &ns]);
        }
        let _ = run("ip", &["link", "del", &self.host_link()]);
    }
}
