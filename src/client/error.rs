//! Every way a call through [`Client`](super::Client) fails, as one small enum the caller can
//! branch on: its own mistake (configuration), the network, the clock, the server's refusal,
//! or an answer that does not mean anything.

use std::fmt;

use crate::protocol::clip::{self, clip};

/// Why a request through [`Client`](super::Client) did not succeed.
///
/// ```no_run
/// # async fn run(client: crier::client::Client) {
/// use crier::client::ClientError;
///
/// match client.trigger(&["orders"], "created", "{}", None).await {
///     Ok(()) => {}
///     Err(ClientError::Status { status: 401, body }) => eprintln!("wrong key or secret: {body}"),
///     Err(ClientError::Timeout) => eprintln!("no answer in time; the event may or may not be out"),
///     Err(other) => eprintln!("{other}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The configuration or URL cannot work: the message names the part at fault.
    InvalidConfig(String),
    /// The request could not be sent or the answer could not be read (connection refused,
    /// TLS failure, connection closed mid-answer…).
    Transport(String),
    /// No complete answer within the configured timeout. The server may still have acted
    /// on the request.
    Timeout,
    /// The server answered with a status other than 2xx; `body` is its answer (at most
    /// 1 MiB of it, decoded as UTF-8 with replacement characters).
    Status {
        /// The HTTP status.
        status: u16,
        /// The answer's body (at most 1 MiB).
        body: String,
    },
    /// A 2xx answer that is not what the endpoint returns (not JSON, wrong shape, too large).
    InvalidResponse(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::InvalidConfig(m) => write!(f, "invalid Pusher client configuration: {m}"),
            ClientError::Transport(m) => write!(f, "Pusher HTTP API request failed: {m}"),
            ClientError::Timeout => write!(f, "Pusher HTTP API request timed out"),
            ClientError::Status { status, body } => write!(
                f,
                "Pusher HTTP API answered {status}: {}",
                clip(body, clip::MAX_MESSAGE)
            ),
            ClientError::InvalidResponse(m) => {
                write!(f, "unexpected answer from the Pusher HTTP API: {m}")
            }
        }
    }
}

impl std::error::Error for ClientError {}
