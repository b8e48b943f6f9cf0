use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures_core::Stream;
use futures_sink::Sink;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::message::{MessageKind, WsMessage};
use super::protocol::{AuthProtocol, Incoming};
use crate::credential::{Credential, SourceKind};
use crate::error::{AuthError, AuthErrorKind};
use crate::metrics::{self, GuardedSocket};
use crate::revocation::{Revocable, RevocationWatch};
use crate::verify::{Subject, Verified, Verifier};

/// Far enough to mean "never" for a credential without expiry.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    Closing,
    Closed,
}

pin_project! {
    /// Closes an authenticated socket when its credential expires, and lets
    /// the client extend it by re-authenticating in band.
    ///
    /// A `Stream` and `Sink` of the same messages as the socket it wraps: the
    /// application reads and writes through it as it would through the socket.
    /// Auth messages (as the [`AuthProtocol`] reads them) never reach the
    /// application: a re-authentication for the **same** [`Subject`] moves the
    /// expiry to the new credential's and is answered with the protocol's
    /// accepted reply (`auth_ok`); any other is answered with the refusal reply
    /// (`auth_fail`) and changes nothing. At expiry the guard sends the
    /// protocol's close for [`Expired`](AuthErrorKind::Expired) — 4002 in the
    /// JSON preset, a code clients should treat as "refresh the credential and
    /// reconnect" — and the stream ends.
    ///
    /// Protocols that do not allow re-authentication (graphql-transport-ws)
    /// close the socket on a second init (4429).
    ///
    /// An auth message is whatever the protocol's
    /// [`read`](AuthProtocol::read) calls one, nothing else: a malformed one
    /// or one over the size cap ([`max_len`](Self::max_len), by default the
    /// first message's 16 KiB) is refused without being verified, and never
    /// reaches the application.
    ///
    /// # Backpressure
    ///
    /// Replies are written before anything more is read: while the client
    /// does not read them, the guard does not read either, so a client that
    /// floods auth messages and never reads holds the guard to one pending
    /// reply, and the socket's own write buffer.
    pub struct LifetimeGuard<S, M, V, P>
    where
        V: Verifier,
    {
        #[pin]
        socket: S,
        // Boxed (once per connection) so the guard is `Unpin` whenever the
        // socket is: applications can then call `next()`/`send()` on it
        // without pinning it themselves.
        expiry: Pin<Box<Sleep>>,
        // Whether the timer has been polled (registered with the driver)
        // since it was last set.
        armed: bool,
        #[pin]
        verifying: Option<V::Future>,
        verifier: V,
        protocol: P,
        subject: Box<str>,
        expires_at: Option<SystemTime>,
        max_len: usize,
        // At most a reply and a close: the guard reads nothing more while
        // they cannot be written, so a client that never reads cannot make
        // it queue without bound.
        outbox: VecDeque<M>,
        phase: Phase,
        // The socket's span: its subject, and the guard's events inside it.
        span: tracing::Span,
        revocation: Option<Watch<V::Identity>>,
        _open: GuardedSocket,
    }
}

/// A revocation watch, and how to move it to a re-authenticated credential.
struct Watch<I> {
    watch: RevocationWatch,
    renew: fn(&mut RevocationWatch, &I),
}

fn renew<I: Revocable>(watch: &mut RevocationWatch, identity: &I) {
    watch.renew(identity);
}

fn deadline_for(expires_at: Option<SystemTime>) -> Instant {
    let remaining = match expires_at {
        Some(at) => at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .min(NEVER),
        None => NEVER,
    };
    Instant::now() + remaining
}

impl<S, M, V, P> LifetimeGuard<S, M, V, P>
where
    V: Verifier,
{
    /// Guard `socket`, authenticated as `identity` with a credential expiring at
    /// `expires_at` (`None`: never). Re-authentication messages are verified
    /// with `verifier` and read with `protocol`.
    ///
    /// Must be created within a tokio runtime (it holds a timer).
    pub fn new<E>(
        socket: S,
        identity: &impl Subject,
        expires_at: Option<SystemTime>,
        verifier: V,
        protocol: P,
    ) -> Self
    where
        // Names the message type, so that no annotation is needed.
        S: Stream<Item = Result<M, E>>,
    {
        Self {
            socket,
            expiry: Box::pin(tokio::time::sleep_until(deadline_for(expires_at))),
            armed: false,
            verifying: None,
            verifier,
            protocol,
            subject: identity.subject().into(),
            expires_at,
            max_len: super::DEFAULT_MAX_MESSAGE_LEN,
            // Allocated on the first reply, not for every socket.
            outbox: VecDeque::new(),
            phase: Phase::Open,
            span: tracing::info_span!("ws_guard", subject = identity.subject()),
            revocation: None,
            _open: GuardedSocket::open(),
        }
    }

    /// Also close the socket when its credential is revoked (see
    /// [`revocation`](crate::revocation)), with the protocol's close for
    /// [`Revoked`](AuthErrorKind::Revoked): 4003 in the JSON preset, 4403
    /// in graphql-transport-ws. A re-authentication moves the watch to the
    /// new credential. Verify re-authentications with a verifier wrapped by
    /// [`Revocations::enforce`](crate::revocation::Revocations::enforce), so
    /// that a revoked token cannot extend the socket.
    ///
    /// ```
    /// # use tower_ws_auth::revocation::Revocations;
    /// # use tower_ws_auth::first_message::{JsonAuth, LifetimeGuard};
    /// # use tower_ws_auth::jwt::{BasicClaims, JwtVerifier};
    /// # fn guard<S>(socket: S, claims: BasicClaims, jwt: JwtVerifier<BasicClaims>, revocations: Revocations)
    /// # where S: futures_core::Stream<Item = Result<axum::extract::ws::Message, axum::Error>> + futures_sink::Sink<axum::extract::ws::Message> {
    /// let watch = revocations.watch(&claims);
    /// let socket = LifetimeGuard::new(socket, &claims, None, revocations.enforce(jwt), JsonAuth)
    ///     .revocation(watch);
    /// # let _ = socket;
    /// # }
    /// ```
    #[must_use]
    pub fn revocation(mut self, watch: RevocationWatch) -> Self
    where
        V::Identity: Revocable,
    {
        self.revocation = Some(Watch {
            watch,
            renew: renew::<V::Identity>,
        });
        self
    }

    /// Cap on an in-band re-authentication message, in bytes (default
    /// [`DEFAULT_MAX_MESSAGE_LEN`](super::DEFAULT_MAX_MESSAGE_LEN), as for
    /// the first message). An auth message over it is refused unverified.
    #[must_use]
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    /// When the current credential expires.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// The wrapped socket.
    pub fn get_ref(&self) -> &S {
        &self.socket
    }

    /// Unwrap the socket; the expiry is no longer enforced.
    pub fn into_inner(self) -> S {
        self.socket
    }
}

impl<S, M, V, P> fmt::Debug for LifetimeGuard<S, M, V, P>
where
    V: Verifier,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LifetimeGuard")
            .field("subject", &self.subject)
            .field("expires_at", &self.expires_at)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl<S, M, E, V, P> LifetimeGuard<S, M, V, P>
where
    S: Stream<Item = Result<M, E>> + Sink<M>,
    M: WsMessage,
    V: Verifier,
    V::Identity: Subject,
    P: AuthProtocol,
{
    /// Write queued replies. Ready once the outbox is empty and flushed.
    fn poll_outbox(
        socket: &mut Pin<&mut S>,
        outbox: &mut VecDeque<M>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), <S as Sink<M>>::Error>> {
        if outbox.is_empty() {
            return Poll::Ready(Ok(()));
        }
        while let Some(message) = outbox.pop_front() {
            match socket.as_mut().poll_ready(cx) {
                Poll::Ready(Ok(())) => socket.as_mut().start_send(message)?,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    outbox.push_front(message);
                    return Poll::Pending;
                }
            }
        }
        socket.as_mut().poll_flush(cx)
    }
}

/// Which parts of the protocol's refusal to send.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    Reply,
    Close,
    ReplyAndClose,
}

/// Queue the protocol's refusal for `error`.
fn answer<M: WsMessage, P: AuthProtocol>(
    protocol: &P,
    outbox: &mut VecDeque<M>,
    error: &AuthError,
    what: Answer,
) {
    let refusal = protocol.refused(error);
    if what != Answer::Close {
        if let Some(reply) = refusal.reply {
            outbox.push_back(M::text(reply));
        }
    }
    if what != Answer::Reply {
        outbox.push_back(M::close(refusal.code, refusal.reason));
    }
}

impl<S, M, E, V, P> Stream for LifetimeGuard<S, M, V, P>
where
    S: Stream<Item = Result<M, E>> + Sink<M>,
    M: WsMessage,
    V: Verifier,
    V::Identity: Subject,
    P: AuthProtocol,
{
    type Item = Result<M, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            // Replies go out first, and nothing more is read until they have:
            // a client that does not read holds the guard to what is queued.
            // A write error surfaces through reads.
            let flushed = Self::poll_outbox(&mut this.socket, this.outbox, cx);
            match *this.phase {
                Phase::Closed => return Poll::Ready(None),
                Phase::Closing => {
                    return match flushed {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(_) => {
                            *this.phase = Phase::Closed;
                            Poll::Ready(None)
                        }
                    };
                }
                Phase::Open if flushed.is_pending() => return Poll::Pending,
                Phase::Open => {}
            }

            // Polling the timer registers it; once registered, the driver
            // marks it elapsed, which is cheap to read on every message. It
            // is polled again whenever the socket has nothing to read.
            let expired = if *this.armed {
                this.expiry.is_elapsed()
            } else {
                *this.armed = true;
                this.expiry.as_mut().poll(cx).is_ready()
            };
            if expired {
                tracing::info!(parent: &*this.span, "websocket credential expired; closing");
                metrics::socket_closed("expired");
                let expired = AuthError::new(AuthErrorKind::Expired);
                answer(this.protocol, this.outbox, &expired, Answer::Close);
                *this.phase = Phase::Closing;
                continue;
            }
            if this
                .revocation
                .as_ref()
                .is_some_and(|r| r.watch.is_revoked())
            {
                tracing::info!(parent: &*this.span, "websocket credential revoked; closing");
                metrics::socket_closed("revoked");
                let revoked = AuthError::new(AuthErrorKind::Revoked);
                answer(this.protocol, this.outbox, &revoked, Answer::Close);
                *this.phase = Phase::Closing;
                continue;
            }

            if let Some(verification) = this.verifying.as_mut().as_pin_mut() {
                if let Poll::Ready(outcome) = verification.poll(cx) {
                    this.verifying.set(None);
                    let outcome = outcome.and_then(|verified: Verified<V::Identity>| {
                        if verified.identity.subject() == &**this.subject {
                            Ok(verified)
                        } else {
                            Err(AuthError::new(AuthErrorKind::Forbidden)
                                .with_detail("re-authentication as another subject"))
                        }
                    });
                    match outcome {
                        Ok(verified) => {
                            *this.expires_at = verified.expires_at;
                            this.expiry
                                .as_mut()
                                .reset(deadline_for(verified.expires_at));
                            *this.armed = false;
                            if let Some(revocation) = this.revocation.as_mut() {
                                (revocation.renew)(&mut revocation.watch, &verified.identity);
                            }
                            tracing::debug!(parent: &*this.span, "websocket re-authenticated");
                            if let Some(reply) = this.protocol.accepted(this.subject) {
                                this.outbox.push_back(M::text(reply));
                            }
                        }
                        Err(error) => {
                            tracing::info!(parent: &*this.span, reason = %error.kind(), "websocket re-authentication refused");
                            answer(this.protocol, this.outbox, &error, Answer::Reply);
                        }
                    }
                    continue;
                }
            }

            let message = match this.socket.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(message))) => message,
                Poll::Pending => {
                    if this.expiry.as_mut().poll(cx).is_ready() {
                        continue;
                    }
                    if this
                        .revocation
                        .as_ref()
                        .is_some_and(|r| r.watch.poll_revoked(cx))
                    {
                        continue;
                    }
                    return Poll::Pending;
                }
                other => return other,
            };
            let MessageKind::Text(text) = message.kind() else {
                return Poll::Ready(Some(Ok(message)));
            };
            if !this.protocol.may_be_auth(text) {
                return Poll::Ready(Some(Ok(message)));
            }
            let incoming = this.protocol.read(text);
            if !incoming.is_auth() {
                return Poll::Ready(Some(Ok(message)));
            }
            // From here on the message is an auth message: answered here,
            // never handed to the application.
            let duplicate = AuthError::new(AuthErrorKind::Ambiguous);
            if !this.protocol.allows_reauth() {
                tracing::info!(parent: &*this.span, "second authentication on a protocol without re-authentication; closing");
                metrics::socket_closed(AuthErrorKind::Ambiguous.as_str());
                answer(
                    this.protocol,
                    this.outbox,
                    &duplicate,
                    Answer::ReplyAndClose,
                );
                *this.phase = Phase::Closing;
                continue;
            }
            let refusal = match incoming {
                // Over the cap: never verified.
                _ if text.len() > *this.max_len => AuthError::new(AuthErrorKind::TooLarge),
                Incoming::Auth(token) if this.verifying.is_none() => {
                    let credential = Credential::new(SourceKind::FirstMessage, token);
                    this.verifying.set(Some(this.verifier.verify(credential)));
                    continue;
                }
                // One re-authentication at a time.
                Incoming::Auth(_) => duplicate,
                _ => AuthError::new(AuthErrorKind::Malformed).with_detail("malformed auth message"),
            };
            answer(this.protocol, this.outbox, &refusal, Answer::Reply);
        }
    }
}

impl<S, M, E, V, P> Sink<M> for LifetimeGuard<S, M, V, P>
where
    S: Stream<Item = Result<M, E>> + Sink<M>,
    M: WsMessage,
    V: Verifier,
    V::Identity: Subject,
    P: AuthProtocol,
{
    type Error = <S as Sink<M>>::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let mut this = self.project();
        if !this.outbox.is_empty() {
            std::task::ready!(Self::poll_outbox(&mut this.socket, this.outbox, cx))?;
        }
        this.socket.poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: M) -> Result<(), Self::Error> {
        self.project().socket.start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.project().socket.poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.project().socket.poll_close(cx)
    }
}
