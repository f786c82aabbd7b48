//! `starling ctl bans list|add|remove`: the ban list through the admin API (the running node
//! edits its `auth.ban_file` and enforces the change at once).

use std::io::Write;

use clap::Subcommand;
use serde_json::{json, Value};

use super::{
    client::{AdminClient, Method},
    table::{cell, write_table},
    Render,
};
use crate::auth::bans::BanKind;

/// `starling ctl bans ...`.
#[derive(Subcommand, Debug)]
pub enum BansCommand {
    /// Lists the bans.
    List,
    /// Bans a client id, user name, certificate serial or address (CIDR allowed); connected
    /// matches are disconnected (0x98) and new ones refused (CONNACK 0x8A).
    Add {
        /// What the value names.
        kind: BanKind,
        /// The value.
        value: String,
    },
    /// Lifts a ban.
    Remove {
        /// What the value names.
        kind: BanKind,
        /// The value.
        value: String,
    },
}

/// Calls the API for `command`; returns the answer and how to print it for people.
pub(super) fn call(client: &AdminClient, command: &BansCommand) -> anyhow::Result<(Value, Render)> {
    Ok(match command {
        BansCommand::List => (
            client.call(Method::Get, "/api/v1/bans", &[], None)?,
            render_list,
        ),
        BansCommand::Add { kind, value } => (
            client.call(
                Method::Post,
                "/api/v1/bans",
                &[],
                Some(&json!({ "kind": kind.name(), "value": value })),
            )?,
            |v, out| {
                if v["added"].as_bool() == Some(true) {
                    writeln!(out, "banned {} {}", cell(&v["kind"]), cell(&v["value"]))
                } else {
                    writeln!(
                        out,
                        "{} {} was already banned",
                        cell(&v["kind"]),
                        cell(&v["value"])
                    )
                }
            },
        ),
        BansCommand::Remove { kind, value } => (
            client.call(
                Method::Delete,
                "/api/v1/bans",
                &[("kind", kind.name().to_string()), ("value", value.clone())],
                None,
            )?,
            |v, out| {
                writeln!(
                    out,
                    "lifted the ban on {} {}",
                    cell(&v["kind"]),
                    cell(&v["value"])
                )
            },
        ),
    })
}

fn render_list(answer: &Value, out: &mut dyn Write) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = answer["bans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|ban| vec![cell(&ban["kind"]), cell(&ban["value"])])
        .collect();
    write_table(out, &["KIND", "VALUE"], &rows)
}
