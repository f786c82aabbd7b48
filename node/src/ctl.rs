//! `starling ctl ...`: the admin API for people (tables) and scripts (`--json`).
//!
//! - [`bans`]: `starling ctl bans ...`, the ban list.
//! - [`client`]: the blocking HTTP client.
//! - [`table`]: plain-text tables.

pub mod bans;
pub mod client;
pub mod table;

use std::io::Write;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use self::{
    bans::BansCommand,
    client::{encode_path_segment, AdminClient, Method},
    table::{cell, write_fields, write_table},
};

/// Options of `starling ctl`.
#[derive(Args, Debug)]
pub struct CtlArgs {
    /// Base URL of the node's admin listener.
    #[arg(
        long,
        env = "STARLING_ADMIN_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// Bearer token of the admin API (`admin.token`).
    #[arg(long, env = "STARLING_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `starling ctl` commands.
#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// Shows the node's figures at a glance.
    Status,
    /// Lists and acts on clients.
    Clients {
        /// What to do with clients.
        #[command(subcommand)]
        command: ClientsCommand,
    },
    /// Shows or deletes sessions.
    Sessions {
        /// What to do with sessions.
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Lists or deletes retained messages.
    Retained {
        /// What to do with retained messages.
        #[command(subcommand)]
        command: RetainedCommand,
    },
    /// Publishes a message as the broker.
    Publish {
        /// Topic name.
        topic: String,
        /// Payload (UTF-8).
        payload: String,
        /// QoS (0, 1 or 2).
        #[arg(long, default_value_t = 0)]
        qos: u8,
        /// Sets the RETAIN flag (an empty payload clears the topic's retained message).
        #[arg(long)]
        retain: bool,
    },
    /// Lists, adds or lifts bans (client id, user name, certificate serial, address).
    Bans {
        /// What to do with the ban list.
        #[command(subcommand)]
        command: BansCommand,
    },
    /// Lists the node's listeners.
    Listeners,
    /// Prints the configuration in force (secrets redacted).
    Config,
    /// Shows the log filter, or sets it (e.g. `debug` or `info,starling_core=debug`).
    LogLevel {
        /// New filter; without it the current one is shown.
        level: Option<String>,
    },
}

/// `starling ctl clients ...`.
#[derive(Subcommand, Debug)]
pub enum ClientsCommand {
    /// Lists clients (connected or with a persistent session), sorted by client id.
    List {
        /// Only client ids starting with this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// Page size (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Start after this client id (the `next` id a previous page printed).
        #[arg(long)]
        after: Option<String>,
    },
    /// Shows one client.
    Show {
        /// Client identifier.
        client_id: String,
    },
    /// Disconnects a client with DISCONNECT 0x98 (Administrative action).
    Kick {
        /// Client identifier.
        client_id: String,
    },
    /// Lists a client's subscriptions.
    Subscriptions {
        /// Client identifier.
        client_id: String,
    },
}

/// `starling ctl sessions ...`.
#[derive(Subcommand, Debug)]
pub enum SessionsCommand {
    /// Shows one session.
    Show {
        /// Client identifier.
        client_id: String,
    },
    /// Ends a session: subscriptions and queued messages are discarded.
    Delete {
        /// Client identifier.
        client_id: String,
        /// Kick the client first if it is connected.
        #[arg(long)]
        kick: bool,
    },
}

/// `starling ctl retained ...`.
#[derive(Subcommand, Debug)]
pub enum RetainedCommand {
    /// Lists retained messages matching a filter.
    List {
        /// Topic filter.
        #[arg(long, default_value = "#")]
        filter: String,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Clears retained messages: one topic, or every match of a filter.
    Delete {
        /// One topic.
        #[arg(long, conflicts_with = "filter", required_unless_present = "filter")]
        topic: Option<String>,
        /// Every topic matching this filter.
        #[arg(long)]
        filter: Option<String>,
    },
}

/// Prints an API answer for people.
type Render = fn(&Value, &mut dyn Write) -> std::io::Result<()>;

fn client_path(client_id: &str, suffix: &str) -> String {
    format!("/api/v1/clients/{}{suffix}", encode_path_segment(client_id))
}

/// Runs one `starling ctl` command, writing to `out`.
///
/// # Errors
/// Returns an error if the node cannot be reached or the API refuses the request (the
/// message says why).
pub fn run(args: &CtlArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = AdminClient::new(&args.url, args.token.clone());
    let (answer, render): (Value, Render) = match &args.command {
        CtlCommand::Status => (
            client.call(Method::Get, "/api/v1/status", &[], None)?,
            |v, out| write_fields(out, v),
        ),
        CtlCommand::Clients { command } => match command {
            ClientsCommand::List {
                prefix,
                limit,
                after,
            } => {
                let mut query = vec![("limit", limit.to_string())];
                if let Some(prefix) = prefix {
                    query.push(("prefix", prefix.clone()));
                }
                if let Some(after) = after {
                    query.push(("after", after.clone()));
                }
                (
                    client.call(Method::Get, "/api/v1/clients", &query, None)?,
                    render_clients,
                )
            }
            ClientsCommand::Show { client_id } => (
                client.call(Method::Get, &client_path(client_id, ""), &[], None)?,
                |v, out| write_fields(out, v),
            ),
            ClientsCommand::Kick { client_id } => (
                client.call(Method::Post, &client_path(client_id, "/kick"), &[], None)?,
                |v, out| writeln!(out, "kicked {}", cell(&v["client_id"])),
            ),
            ClientsCommand::Subscriptions { client_id } => (
                client.call(
                    Method::Get,
                    &client_path(client_id, "/subscriptions"),
                    &[],
                    None,
                )?,
                render_subscriptions,
            ),
        },
        CtlCommand::Sessions { command } => match command {
            SessionsCommand::Show { client_id } => (
                client.call(
                    Method::Get,
                    &format!("/api/v1/sessions/{}", encode_path_segment(client_id)),
                    &[],
                    None,
                )?,
                |v, out| write_fields(out, v),
            ),
            SessionsCommand::Delete { client_id, kick } => (
                client.call(
                    Method::Delete,
                    &format!("/api/v1/sessions/{}", encode_path_segment(client_id)),
                    &[("kick", kick.to_string())],
                    None,
                )?,
                |v, out| writeln!(out, "deleted the session of {}", cell(&v["client_id"])),
            ),
        },
        CtlCommand::Retained { command } => match command {
            RetainedCommand::List { filter, limit } => (
                client.call(
                    Method::Get,
                    "/api/v1/retained",
                    &[("filter", filter.clone()), ("limit", limit.to_string())],
                    None,
                )?,
                render_retained,
            ),
            RetainedCommand::Delete { topic, filter } => {
                let query: Vec<(&str, String)> = match (topic, filter) {
                    (Some(topic), _) => vec![("topic", topic.clone())],
                    (None, Some(filter)) => vec![("filter", filter.clone())],
                    (None, None) => anyhow::bail!("give --topic or --filter"),
                };
                (
                    client.call(Method::Delete, "/api/v1/retained", &query, None)?,
                    |v, out| writeln!(out, "cleared {} retained messages", cell(&v["cleared"])),
                )
            }
        },
        CtlCommand::Publish {
            topic,
            payload,
            qos,
            retain,
        } => (
            client.call(
                Method::Post,
                "/api/v1/publish",
                &[],
                Some(&json!({ "topic": topic, "payload": payload, "qos": qos, "retain": retain })),
            )?,
            |v, out| {
                writeln!(
                    out,
                    "published; queued for {} sessions",
                    cell(&v["queued_for"])
                )
            },
        ),
        CtlCommand::Bans { command } => bans::call(&client, command)?,
        CtlCommand::Listeners => (
            client.call(Method::Get, "/api/v1/listeners", &[], None)?,
            render_listeners,
        ),
        CtlCommand::Config => (
            client.call(Method::Get, "/api/v1/config", &[], None)?,
            |v, out| {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(v).unwrap_or_default()
                )
            },
        ),
        CtlCommand::LogLevel { level } => {
            let answer = match level {
                Some(level) => client.call(
                    Method::Put,
                    "/api/v1/log-level",
                    &[],
                    Some(&json!({ "level": level })),
                )?,
                None => client.call(Method::Get, "/api/v1/log-level", &[], None)?,
            };
            (answer, |v, out| writeln!(out, "{}", cell(&v["level"])))
        }
    };
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
    } else {
        render(&answer, out)?;
    }
    Ok(())
}

fn render_clients(answer: &Value, out: &mut dyn Write) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = answer["clients"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            [
                "client_id",
                "connected",
                "protocol_version",
                "peer_address",
                "keep_alive_secs",
                "connected_at",
                "subscriptions",
                "queued_messages",
            ]
            .iter()
            .map(|key| cell(&c[*key]))
            .collect()
        })
        .collect();
    write_table(
        out,
        &[
            "CLIENT ID",
            "CONNECTED",
            "PROTOCOL",
            "ADDRESS",
            "KEEP ALIVE",
            "CONNECTED AT",
            "SUBS",
            "QUEUED",
        ],
        &rows,
    )?;
    if let Some(next) = answer["next_after"].as_str() {
        writeln!(out, "more: --after {next}")?;
    }
    Ok(())
}

fn render_subscriptions(answer: &Value, out: &mut dyn Write) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = answer["subscriptions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            [
                "topic_filter",
                "qos",
                "no_local",
                "retain_as_published",
                "retain_handling",
                "subscription_identifier",
            ]
            .iter()
            .map(|key| cell(&s[*key]))
            .collect()
        })
        .collect();
    write_table(
        out,
        &["FILTER", "QOS", "NO LOCAL", "RAP", "RH", "SUB ID"],
        &rows,
    )
}

fn render_retained(answer: &Value, out: &mut dyn Write) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = answer["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let payload = match m["payload"].as_str() {
                Some(text) if text.chars().count() <= 60 => text.to_string(),
                Some(text) => format!("{}...", text.chars().take(57).collect::<String>()),
                None => format!("<{} bytes>", cell(&m["payload_bytes"])),
            };
            vec![cell(&m["topic"]), cell(&m["qos"]), payload]
        })
        .collect();
    write_table(out, &["TOPIC", "QOS", "PAYLOAD"], &rows)?;
    if answer["truncated"].as_bool() == Some(true) {
        writeln!(
            out,
            "(more messages match; raise --limit or narrow --filter)"
        )?;
    }
    Ok(())
}

fn render_listeners(answer: &Value, out: &mut dyn Write) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = answer["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| vec![cell(&l["name"]), cell(&l["protocol"]), cell(&l["address"])])
        .collect();
    write_table(out, &["NAME", "PROTOCOL", "ADDRESS"], &rows)
}
