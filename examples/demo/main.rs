//! `cargo run --example demo`: every WebSocket authentication pattern on
//! <http://127.0.0.1:3000>.
//!
//! `DEMO_ADDR` overrides the address, `DEMO_JWT_SECRET` the HS256 secret
//! (random per start otherwise), `REDIS_URL` switches tickets to Redis,
//! `OIDC_ISSUER` and `OIDC_AUDIENCE` (with `--features oidc`) accept an
//! OpenID provider's access tokens too.

mod app;

use std::io::IsTerminal;

use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The log goes to stdout: colour only on a terminal (and without
    // NO_COLOR), so a file or a pipe gets plain text.
    let colour = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_ansi(colour)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let addr = std::env::var("DEMO_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = TcpListener::bind(&addr).await?;
    let port = listener.local_addr()?.port();
    let jwt_secret = match std::env::var("DEMO_JWT_SECRET") {
        Ok(secret) => secret.into_bytes(),
        Err(_) => app::random_secret(),
    };
    let redis_url = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty());
    let oidc = match std::env::var("OIDC_ISSUER").ok().filter(|i| !i.is_empty()) {
        Some(issuer) => {
            let audience = std::env::var("OIDC_AUDIENCE")
                .ok()
                .filter(|a| !a.is_empty())
                .ok_or("OIDC_ISSUER is set without OIDC_AUDIENCE: the `aud` the provider puts in access tokens for the demo")?;
            Some(app::Oidc { issuer, audience })
        }
        None => None,
    };
    let oidc_issuer = oidc.as_ref().map(|o| o.issuer.clone());
    let router = app::router_with_oidc(
        app::Config {
            jwt_secret,
            allowed_origins: vec![
                format!("http://127.0.0.1:{port}"),
                format!("http://localhost:{port}"),
            ],
            redis_url: redis_url.clone(),
            max_sessions: app::MAX_SESSIONS,
        },
        oidc,
    )?;
    if let Some(issuer) = oidc_issuer {
        tracing::info!(%issuer, "accepting the provider's access tokens too");
    }
    let store = if redis_url.is_some() {
        "redis"
    } else {
        "memory"
    };
    tracing::info!(
        "demo on http://{} (tickets: {store})",
        listener.local_addr()?
    );
    app::serve(listener, router, app::HEADER_READ_TIMEOUT).await;
    Ok(())
}
