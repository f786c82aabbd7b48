//! `starling passwd` (the password file) and `starling ban` (the ban list file). Both edit
//! the files in place (atomic replace, mode 0600); a running broker picks the change up
//! within `auth.reload_interval_ms`, or at once on SIGHUP.

use std::{
    io::{BufRead, IsTerminal, Write},
    path::PathBuf,
};

use clap::{Args, Subcommand};

use super::{bans, password, scram};

/// `starling passwd FILE add|remove|list`.
#[derive(Args, Debug)]
pub struct PasswdArgs {
    /// The password file.
    pub file: PathBuf,
    #[command(subcommand)]
    pub command: PasswdCommand,
}

/// What to do with the password file.
#[derive(Subcommand, Debug)]
pub enum PasswdCommand {
    /// Adds a user or replaces its password. The password is read from the terminal (asked
    /// twice, not echoed) or, when stdin is not a terminal, from the first line of stdin.
    Add {
        /// User name.
        user: String,
        /// Also store SCRAM-SHA-256 keys (for MQTT 5 enhanced authentication).
        #[arg(long)]
        scram: bool,
        /// PBKDF2 iterations of the SCRAM keys.
        #[arg(long, default_value_t = scram::DEFAULT_ITERATIONS)]
        scram_iterations: u32,
    },
    /// Removes a user.
    Remove {
        /// User name.
        user: String,
    },
    /// Lists the users and their kinds of credential.
    List,
}

/// `starling ban add|remove|list`.
#[derive(Args, Debug)]
pub struct BanArgs {
    /// The ban list file (default: `auth.ban_file` of `--config`).
    #[arg(long)]
    pub file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: BanCommand,
}

/// What to do with the ban list.
#[derive(Subcommand, Debug)]
pub enum BanCommand {
    /// Bans a client id, user name, certificate serial or address (CIDR allowed).
    Add {
        /// What the value names.
        kind: bans::BanKind,
        /// The value.
        value: String,
    },
    /// Lifts a ban.
    Remove {
        /// What the value names.
        kind: bans::BanKind,
        /// The value.
        value: String,
    },
    /// Lists the bans.
    List,
}

fn read_password(input: Option<&mut dyn BufRead>) -> anyhow::Result<String> {
    if let Some(input) = input {
        let mut line = String::new();
        input.read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Password again: ")?;
        if first != second {
            anyhow::bail!("the passwords differ");
        }
        return Ok(first);
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Runs `starling passwd`.
///
/// # Errors
/// Returns an error if the file cannot be read or written, or the input is invalid.
pub fn run_passwd(args: &PasswdArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    run_passwd_with_input(args, None, out)
}

/// Runs `starling passwd`, reading a new password from `input` instead of the terminal or
/// stdin when given (for tests and tools).
///
/// # Errors
/// Returns an error if the file cannot be read or written, or the input is invalid.
pub fn run_passwd_with_input(
    args: &PasswdArgs,
    input: Option<&mut dyn BufRead>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match &args.command {
        PasswdCommand::Add {
            user,
            scram,
            scram_iterations,
        } => {
            let password = read_password(input)?;
            password::add_user(
                &args.file,
                user,
                password.as_bytes(),
                scram.then_some(*scram_iterations),
            )?;
            writeln!(out, "user {user:?} saved in {}", args.file.display())?;
        }
        PasswdCommand::Remove { user } => {
            if password::remove_user(&args.file, user)? {
                writeln!(out, "user {user:?} removed from {}", args.file.display())?;
            } else {
                anyhow::bail!("no user {user:?} in {}", args.file.display());
            }
        }
        PasswdCommand::List => {
            for (user, kinds) in password::list_users(&args.file)? {
                writeln!(out, "{user}\t{}", kinds.join(","))?;
            }
        }
    }
    Ok(())
}

/// Runs `starling ban` on `file`.
///
/// # Errors
/// Returns an error if the file cannot be read or written, or the value is invalid.
pub fn run_ban(
    command: &BanCommand,
    file: &std::path::Path,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        BanCommand::Add { kind, value } => {
            let added = bans::add_ban(file, *kind, value)?;
            writeln!(
                out,
                "{} {value:?} {}",
                kind_name(*kind),
                if added {
                    "banned"
                } else {
                    "was already banned"
                }
            )?;
        }
        BanCommand::Remove { kind, value } => {
            if !bans::remove_ban(file, *kind, value)? {
                anyhow::bail!("{} {value:?} is not banned", kind_name(*kind));
            }
            writeln!(out, "{} {value:?} no longer banned", kind_name(*kind))?;
        }
        BanCommand::List => {
            for (kind, value) in bans::list_bans(file)? {
                writeln!(out, "{kind}\t{value}")?;
            }
        }
    }
    Ok(())
}

fn kind_name(kind: bans::BanKind) -> &'static str {
    match kind {
        bans::BanKind::ClientId => "client id",
        bans::BanKind::Username => "user",
        bans::BanKind::CertSerial => "certificate serial",
        bans::BanKind::Address => "address",
    }
}
