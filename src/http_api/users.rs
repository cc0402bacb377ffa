//! `POST /users/{user_id}/terminate_connections`: closes every connection signed in as the
//! user with 4009, so pusher-js does not reconnect it on its own.

use super::auth::VerifiedRequest;
use crate::channels::CloseRequest;
use crate::protocol::codes;

pub fn terminate(req: &VerifiedRequest, user_id: &str) -> String {
    req.app.users.terminate(
        user_id,
        &CloseRequest {
            code: Some(codes::UNAUTHORIZED),
            reason: "Connection terminated by the app".to_string(),
            announce: true,
        },
    );
    "{}".to_string()
}
