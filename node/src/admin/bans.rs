//! Admin API on the ban list (`auth.ban_file`): list, add, remove. Edits go to the same file
//! `starling ban` edits (written to a temporary file and renamed over it), then the auth
//! watcher is woken so a new ban refuses new clients (CONNACK 0x8A) and kicks connected ones
//! (DISCONNECT 0x98) at once rather than at its next poll.

use std::path::{Path, PathBuf};

use axum::{extract::State, http::StatusCode, Json};
use clap::ValueEnum;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    admin::{AdminState, ApiError, ApiJson, ApiQuery, ApiResult},
    auth::bans::{self, BanKind},
};

/// The kinds as the API names them (the same names `starling ban` takes).
const KIND_NAMES: &str = "client-id, username, cert-serial, address";

/// Parses a kind; `client_id` is accepted for `client-id`.
fn parse_kind(kind: &str) -> ApiResult<BanKind> {
    BanKind::from_str(&kind.replace('_', "-"), true).map_err(|_| {
        ApiError::bad_request(format!(
            "unknown ban kind {kind:?}: expected one of {KIND_NAMES}"
        ))
    })
}

/// Checks a kind and value from the caller; returns the kind and the value as the file keeps it.
fn parse_ban(kind: &str, value: &str) -> ApiResult<(BanKind, String)> {
    let kind = parse_kind(kind)?;
    if value.trim().is_empty() {
        return Err(ApiError::bad_request("the ban value is empty"));
    }
    // Spaces around an address are a slip of the caller; in a client id they could be meant.
    let value = if kind == BanKind::Address {
        value.trim()
    } else {
        value
    };
    let value = bans::normalize(kind, value)
        .map_err(|error| ApiError::bad_request(format!("invalid {}: {error}", kind.name())))?;
    Ok((kind, value))
}

fn ban_file(state: &AdminState) -> ApiResult<PathBuf> {
    state.config.auth.ban_file.clone().ok_or_else(|| {
        ApiError::conflict("this node has no ban list: set auth.ban_file in its configuration")
    })
}

fn internal(error: &anyhow::Error) -> ApiError {
    tracing::error!(error = format!("{error:#}"), "ban list edit failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("{error:#}"),
    )
}

/// A ban as the caller names it: the JSON body of `POST`, the query of `DELETE`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BanParams {
    kind: String,
    value: String,
}

/// Checks `params`, then applies `operation` (add or remove) to the ban file off the async
/// workers, one edit at a time (a read-modify-write of the whole file: two at once would lose
/// one), and wakes the auth watcher. Returns the kind, the value as stored and whether the
/// file changed.
async fn edit_ban(
    state: &AdminState,
    params: &BanParams,
    operation: fn(&Path, BanKind, &str) -> anyhow::Result<bool>,
) -> ApiResult<(BanKind, String, bool)> {
    let path = ban_file(state)?;
    let (kind, value) = parse_ban(&params.kind, &params.value)?;
    let stored = value.clone();
    let _edit = state.ban_edits.lock().await;
    let changed = tokio::task::spawn_blocking(move || operation(&path, kind, &stored))
        .await
        .map_err(|error| internal(&anyhow::anyhow!("ban list task failed: {error}")))?
        .map_err(|error| internal(&error))?;
    if let Some(auth) = &state.auth {
        auth.request_reload();
    }
    Ok((kind, value, changed))
}

/// `GET /api/v1/bans`: every ban as `{kind, value}`, in file order by kind.
pub(crate) async fn list(State(state): State<AdminState>) -> ApiResult<Json<Value>> {
    let Some(path) = state.config.auth.ban_file.clone() else {
        return Ok(Json(json!({ "ban_file": null, "bans": [] })));
    };
    let shown = path.display().to_string();
    let entries = tokio::task::spawn_blocking(move || bans::list_bans(&path))
        .await
        .map_err(|error| internal(&anyhow::anyhow!("ban list task failed: {error}")))?
        .map_err(|error| internal(&error))?;
    let bans: Vec<Value> = entries
        .into_iter()
        .map(|(kind, value)| json!({ "kind": kind, "value": value }))
        .collect();
    Ok(Json(json!({ "ban_file": shown, "bans": bans })))
}

/// `POST /api/v1/bans` with `{"kind", "value"}`: 201 when added, 200 when it was there.
pub(crate) async fn add(
    State(state): State<AdminState>,
    ApiJson(params): ApiJson<BanParams>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let (kind, value, added) = edit_ban(&state, &params, bans::add_ban).await?;
    tracing::info!(kind = kind.name(), %value, added, "ban added through the admin api");
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({ "kind": kind.name(), "value": value, "added": added })),
    ))
}

/// `DELETE /api/v1/bans?kind=&value=`: 404 when there is no such ban.
pub(crate) async fn remove(
    State(state): State<AdminState>,
    ApiQuery(params): ApiQuery<BanParams>,
) -> ApiResult<Json<Value>> {
    let (kind, value, removed) = edit_ban(&state, &params, bans::remove_ban).await?;
    if !removed {
        return Err(ApiError::not_found(format!(
            "{} {value:?} is not banned",
            kind.name()
        )));
    }
    tracing::info!(kind = kind.name(), %value, "ban lifted through the admin api");
    Ok(Json(
        json!({ "kind": kind.name(), "value": value, "removed": true }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_values_are_checked() {
        assert_eq!(parse_kind("client_id").unwrap(), BanKind::ClientId);
        assert_eq!(parse_kind("Cert-Serial").unwrap(), BanKind::CertSerial);
        assert_eq!(parse_kind("planet").unwrap_err().status, 400);
        assert_eq!(
            parse_ban("address", " 10.0.0.0/8 ").unwrap(),
            (BanKind::Address, "10.0.0.0/8".to_string())
        );
        assert_eq!(
            parse_ban("cert-serial", "00:0A:1b").unwrap().1,
            "a1b".to_string()
        );
        assert!(parse_ban("address", "10.0.0.0/33").is_err());
        assert!(parse_ban("username", "  ").is_err());
    }
}
