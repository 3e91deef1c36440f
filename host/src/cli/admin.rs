//! Which admin token a command uses: `weir run` serves with it, `weir plugin` and `weir tap`
//! send it. One place decides the order (flag or variable, then a token file, then the file
//! `weir run` generated for that port).

use std::net::SocketAddr;

use anyhow::Context;
use weir::admin::auth::{self, AdminToken};

use crate::AdminTokenArgs;

/// The token `weir run` serves with; `None` lets it generate one (loopback only).
pub fn server_token(args: &AdminTokenArgs) -> anyhow::Result<Option<AdminToken>> {
    if let Some(token) = &args.token {
        return Ok(Some(token.clone()));
    }
    match &args.token_file {
        Some(path) => Ok(Some(
            AdminToken::from_file(path).context("reading --admin-token-file")?,
        )),
        None => Ok(None),
    }
}

/// The token a client sends to the server at `admin`, if any is known.
pub fn client_token(
    args: &AdminTokenArgs,
    admin: SocketAddr,
) -> anyhow::Result<Option<AdminToken>> {
    if let Some(token) = server_token(args)? {
        return Ok(Some(token));
    }
    let Some(path) = auth::token_path(admin.port()) else {
        return Ok(None);
    };
    if !path.exists() {
        return Ok(None);
    }
    AdminToken::from_file(&path)
        .map(Some)
        .context("reading the token `weir run` generated; pass --admin-token instead")
}

/// Adds the bearer token to a request, when there is one.
pub fn authorize(
    request: reqwest::RequestBuilder,
    token: Option<&AdminToken>,
) -> reqwest::RequestBuilder {
    match token {
        Some(token) => request.bearer_auth(token.expose()),
        None => request,
    }
}

/// What to tell the user when the server refused a request with `status` and `message`.
pub fn refusal(status: reqwest::StatusCode, message: &str, admin: SocketAddr) -> String {
    if status == reqwest::StatusCode::UNAUTHORIZED {
        let generated = auth::token_path(admin.port())
            .map(|p| {
                format!(
                    ", or the file {} that `weir run` writes when it generates one",
                    p.display()
                )
            })
            .unwrap_or_default();
        format!(
            "{message} ({status}); give the token of the weir at {admin} with --admin-token, WEIR_ADMIN_TOKEN or --admin-token-file{generated}"
        )
    } else {
        format!("{message} ({status})")
    }
}
