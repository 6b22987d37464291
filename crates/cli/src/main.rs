//! The single `raftq` binary.
//!
//! The node (`raftq serve`), the local cluster (`raftq dev`) and the client
//! commands arrive with the running cluster (issue 3). Until then the binary
//! says so and exits with an error instead of pretending to work.

fn main() -> std::process::ExitCode {
    eprintln!(
        "raftq {}: no commands are available in this build yet.\n\
         The storage core is in place; `raftq serve`, `raftq dev` and the client \
         commands arrive with the running cluster. Run the tests with \
         `cargo test --workspace`.",
        env!("CARGO_PKG_VERSION")
    );
    std::process::ExitCode::FAILURE
}
