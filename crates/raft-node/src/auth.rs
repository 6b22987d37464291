//! Users, bearer tokens and per-queue permissions.
//!
//! When a node has a users file (`auth_file`), every public call must carry
//! `authorization: Bearer <token>` in its gRPC metadata. The node hashes the
//! token (SHA-256) and looks the hash up among its users; a missing or
//! unknown token gets `UNAUTHENTICATED`. Each call then needs one
//! [`Permission`] on the queue it names; without it the call gets
//! `PERMISSION_DENIED` naming the permission and the queue, before anything
//! is proposed, so a refused call changes no state.
//!
//! **Why a file and not the replicated state.** The first user must exist
//! before any call can be made (a replicated user table needs a way in
//! before it has users); tokens in the Raft log would sit in every log,
//! snapshot and backup, which are not encrypted; and a file is what
//! operators already distribute as a secret (a Kubernetes secret mounted on
//! every pod). The cost: every node must have the same file. A node re-reads
//! it on `SIGHUP` and when the file changes (checked every 5 s; a file that
//! does not parse is logged and the old users kept), so tokens rotate
//! without a restart.
//!
//! **Forwarded calls.** A follower forwards a call to the leader with the
//! caller's own `authorization` header, and the leader authenticates and
//! authorizes it again, exactly as if the client had called it: a forwarded
//! call is allowed what its caller is allowed, never what the forwarding
//! node is, and a node's certificate grants no queue permission at all.
//!
//! The file (TOML; `raftq auth add-user` writes entries):
//!
//! ```toml
//! [[user]]
//! name = "orders-service"
//! token_sha256 = "<64 hex digits>"   # raftq auth hash < token
//! admin = false                      # membership changes, full status
//! [user.queues]                      # queue-name pattern = permissions
//! "orders.*" = ["send", "receive"]
//! "orders.dlq" = ["manage"]
//! ```
//!
//! Patterns match whole queue names; `*` stands for any run of characters
//! (`*` alone: every queue). Permissions: `send` (enqueue), `receive`
//! (receive, consume, ack, nack, extend, release), `manage` (create, update,
//! delete, purge, redrive; get and list need any permission on the queue).
//! `admin` is cluster-wide: add and remove nodes, and the full status.
//! After RabbitMQ's per-vhost configure/write/read permissions on name
//! patterns, and NATS's per-subject publish/subscribe permissions.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use crate::error::{Error, Result};

/// The metadata key of the bearer token.
pub const AUTHORIZATION_HEADER: &str = "authorization";

/// What a call needs on a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Enqueue.
    Send,
    /// Receive, consume, ack, nack, extend, release.
    Receive,
    /// Create, update, delete, purge, redrive.
    Manage,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Permission::Send => "send",
            Permission::Receive => "receive",
            Permission::Manage => "manage",
        })
    }
}

/// One user of the file.
#[derive(Debug)]
pub struct User {
    /// The user's name, shown in errors and logs (never the token).
    pub name: String,
    admin: bool,
    grants: Vec<(String, Vec<Permission>)>,
}

impl User {
    fn allows(&self, permission: Permission, queue: &str) -> bool {
        self.grants
            .iter()
            .any(|(pattern, perms)| perms.contains(&permission) && matches(pattern, queue))
    }

    fn sees(&self, queue: &str) -> bool {
        self.grants
            .iter()
            .any(|(pattern, perms)| !perms.is_empty() && matches(pattern, queue))
    }
}

/// Whether `name` matches `pattern`, where `*` stands for any run of
/// characters (none included).
pub fn matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Who is calling: decided once per call by [`Auth::authenticate`] and kept
/// in the request's extensions.
#[derive(Clone, Debug)]
pub enum Caller {
    /// Auth is off on this node: anyone may do anything.
    Anyone,
    /// A user of the users file.
    User(Arc<User>),
}

impl Caller {
    /// The caller of `request`, as the interceptor recorded it. A request
    /// that skipped the interceptor is nobody, and allowed nothing.
    pub fn of<T>(request: &Request<T>) -> std::result::Result<Caller, Status> {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no caller was authenticated for this call"))
    }

    /// `PERMISSION_DENIED` unless the caller has `permission` on `queue`.
    pub fn check(&self, permission: Permission, queue: &str) -> Result<()> {
        match self {
            Caller::Anyone => Ok(()),
            Caller::User(user) if user.allows(permission, queue) => Ok(()),
            Caller::User(user) => Err(Error::PermissionDenied(format!(
                "user {:?} lacks the {permission} permission on queue {queue:?}: grant it in the \
                 users file (a pattern matching {queue:?} with \"{permission}\")",
                user.name
            ))),
        }
    }

    /// `PERMISSION_DENIED` unless the caller has some permission on `queue`
    /// (what reading its stats needs).
    pub fn check_sees(&self, queue: &str) -> Result<()> {
        match self {
            Caller::User(user) if !self.sees(queue) => Err(Error::PermissionDenied(format!(
                "user {:?} has no permission on queue {queue:?}: grant one in the users file",
                user.name
            ))),
            _ => Ok(()),
        }
    }

    /// `PERMISSION_DENIED` unless the caller is a cluster admin.
    pub fn check_admin(&self, what: &str) -> Result<()> {
        match self {
            Caller::User(user) if !user.admin => Err(Error::PermissionDenied(format!(
                "user {:?} lacks the admin permission, which {what} needs: set admin = true \
                 for it in the users file",
                user.name
            ))),
            _ => Ok(()),
        }
    }

    /// Whether the caller is a cluster admin (or auth is off).
    pub fn is_admin(&self) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::User(user) => user.admin,
        }
    }

    /// Whether the caller may see `queue` in lists: any permission on it.
    pub fn sees(&self, queue: &str) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::User(user) => user.admin || user.sees(queue),
        }
    }
}

/// The users file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<UserEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    token_sha256: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    queues: BTreeMap<String, Vec<Permission>>,
}

/// Users by the SHA-256 of their token.
type Users = HashMap<[u8; 32], Arc<User>>;

/// The users of a node: read from its users file at start and on `SIGHUP`.
#[derive(Debug)]
pub struct Auth {
    path: PathBuf,
    users: RwLock<Arc<Users>>,
}

/// The SHA-256 of a token, as the users file stores it (64 hex digits).
pub fn hash_token(token: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A new random token: `rq_` and 64 hex digits (256 bits from the
/// operating system's random source).
pub fn new_token() -> Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Internal("the system's random source failed".into()))?;
    Ok(format!("rq_{}", hex(&bytes)))
}

/// A TOML basic string holding `text`, or an error for control characters.
fn toml_string(what: &str, text: &str) -> Result<String> {
    if text.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "{what} {text:?} holds control characters"
        )));
    }
    Ok(format!(
        "\"{}\"",
        text.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// The users-file entry (TOML) of a user: its name, the hash of `token`,
/// whether it is an admin and its permissions by queue pattern. It parses
/// back into the same user (tested).
pub fn user_entry(
    name: &str,
    token: &str,
    admin: bool,
    queues: &[(String, Vec<Permission>)],
) -> Result<String> {
    if name.trim().is_empty() {
        return Err(Error::InvalidArgument("the user name is empty".into()));
    }
    let mut entry = format!(
        "[[user]]\nname = {}\ntoken_sha256 = \"{}\"\nadmin = {admin}\n",
        toml_string("user name", name)?,
        hash_token(token)
    );
    if !queues.is_empty() {
        entry.push_str("[user.queues]\n");
        for (pattern, permissions) in queues {
            if pattern.is_empty() {
                return Err(Error::InvalidArgument(
                    "a queue pattern is empty (use \"*\" for every queue)".into(),
                ));
            }
            let list: Vec<String> = permissions.iter().map(|p| format!("\"{p}\"")).collect();
            entry.push_str(&format!(
                "{} = [{}]\n",
                toml_string("queue pattern", pattern)?,
                list.join(", ")
            ));
        }
    }
    Ok(entry)
}

/// Parses `PATTERN=PERM[,PERM…]` (say `orders.*=send,receive`).
pub fn parse_grant(text: &str) -> std::result::Result<(String, Vec<Permission>), String> {
    let (pattern, list) = text.rsplit_once('=').ok_or_else(|| {
        format!("{text:?} is not PATTERN=PERMISSIONS (say orders.*=send,receive)")
    })?;
    let mut permissions = Vec::new();
    for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        permissions.push(match word {
            "send" => Permission::Send,
            "receive" => Permission::Receive,
            "manage" => Permission::Manage,
            other => {
                return Err(format!(
                    "{other:?} is not a permission: send, receive or manage (admin is --admin)"
                ))
            }
        });
    }
    if pattern.is_empty() || permissions.is_empty() {
        return Err(format!(
            "{text:?} needs a pattern and at least one permission"
        ));
    }
    Ok((pattern.to_string(), permissions))
}

/// Parses a users file's text; `origin` names it in errors.
fn parse_users(origin: &str, text: &str) -> Result<Users> {
    // The error's message and line only: toml's snippet of the file could
    // show a token someone wrote there by mistake.
    let file: UsersFile = toml::from_str(text).map_err(|err| {
        let line = err.span().map(|span| {
            text.as_bytes()[..span.start.min(text.len())]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1
        });
        Error::Config(format!(
            "users file {origin}{}: {}",
            line.map(|l| format!(", line {l}")).unwrap_or_default(),
            err.message()
        ))
    })?;
    let mut users = Users::new();
    let mut names = std::collections::HashSet::new();
    for entry in file.user {
        let bad = |why: String| {
            Error::Config(format!("users file {origin}: user {:?}: {why}", entry.name))
        };
        if entry.name.trim().is_empty() {
            return Err(Error::Config(format!(
                "users file {origin}: a user has an empty name"
            )));
        }
        if !names.insert(entry.name.clone()) {
            return Err(bad("the name appears twice".into()));
        }
        let hash = parse_hash(&entry.token_sha256.to_ascii_lowercase()).ok_or_else(|| {
            bad("token_sha256 must be 64 hex digits (`raftq auth hash` prints it)".into())
        })?;
        if let Some(pattern) = entry.queues.keys().find(|p| p.is_empty()) {
            return Err(bad(format!(
                "queue pattern {pattern:?} is empty (use \"*\" for every queue)"
            )));
        }
        let user = Arc::new(User {
            name: entry.name.clone(),
            admin: entry.admin,
            grants: entry.queues.into_iter().collect(),
        });
        if users.insert(hash, user).is_some() {
            return Err(bad("another user has the same token".into()));
        }
    }
    Ok(users)
}

fn read_users(path: &Path) -> Result<Users> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        Error::Config(format!("cannot read users file {}: {err}", path.display()))
    })?;
    let users = parse_users(&path.display().to_string(), &text)?;
    if users.is_empty() {
        // An empty file (one caught half-written, an empty Secret) would
        // lock every caller out.
        return Err(Error::Config(format!(
            "users file {} has no users: every call would be refused; add one with \
             `raftq auth add-user`",
            path.display()
        )));
    }
    Ok(users)
}

/// The names of the users in a users file's text, checking it as a node
/// would (an empty text has none).
pub fn user_names(origin: &str, text: &str) -> Result<Vec<String>> {
    Ok(parse_users(origin, text)?
        .into_values()
        .map(|user| user.name.clone())
        .collect())
}

impl Auth {
    /// Reads the users file at `path`; a file that does not parse is a
    /// config error naming the user and the rule.
    pub fn load(path: &Path) -> Result<Self> {
        let users = read_users(path)?;
        Ok(Auth {
            path: path.to_path_buf(),
            users: RwLock::new(Arc::new(users)),
        })
    }

    /// The users file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file again; on error the users stay as they were.
    pub fn reload(&self) -> Result<usize> {
        let users = read_users(&self.path)?;
        let count = users.len();
        *self.users.write().expect("users lock is never poisoned") = Arc::new(users);
        Ok(count)
    }

    /// The user whose token `metadata` carries, or `UNAUTHENTICATED`.
    pub fn user(&self, metadata: &MetadataMap) -> std::result::Result<Arc<User>, Status> {
        let header = metadata.get(AUTHORIZATION_HEADER).ok_or_else(|| {
            Status::unauthenticated(
                "this cluster needs a token: send `authorization: Bearer TOKEN` \
                 (the CLI's --token or RAFTQ_TOKEN)",
            )
        })?;
        // The scheme is case-insensitive (RFC 7235), then whitespace.
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.split_once(|c: char| c.is_ascii_whitespace()))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("the authorization header must be `Bearer TOKEN`")
            })?;
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut hash = [0u8; 32];
        hash.copy_from_slice(digest.as_ref());
        let users = self
            .users
            .read()
            .expect("users lock is never poisoned")
            .clone();
        users.get(&hash).cloned().ok_or_else(|| {
            Status::unauthenticated("the token is not valid here (unknown, or revoked)")
        })
    }

    /// The interceptor of the public services: records the [`Caller`] in the
    /// request's extensions, or refuses the call with `UNAUTHENTICATED`.
    /// With no users file (`auth` is `None`) every caller is [`Caller::Anyone`].
    pub fn authenticate(
        auth: Option<Arc<Auth>>,
    ) -> impl FnMut(Request<()>) -> std::result::Result<Request<()>, Status> + Clone {
        move |mut request: Request<()>| {
            let caller = match &auth {
                None => Caller::Anyone,
                Some(auth) => Caller::User(auth.user(request.metadata())?),
            };
            request.extensions_mut().insert(caller);
            Ok(request)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_names_with_star_for_any_run() {
        for (pattern, name, expected) in [
            ("*", "anything", true),
            ("*", "", true),
            ("orders.*", "orders.eu", true),
            ("orders.*", "orders.", true),
            ("orders.*", "orders", false),
            ("orders.*", "billing", false),
            ("orders", "orders", true),
            ("orders", "orders2", false),
            ("*.dlq", "orders.dlq", true),
            ("*.dlq", "orders.dlq.x", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
        ] {
            assert_eq!(matches(pattern, name), expected, "{pattern} vs {name}");
        }
    }

    fn file(text: &str) -> Result<Users> {
        parse_users("test", text)
    }

    #[test]
    fn a_user_gets_exactly_the_permissions_its_patterns_grant() {
        let hash = hash_token("t1");
        let users = file(&format!(
            "[[user]]\nname = \"orders\"\ntoken_sha256 = \"{hash}\"\n[user.queues]\n\"orders.*\" = [\"send\", \"receive\"]\n"
        ))
        .expect("parses");
        let user = users.values().next().expect("one user").clone();
        let caller = Caller::User(user);
        assert!(caller.check(Permission::Send, "orders.eu").is_ok());
        assert!(caller.check(Permission::Receive, "orders.eu").is_ok());
        let denied = caller
            .check(Permission::Manage, "orders.eu")
            .expect_err("no manage")
            .to_string();
        assert!(
            denied.contains("manage") && denied.contains("orders.eu"),
            "{denied}"
        );
        assert!(caller.check_sees("orders.x").is_ok() && caller.check_sees("billing").is_err());
        assert!(caller.check(Permission::Send, "billing").is_err());
        assert!(caller.sees("orders.eu") && !caller.sees("billing"));
        assert!(!caller.is_admin() && caller.check_admin("add-node").is_err());
    }

    #[test]
    fn an_entry_made_for_a_user_parses_back_into_that_user() {
        let token = new_token().expect("random");
        assert!(token.starts_with("rq_") && token.len() == 67, "{token}");
        assert_ne!(token, new_token().expect("random"));
        let grants = vec![
            parse_grant("orders.*=send,receive").expect("grant"),
            parse_grant("we\"ird\\=manage").expect("grant"),
        ];
        let entry = user_entry("svc \"one\"", &token, false, &grants).expect("entry");
        let users = file(&entry).expect("parses back");
        let digest = parse_hash(&hash_token(&token)).expect("hash");
        let user = users.get(&digest).expect("found by its token");
        assert_eq!(user.name, "svc \"one\"");
        assert!(user.allows(Permission::Send, "orders.x"));
        assert!(user.allows(Permission::Manage, "we\"ird\\"));
        assert!(!user.allows(Permission::Manage, "orders.x") && !user.admin);
        for bad in ["orders", "=send", "x=", "x=write"] {
            assert!(parse_grant(bad).is_err(), "{bad}");
        }
        assert!(user_entry("a\nb", &token, true, &[]).is_err());
    }

    #[test]
    fn a_bad_users_file_is_refused_naming_the_user_and_the_rule() {
        let hash = hash_token("t");
        for (text, says) in [
            ("[[user]]\nname = \"a\"\ntoken_sha256 = \"abc\"\n".to_string(), "64 hex digits"),
            (
                format!("[[user]]\nname = \"a\"\ntoken_sha256 = \"{hash}\"\n[user.queues]\n\"x\" = [\"write\"]\n"),
                "unknown variant",
            ),
            (
                format!("[[user]]\nname = \"a\"\ntoken_sha256 = \"{hash}\"\n[[user]]\nname = \"a\"\ntoken_sha256 = \"{}\"\n", hash_token("u")),
                "twice",
            ),
            (
                format!("[[user]]\nname = \"a\"\ntoken_sha256 = \"{hash}\"\n[[user]]\nname = \"b\"\ntoken_sha256 = \"{hash}\"\n"),
                "same token",
            ),
            (format!("[[user]]\nname = \"a\"\ntoken = \"{hash}\"\n"), "unknown field"),
        ] {
            let err = file(&text).expect_err(says).to_string();
            assert!(err.contains(says), "{err} should say {says}");
        }
    }

    #[test]
    fn tokens_are_looked_up_by_hash_and_bad_headers_are_unauthenticated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users.toml");
        let hash = hash_token("secret");
        std::fs::write(
            &path,
            format!("[[user]]\nname = \"root\"\ntoken_sha256 = \"{hash}\"\nadmin = true\n"),
        )
        .expect("write");
        let auth = Auth::load(&path).expect("loads");
        let mut metadata = MetadataMap::new();
        assert_eq!(
            auth.user(&metadata).expect_err("none").code(),
            tonic::Code::Unauthenticated
        );
        metadata.insert(AUTHORIZATION_HEADER, "Bearer wrong".parse().expect("ascii"));
        assert_eq!(
            auth.user(&metadata).expect_err("wrong").code(),
            tonic::Code::Unauthenticated
        );
        metadata.insert(AUTHORIZATION_HEADER, "secret".parse().expect("ascii"));
        assert_eq!(
            auth.user(&metadata).expect_err("no Bearer").code(),
            tonic::Code::Unauthenticated
        );
        metadata.insert(
            AUTHORIZATION_HEADER,
            "Bearer secret".parse().expect("ascii"),
        );
        assert_eq!(auth.user(&metadata).expect("valid").name, "root");
        metadata.insert(
            AUTHORIZATION_HEADER,
            "bearer \t secret".parse().expect("ascii"),
        );
        assert_eq!(auth.user(&metadata).expect("any case").name, "root");
        // An empty file would lock everyone out: refused, the users stay.
        std::fs::write(&path, "").expect("write");
        let err = auth.reload().expect_err("no users").to_string();
        assert!(err.contains("no users"), "{err}");
        assert_eq!(auth.user(&metadata).expect("kept").name, "root");
        // A parse error names the line, never the text around it.
        std::fs::write(&path, "[[user]]\nname = \"x\"\ntoken = \"rq_leaked\"\n").expect("write");
        let err = auth.reload().expect_err("unknown field").to_string();
        assert!(
            err.contains("line 3") && !err.contains("rq_leaked"),
            "{err}"
        );
        // Rotation: a new file replaces the users; a broken one is refused
        // and the old users stay.
        std::fs::write(&path, "not toml [").expect("write");
        assert!(auth.reload().is_err());
        assert_eq!(auth.user(&metadata).expect("kept").name, "root");
        std::fs::write(
            &path,
            format!(
                "[[user]]\nname = \"new\"\ntoken_sha256 = \"{}\"\n",
                hash_token("fresh")
            ),
        )
        .expect("write");
        assert_eq!(auth.reload().expect("reloads"), 1);
        assert!(auth.user(&metadata).is_err(), "the old token is revoked");
    }
}
