//! Authentication after the upgrade, and closing sockets whose credential
//! expires.
//!
//! [`FirstMessageAuth`] waits for the first message on a freshly upgraded
//! socket, verifies the token in it with any [`Verifier`] of this crate, and
//! either returns the identity with the socket or closes the socket itself
//! with the right code. While it waits it enforces a deadline (default 5 s), a
//! size cap checked before any parsing (default 16 KiB), and the rule that the
//! first data message must be the auth message; pings are answered by the
//! WebSocket library as usual. The token never appears in a URL or header.
//!
//! The cap is only as good as the socket's own limits: a WebSocket library
//! assembles a whole message (64 MiB by default) before this crate sees it.
//! Give the socket the same limit with
//! [`FirstMessageAuth::limit_upgrade`] (axum) or
//! [`FirstMessageAuth::websocket_config`] (tokio-tungstenite), so an oversize
//! message is refused as it arrives.
//!
//! [`LifetimeGuard`] wraps an authenticated socket (by either kind of auth) and
//! closes it when the credential expires, unless the client re-authenticates
//! in band first; the application's own message loop never sees those
//! messages.
//!
//! Both work over any socket that is a `Stream` and `Sink` of a [`WsMessage`]
//! type: axum's `WebSocket` (feature `axum`) and tokio-tungstenite's
//! `WebSocketStream` (feature `tungstenite`).
//!
//! ```
//! # #[cfg(all(feature = "tungstenite", feature = "jwt", feature = "rust-crypto"))]
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use futures_util::{SinkExt, StreamExt};
//! use tokio_tungstenite::tungstenite::Message;
//! use tokio_tungstenite::{tungstenite::protocol::Role, WebSocketStream};
//! use tower_ws_auth::first_message::FirstMessageAuth;
//! use tower_ws_auth::jwt::{BasicClaims, JwtVerifier};
//!
//! let secret = b"0123456789abcdef0123456789abcdef";
//! let verifier = JwtVerifier::<BasicClaims>::hs256(secret).unwrap();
//! let claims = BasicClaims { sub: "alice".into(), exp: tower_ws_auth::jwt::now_secs() + 60 };
//! let token = jsonwebtoken::encode(&Default::default(), &claims, &jsonwebtoken::EncodingKey::from_secret(secret)).unwrap();
//!
//! // An in-memory socket pair stands in for a network connection.
//! let connect = || async {
//!     let (a, b) = tokio::io::duplex(4096);
//!     (WebSocketStream::from_raw_socket(a, Role::Server, None).await,
//!      WebSocketStream::from_raw_socket(b, Role::Client, None).await)
//! };
//!
//! let (server, mut client) = connect().await;
//! client.send(Message::text(format!(r#"{{"type":"auth","token":"{token}"}}"#))).await.unwrap();
//! let (verified, _socket) = FirstMessageAuth::json().authenticate(server, &verifier).await.unwrap();
//! assert_eq!(verified.identity.sub, "alice");
//! assert_eq!(client.next().await.unwrap().unwrap().to_text().unwrap(), r#"{"type":"auth_ok","userId":"alice"}"#);
//!
//! let (server, mut client) = connect().await;
//! client.send(Message::text(r#"{"type":"auth","token":"forged"}"#)).await.unwrap();
//! let refused = FirstMessageAuth::json().authenticate(server, &verifier).await.unwrap_err();
//! assert_eq!(refused.close_code(), 4001);
//! assert_eq!(client.next().await.unwrap().unwrap().to_text().unwrap(), r#"{"type":"auth_fail"}"#);
//! # });
//! ```

mod guard;
mod message;
mod protocol;

use std::future::poll_fn;
use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;
use futures_sink::Sink;

pub use self::guard::LifetimeGuard;
pub use self::message::{MessageKind, WsMessage};
use self::protocol::DATA_BEFORE_AUTH;
pub use self::protocol::{AuthProtocol, GraphqlTransportWs, Incoming, JsonAuth, Refusal};
use crate::credential::{Credential, SourceKind};
use crate::error::{AuthError, AuthErrorKind};
use crate::metrics;
use crate::verify::{Subject, Verified, Verifier};

/// Default time a client has to authenticate: 5 s.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);

/// Default cap on the auth message: 16 KiB.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 16 * 1024;

/// Authenticates a socket with its first message. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct FirstMessageAuth<P = JsonAuth> {
    deadline: Duration,
    max_len: usize,
    protocol: P,
}

impl FirstMessageAuth<JsonAuth> {
    /// The JSON preset ([`JsonAuth`]).
    pub fn json() -> Self {
        Self::with_protocol(JsonAuth)
    }
}

impl FirstMessageAuth<GraphqlTransportWs> {
    /// The graphql-transport-ws preset ([`GraphqlTransportWs`]).
    pub fn graphql_transport_ws() -> Self {
        Self::with_protocol(GraphqlTransportWs::new())
    }
}

pub(crate) async fn next_message<S, M, E>(socket: &mut S) -> Option<Result<M, E>>
where
    S: Stream<Item = Result<M, E>> + Unpin,
{
    poll_fn(|cx| Pin::new(&mut *socket).poll_next(cx)).await
}

pub(crate) async fn send_message<S, M>(socket: &mut S, message: M) -> Result<(), S::Error>
where
    S: Sink<M> + Unpin,
{
    poll_fn(|cx| Pin::new(&mut *socket).poll_ready(cx)).await?;
    Pin::new(&mut *socket).start_send(message)?;
    poll_fn(|cx| Pin::new(&mut *socket).poll_flush(cx)).await
}

enum Waited<I> {
    Verified(Verified<I>),
    Refused(AuthError),
    Gone,
}

impl<P: AuthProtocol> FirstMessageAuth<P> {
    /// Your own message shapes.
    pub fn with_protocol(protocol: P) -> Self {
        Self {
            deadline: DEFAULT_DEADLINE,
            max_len: DEFAULT_MAX_MESSAGE_LEN,
            protocol,
        }
    }

    /// How long the client has to authenticate, verification included.
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Cap on the auth message in bytes, checked before it is parsed. Set the
    /// WebSocket library's own limits too ([`limit_upgrade`](Self::limit_upgrade)
    /// for axum, [`websocket_config`](Self::websocket_config) for
    /// tokio-tungstenite), so that it does not buffer a huge message before
    /// this cap sees it.
    #[must_use]
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    /// The cap on the auth message, in bytes.
    pub fn max_message_len(&self) -> usize {
        self.max_len
    }

    /// Set axum's socket limits to this cap: a message or frame larger than
    /// it is refused by the WebSocket library as it arrives (close 1009),
    /// before it is buffered, instead of after the library has assembled up
    /// to its 64 MiB default.
    ///
    /// axum cannot change the limits after the upgrade, so they hold for the
    /// whole connection: size the cap for the application's own messages too
    /// (the demo uses 64 KiB).
    #[cfg(feature = "axum")]
    pub fn limit_upgrade(
        &self,
        upgrade: axum::extract::ws::WebSocketUpgrade,
    ) -> axum::extract::ws::WebSocketUpgrade {
        upgrade
            .max_message_size(self.max_len)
            .max_frame_size(self.max_len)
    }

    /// A tokio-tungstenite configuration whose message and frame limits are
    /// this cap, for `accept_async_with_config`. The limits hold for the
    /// whole connection: size the cap for the application's messages too.
    #[cfg(feature = "tungstenite")]
    pub fn websocket_config(&self) -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(self.max_len))
            .max_frame_size(Some(self.max_len))
    }

    /// The message protocol.
    pub fn protocol(&self) -> &P {
        &self.protocol
    }

    /// Wait for the auth message on `socket` and verify it with `verifier`.
    ///
    /// On success the accepted reply (e.g. `auth_ok`) has been sent and the
    /// socket is returned for the application to use.
    ///
    /// # Errors
    ///
    /// The socket has been answered and closed as the protocol says (see
    /// [`JsonAuth`], [`GraphqlTransportWs`]), or the client went away; the
    /// error says why ([`Timeout`](AuthErrorKind::Timeout) past the deadline).
    pub async fn authenticate<S, M, E, V>(
        &self,
        mut socket: S,
        verifier: &V,
    ) -> Result<(Verified<V::Identity>, S), AuthError>
    where
        S: Stream<Item = Result<M, E>> + Sink<M> + Unpin,
        M: WsMessage,
        V: Verifier,
        V::Identity: Subject,
    {
        let waited = tokio::time::timeout(self.deadline, self.wait(&mut socket, verifier))
            .await
            .unwrap_or_else(|_| Waited::Refused(AuthError::new(AuthErrorKind::Timeout)));
        match waited {
            Waited::Verified(verified) => {
                if let Some(reply) = self.protocol.accepted(verified.identity.subject()) {
                    send_message(&mut socket, M::text(reply))
                        .await
                        .map_err(|_| gone())?;
                }
                tracing::debug!(
                    subject = verified.identity.subject(),
                    "websocket first-message authentication accepted"
                );
                metrics::first_message(None);
                Ok((verified, socket))
            }
            Waited::Refused(error) => {
                tracing::info!(reason = %error.kind(), "websocket first-message authentication refused");
                metrics::first_message(Some(error.kind()));
                metrics::socket_closed(error.kind().as_str());
                let refusal = self.protocol.refused(&error);
                if let Some(reply) = refusal.reply {
                    let _ = send_message(&mut socket, M::text(reply)).await;
                }
                let _ = send_message(&mut socket, M::close(refusal.code, refusal.reason)).await;
                Err(error)
            }
            Waited::Gone => Err(gone()),
        }
    }

    async fn wait<S, M, E, V>(&self, socket: &mut S, verifier: &V) -> Waited<V::Identity>
    where
        S: Stream<Item = Result<M, E>> + Sink<M> + Unpin,
        M: WsMessage,
        V: Verifier,
    {
        loop {
            let message = match next_message(socket).await {
                Some(Ok(message)) => message,
                None => return Waited::Gone,
                // Over the socket's own size limit, or a protocol error: the
                // library refused the message before it was assembled.
                Some(Err(_)) => {
                    return Waited::Refused(
                        AuthError::new(AuthErrorKind::TooLarge)
                            .with_detail("unreadable or oversize message"),
                    )
                }
            };
            let text = match message.kind() {
                MessageKind::Control => continue,
                MessageKind::Close => return Waited::Gone,
                MessageKind::Binary(len) => {
                    return Waited::Refused(if len > self.max_len {
                        AuthError::new(AuthErrorKind::TooLarge)
                    } else {
                        AuthError::new(AuthErrorKind::Malformed)
                            .with_detail("binary message before authentication")
                    })
                }
                MessageKind::Text(text) => text,
            };
            if text.len() > self.max_len {
                return Waited::Refused(AuthError::new(AuthErrorKind::TooLarge));
            }
            match self.protocol.read(text) {
                Incoming::Auth(token) if token.is_empty() => {
                    return Waited::Refused(AuthError::new(AuthErrorKind::Missing))
                }
                Incoming::Auth(token) => {
                    let credential = Credential::new(SourceKind::FirstMessage, token);
                    return match verifier.verify(credential).await {
                        Ok(verified) => Waited::Verified(verified),
                        Err(error) => Waited::Refused(error.with_via(SourceKind::FirstMessage)),
                    };
                }
                Incoming::Ping(reply) => {
                    if send_message(socket, M::text(reply)).await.is_err() {
                        return Waited::Gone;
                    }
                }
                Incoming::Ignore => {}
                Incoming::Other => {
                    return Waited::Refused(
                        AuthError::new(AuthErrorKind::Missing).with_detail(DATA_BEFORE_AUTH),
                    )
                }
                Incoming::BadAuth | Incoming::Malformed => {
                    return Waited::Refused(
                        AuthError::new(AuthErrorKind::Malformed)
                            .with_detail("malformed auth message"),
                    )
                }
            }
        }
    }
}

fn gone() -> AuthError {
    AuthError::new(AuthErrorKind::Missing).with_detail("connection closed before authenticating")
}
