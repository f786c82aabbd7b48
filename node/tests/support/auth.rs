//! Helpers of the authentication tests: `starling passwd` run in-process on a password file,
//! and a CONNECT with a user name and password that reports its CONNACK code.

use std::path::Path;

use bytes::Bytes;
use starling_core::codec::{ByteString, ProtocolVersion, ReasonCode};
use starling_node::auth::cli::{run_passwd_with_input, PasswdArgs};

use super::{raw::connect_packet, RawClient, TestBroker};

/// Runs `starling passwd FILE <command>` (the command's code, in-process: the binary in a shared
/// target directory may belong to another build) with `stdin`; returns (success, stdout), or the
/// error as stdout on failure.
pub fn passwd(file: &Path, command: &[&str], stdin: &str) -> (bool, String) {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: PasswdArgs,
    }
    let mut argv = vec!["passwd".to_string(), file.display().to_string()];
    argv.extend(command.iter().map(|arg| (*arg).to_string()));
    let cli = Cli::try_parse_from(argv).expect("valid passwd arguments");
    let mut input = std::io::Cursor::new(stdin.as_bytes().to_vec());
    let mut out = Vec::new();
    match run_passwd_with_input(&cli.args, Some(&mut input), &mut out) {
        Ok(()) => (true, String::from_utf8(out).expect("UTF-8 output")),
        Err(error) => (false, format!("{error:#}")),
    }
}

/// Adds (or replaces) `user` with `password` in the password file (argon2 only).
pub fn set_password(file: &Path, user: &str, password: &str) {
    let (ok, out) = passwd(file, &["add", user], &format!("{password}\n"));
    assert!(ok, "passwd add {user}: {out}");
}

/// Connects as `client_id` with the given credentials; returns the client and the CONNACK code.
pub async fn connect_with_credentials(
    broker: &TestBroker,
    version: ProtocolVersion,
    client_id: &str,
    user: Option<&str>,
    password: Option<&str>,
) -> (RawClient, ReasonCode) {
    let mut connect = connect_packet(version, client_id);
    connect.username = user.map(ByteString::from);
    connect.password = password.map(|p| Bytes::copy_from_slice(p.as_bytes()));
    let (client, connack) = RawClient::connect_with(broker.addr, connect).await;
    (client, connack.reason_code)
}
