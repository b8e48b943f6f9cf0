use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::service::Shared;
use crate::authenticate::Authenticate;
use crate::credential::SourceKind;
use crate::rejection::OnRejection;
use tracing::Span;

pin_project! {
    /// Response future of [`WsAuth`](super::WsAuth).
    pub struct ResponseFuture<S, B, A, R>
    where
        S: Service<Request<B>>,
        A: Authenticate,
    {
        #[pin]
        state: State<A::Future, S::Future, S, B, Arc<Shared<A, R>>, S::Response>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<V, F, S, B, Sh, Res> {
        Verify {
            #[pin]
            verification: V,
            pending: Option<(Request<B>, S)>,
            via: SourceKind,
            shared: Sh,
            span: Span,
        },
        Call {
            #[pin]
            future: F,
        },
        Reject {
            response: Option<Res>,
        },
    }
}

impl<S, B, A, R> ResponseFuture<S, B, A, R>
where
    S: Service<Request<B>>,
    A: Authenticate,
{
    pub(crate) fn call(future: S::Future) -> Self {
        Self {
            state: State::Call { future },
        }
    }

    pub(crate) fn reject(response: S::Response) -> Self {
        Self {
            state: State::Reject {
                response: Some(response),
            },
        }
    }

    pub(crate) fn verify(
        verification: A::Future,
        request: Request<B>,
        inner: S,
        via: SourceKind,
        shared: Arc<Shared<A, R>>,
        span: Span,
    ) -> Self {
        Self {
            state: State::Verify {
                verification,
                pending: Some((request, inner)),
                via,
                shared,
                span,
            },
        }
    }
}

const POLLED_AFTER_COMPLETION: &str = "ResponseFuture polled after completion";

impl<S, B, A, R, ResBody> Future for ResponseFuture<S, B, A, R>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    A: Authenticate,
    R: OnRejection<ResBody>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Verify {
                    verification,
                    pending,
                    via,
                    shared,
                    span,
                } => {
                    let outcome = {
                        let _entered = span.enter();
                        ready!(verification.poll(cx))
                    };
                    let (mut request, mut inner) = pending.take().expect(POLLED_AFTER_COMPLETION);
                    match outcome {
                        Ok(verified) => {
                            shared.accept(span, &mut request, verified, *via);
                            let future = inner.call(request);
                            state.set(State::Call { future });
                        }
                        Err(error) => {
                            let response = shared.reject(span, error.with_via(*via));
                            return Poll::Ready(Ok(response));
                        }
                    }
                }
                StateProj::Call { future } => return future.poll(cx),
                StateProj::Reject { response } => {
                    return Poll::Ready(Ok(response.take().expect(POLLED_AFTER_COMPLETION)))
                }
            }
        }
    }
}

impl<S, B, A, R> std::fmt::Debug for ResponseFuture<S, B, A, R>
where
    S: Service<Request<B>>,
    A: Authenticate,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
