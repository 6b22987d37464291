//! `raftq auth`: make users-file entries and token hashes.
//!
//! Tokens are stored hashed (SHA-256): `add-user` prints the new token once
//! and appends only its hash to the users file; nodes re-read the file on
//! SIGHUP. See docs/SECURITY.md.

use std::io::{Read, Write};
use std::path::PathBuf;

use raftq_raft_node::auth::{
    hash_token, new_token, parse_grant, user_entry, user_names, Permission,
};

/// `raftq auth` commands.
#[derive(Clone, Debug, clap::Args)]
pub struct AuthArgs {
    #[command(subcommand)]
    command: AuthCommand,
}

#[derive(Clone, Debug, clap::Subcommand)]
enum AuthCommand {
    /// Make a user with a new random token: appends its entry (the token's
    /// hash, never the token) to the users file and prints the token once.
    AddUser {
        /// The user's name (shown in errors and logs).
        name: String,
        /// The users file to append to (created if missing).
        #[arg(long)]
        file: PathBuf,
        /// Permissions on queues matching a pattern: PATTERN=PERM,PERM…;
        /// PERM one of send, receive, manage; `*` in a pattern matches any
        /// run of characters. Repeat for more patterns.
        #[arg(long = "allow", value_parser = parse_grant)]
        allow: Vec<(String, Vec<Permission>)>,
        /// Cluster admin: add and remove nodes, the full status (and every
        /// queue is listed, though queue calls still need --allow).
        #[arg(long)]
        admin: bool,
    },
    /// Print the SHA-256 of a token read from stdin, as the users file's
    /// token_sha256 takes it (for tokens made elsewhere).
    Hash,
}

/// Runs an auth command.
pub fn run(args: AuthArgs) -> anyhow::Result<()> {
    match args.command {
        AuthCommand::AddUser {
            name,
            file,
            allow,
            admin,
        } => {
            let origin = file.display().to_string();
            let existing = match std::fs::read_to_string(&file) {
                Ok(text) => text,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(err) => anyhow::bail!("cannot read {origin}: {err}"),
            };
            // The file is checked as a node reads it, before and after: an
            // entry appended to a broken file would be lost with it.
            let names = user_names(&origin, &existing)
                .map_err(|err| anyhow::anyhow!("{err}\nhint: fix the file first"))?;
            if names.contains(&name) {
                anyhow::bail!(
                    "{origin} already has a user {name:?}: remove its entry first to replace its token"
                );
            }
            let token = new_token()?;
            let entry = user_entry(&name, &token, admin, &allow)?;
            let mut added = String::new();
            if !existing.is_empty() {
                if !existing.ends_with('\n') {
                    added.push('\n');
                }
                added.push('\n');
            }
            added.push_str(&entry);
            user_names(&origin, &format!("{existing}{added}"))?;
            // Appended in place (not replaced): a bind-mounted file keeps
            // its inode, so containers see the change.
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&file)
                .map_err(|err| anyhow::anyhow!("cannot open {origin}: {err}"))?;
            out.write_all(added.as_bytes())?;
            eprintln!(
                "added user {name:?} to {origin}; the nodes take it within 5 s (or at once on \
                 SIGHUP). The token, shown only now:"
            );
            println!("{token}");
            Ok(())
        }
        AuthCommand::Hash => {
            let mut token = String::new();
            std::io::stdin().read_to_string(&mut token)?;
            let token = token.trim();
            if token.is_empty() {
                anyhow::bail!("no token on stdin: `echo -n TOKEN | raftq auth hash`");
            }
            println!("{}", hash_token(token));
            Ok(())
        }
    }
}

/// A throwaway secured setup: certificates for every node and a client
/// (TLS and mutual TLS), a users file with one admin, and its token.
#[derive(Clone, Debug)]
pub struct Secured {
    /// The certificates.
    pub certs: raftq_raft_node::pki::ClusterCerts,
    /// The users file.
    pub users: PathBuf,
    /// The admin's token.
    pub token: String,
}

impl Secured {
    /// Makes (or, when `dir` holds a complete earlier set for the same
    /// nodes, reuses) the files under `dir` for nodes `ids` on loopback.
    pub fn throwaway(dir: &std::path::Path, ids: &[u64]) -> anyhow::Result<Self> {
        let dir = std::path::absolute(dir)?;
        let users = dir.join("users.toml");
        let token_file = dir.join("admin.token");
        let mut nodes = std::collections::BTreeMap::new();
        for id in ids {
            nodes.insert(*id, vec!["127.0.0.1".to_string(), "localhost".to_string()]);
        }
        let expected = |name: &str| dir.join(name);
        let complete = [
            "ca.pem",
            "client.pem",
            "client.key",
            "users.toml",
            "admin.token",
        ]
        .iter()
        .all(|f| expected(f).exists())
            && ids.iter().all(|id| {
                expected(&format!("node-{id}.pem")).exists()
                    && expected(&format!("node-{id}.key")).exists()
            });
        if complete {
            let token = std::fs::read_to_string(&token_file)?.trim().to_string();
            let ca = expected("ca.pem");
            let certs = raftq_raft_node::pki::ClusterCerts {
                nodes: ids
                    .iter()
                    .map(|id| {
                        (
                            *id,
                            raftq_raft_node::tls::TlsPaths {
                                cert: expected(&format!("node-{id}.pem")),
                                key: expected(&format!("node-{id}.key")),
                                client_ca: ca.clone(),
                            },
                        )
                    })
                    .collect(),
                client: (expected("client.pem"), expected("client.key")),
                ca,
            };
            return Ok(Secured {
                certs,
                users,
                token,
            });
        }
        let certs = raftq_raft_node::pki::make_cluster(&dir, &nodes)?;
        // Certificates were missing (a node added, a file lost): they are
        // made anew, but the users and the admin's token are kept.
        if users.exists() && token_file.exists() {
            let token = std::fs::read_to_string(&token_file)?.trim().to_string();
            return Ok(Secured {
                certs,
                users,
                token,
            });
        }
        let token = new_token()?;
        let entry = user_entry(
            "admin",
            &token,
            true,
            &[(
                "*".to_string(),
                vec![Permission::Send, Permission::Receive, Permission::Manage],
            )],
        )?;
        std::fs::write(&users, entry)?;
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&token_file)?;
            writeln!(file, "{token}")?;
        }
        Ok(Secured {
            certs,
            users,
            token,
        })
    }

    /// The `raftq serve` flags of node `id`.
    pub fn serve_args(&self, id: u64) -> Vec<String> {
        let Some(paths) = self.certs.nodes.get(&id) else {
            return Vec::new();
        };
        vec![
            "--tls-cert".into(),
            paths.cert.display().to_string(),
            "--tls-key".into(),
            paths.key.display().to_string(),
            "--tls-client-ca".into(),
            paths.client_ca.display().to_string(),
            "--auth-file".into(),
            self.users.display().to_string(),
        ]
    }

    /// The client settings: the CA and the admin's token.
    pub fn client_config(&self) -> raftq_client::ClientConfig {
        raftq_client::ClientConfig {
            tls: Some(raftq_client::ClientTls {
                ca_pem: std::fs::read(&self.certs.ca).unwrap_or_default(),
                ..raftq_client::ClientTls::default()
            }),
            token: Some(self.token.clone()),
            ..raftq_client::ClientConfig::default()
        }
    }
}
