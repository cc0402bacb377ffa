//! Moving from soketi: the binary reads soketi's `SOKETI_*` environment variables for the
//! default app and the server when the matching `CRIER_*` setting (or flag) is not given, and
//! says so in the log, so a soketi deployment's environment works unchanged.

use std::path::PathBuf;

use crier::config::parse_json_targets;

use crate::Cli;

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn flag(value: &str) -> Option<bool> {
    match value.trim() {
        "1" | "true" | "TRUE" | "True" | "yes" => Some(true),
        "0" | "false" | "FALSE" | "False" | "no" => Some(false),
        _ => None,
    }
}

/// Fills what the environment's soketi names give into the settings left unset; returns a
/// log line for each one taken (and for each one that could not be read).
pub fn adopt_soketi_env(cli: &mut Cli) -> Vec<String> {
    let mut said = Vec::new();
    let mut take = |soketi: &str, crier: &str, apply: &mut dyn FnMut(&str) -> bool| {
        if let Some(value) = var(soketi) {
            if apply(&value) {
                said.push(format!("using {soketi} as {crier} (soketi's name)"));
            } else {
                said.push(format!(
                    "ignoring {soketi}={value}: not a valid value for {crier}"
                ));
            }
        }
    };
    macro_rules! text {
        ($soketi:literal, $crier:literal, $field:ident) => {
            if cli.$field.is_none() {
                take($soketi, $crier, &mut |v| {
                    cli.$field = Some(v.to_string());
                    true
                });
            }
        };
    }
    macro_rules! parsed {
        ($soketi:literal, $crier:literal, $field:ident) => {
            if cli.$field.is_none() {
                take($soketi, $crier, &mut |v| match v.trim().parse() {
                    Ok(n) => {
                        cli.$field = Some(n);
                        true
                    }
                    Err(_) => false,
                });
            }
        };
    }
    macro_rules! boolean {
        ($soketi:literal, $crier:literal, $field:ident) => {
            if cli.$field.is_none() {
                take($soketi, $crier, &mut |v| match flag(v) {
                    Some(b) => {
                        cli.$field = Some(b);
                        true
                    }
                    None => false,
                });
            }
        };
    }
    text!("SOKETI_DEFAULT_APP_ID", "CRIER_APP_ID", app_id);
    text!("SOKETI_DEFAULT_APP_KEY", "CRIER_APP_KEY", app_key);
    text!("SOKETI_DEFAULT_APP_SECRET", "CRIER_APP_SECRET", app_secret);
    parsed!("SOKETI_PORT", "CRIER_PORT", port);
    boolean!(
        "SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES",
        "CRIER_APP_CLIENT_EVENTS",
        app_client_events
    );
    parsed!(
        "SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC",
        "CRIER_APP_MAX_BACKEND_EVENTS_PER_SECOND",
        app_max_backend_events_per_second
    );
    parsed!(
        "SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC",
        "CRIER_APP_CLIENT_EVENTS_PER_SECOND",
        app_client_events_per_second
    );
    parsed!(
        "SOKETI_DEFAULT_APP_MAX_READ_REQ_PER_SEC",
        "CRIER_APP_MAX_READ_REQUESTS_PER_SECOND",
        app_max_read_requests_per_second
    );
    parsed!(
        "SOKETI_PRESENCE_MAX_MEMBERS",
        "CRIER_APP_MAX_PRESENCE_MEMBERS",
        app_max_presence_members
    );
    parsed!(
        "SOKETI_METRICS_SERVER_PORT",
        "CRIER_METRICS_PORT",
        metrics_port
    );
    parsed!(
        "SOKETI_ADAPTER_REDIS_PREFIX",
        "CRIER_REDIS_PREFIX",
        redis_prefix
    );
    // soketi's -1 means unlimited, as Crier's 0 does.
    if cli.app_max_connections.is_none() {
        take(
            "SOKETI_DEFAULT_APP_MAX_CONNS",
            "CRIER_APP_MAX_CONNECTIONS",
            &mut |v| match v.trim().parse::<i64>() {
                Ok(n) if n < 0 => {
                    cli.app_max_connections = Some(0);
                    true
                }
                Ok(n) => usize::try_from(n)
                    .map(|n| cli.app_max_connections = Some(n))
                    .is_ok(),
                Err(_) => false,
            },
        );
    }
    if cli.app_webhooks.is_none() {
        take(
            "SOKETI_DEFAULT_APP_WEBHOOKS",
            "CRIER_APP_WEBHOOKS",
            &mut |v| match parse_json_targets(v) {
                Ok(list) => {
                    cli.app_webhooks = Some(list);
                    true
                }
                Err(_) => false,
            },
        );
    }
    if cli.tls_cert.is_none() {
        take("SOKETI_SSL_CERT", "CRIER_TLS_CERT", &mut |v| {
            cli.tls_cert = Some(PathBuf::from(v));
            true
        });
    }
    if cli.tls_key.is_none() {
        take("SOKETI_SSL_KEY", "CRIER_TLS_KEY", &mut |v| {
            cli.tls_key = Some(PathBuf::from(v));
            true
        });
    }
    // soketi gives its grace period in milliseconds.
    if cli.drain_secs.is_none() {
        take(
            "SOKETI_SHUTDOWN_GRACE_PERIOD",
            "CRIER_DRAIN_SECS",
            &mut |v| match v.trim().parse::<u64>() {
                Ok(ms) => {
                    cli.drain_secs = Some(ms.div_ceil(1000));
                    true
                }
                Err(_) => false,
            },
        );
    }
    // The Redis adapter: soketi names host and port apart.
    if cli.redis_url.is_none() && var("SOKETI_ADAPTER_DRIVER").as_deref() == Some("redis") {
        let host = var("SOKETI_DB_REDIS_HOST").unwrap_or_else(|| "127.0.0.1".to_string());
        let port = var("SOKETI_DB_REDIS_PORT").unwrap_or_else(|| "6379".to_string());
        let db = var("SOKETI_DB_REDIS_DB").unwrap_or_else(|| "0".to_string());
        let auth = var("SOKETI_DB_REDIS_PASSWORD")
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        cli.redis_url = Some(format!("redis://{auth}{host}:{port}/{db}"));
        said.push(
            "using SOKETI_ADAPTER_DRIVER=redis and SOKETI_DB_REDIS_* as CRIER_REDIS_URL (soketi's names)"
                .to_string(),
        );
    }
    said
}
