//! Messages per second through a socket wrapped in the `LifetimeGuard`
//! (after first-message auth) against the same socket unwrapped, in the same
//! run. In-memory socket pairs (tokio `duplex`), so the network does not
//! drown the difference. The server side speaks axum's `Message` (the default
//! features' adapter) over a tokio-tungstenite stream; both variants pay the
//! same conversion.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::ws::Message as AxumMessage;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::DuplexStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tower_ws_auth::first_message::{JsonAuth, LifetimeGuard};
use tower_ws_auth::jwt::{BasicClaims, JwtVerifier};

type Socket = WebSocketStream<DuplexStream>;
type TError = tokio_tungstenite::tungstenite::Error;

fn to_axum(message: Message) -> AxumMessage {
    match message {
        Message::Text(text) => AxumMessage::Text(text.as_str().into()),
        Message::Binary(bytes) => AxumMessage::Binary(bytes),
        Message::Ping(bytes) => AxumMessage::Ping(bytes),
        Message::Pong(bytes) => AxumMessage::Pong(bytes),
        Message::Close(_) | Message::Frame(_) => AxumMessage::Close(None),
    }
}

fn from_axum(message: AxumMessage) -> Message {
    match message {
        AxumMessage::Text(text) => Message::text(text.as_str()),
        AxumMessage::Binary(bytes) => Message::Binary(bytes),
        AxumMessage::Ping(bytes) => Message::Ping(bytes),
        AxumMessage::Pong(bytes) => Message::Pong(bytes),
        AxumMessage::Close(_) => Message::Close(None),
    }
}

/// The server end, speaking axum's `Message`.
fn server_end(
    socket: Socket,
) -> impl Stream<Item = Result<AxumMessage, TError>> + Sink<AxumMessage, Error = TError> + Unpin {
    socket
        .with(|m: AxumMessage| std::future::ready(Ok::<_, TError>(from_axum(m))))
        .map(|r| r.map(to_axum))
}

const PAYLOAD: &str =
    r#"{"type":"chat","room":"general","text":"hello, how is everyone doing today?"}"#;

async fn pair() -> (Socket, Socket) {
    let (a, b) = tokio::io::duplex(1 << 20);
    (
        WebSocketStream::from_raw_socket(a, Role::Server, None).await,
        WebSocketStream::from_raw_socket(b, Role::Client, None).await,
    )
}

/// Send `count` messages from `client` and read them on `server`; the time.
async fn pump<S>(server: &mut S, client: Socket, count: u64) -> (Duration, Socket)
where
    S: Stream<Item = Result<AxumMessage, TError>> + Unpin,
{
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let mut client = client;
        for _ in 0..count {
            client.feed(Message::text(PAYLOAD)).await.unwrap();
        }
        client.flush().await.unwrap();
        client
    });
    for _ in 0..count {
        black_box(server.next().await.unwrap().unwrap());
    }
    let elapsed = started.elapsed();
    (elapsed, writer.await.unwrap())
}

fn throughput(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let verifier = JwtVerifier::<BasicClaims>::hs256(b"benchmark-secret-of-thirty-two-b").unwrap();
    let mut group = c.benchmark_group("first_message/messages");
    group.throughput(Throughput::Elements(1));

    let (raw, client) = rt.block_on(pair());
    let mut raw = server_end(raw);
    let mut raw_client = Some(client);
    group.bench_function("baseline: raw socket", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let (elapsed, client) = pump(&mut raw, raw_client.take().unwrap(), iters).await;
                raw_client = Some(client);
                elapsed
            })
        })
    });

    let (server, client) = rt.block_on(pair());
    let identity = "alice".to_owned();
    let expires = Some(SystemTime::now() + Duration::from_secs(3600));
    let mut guarded = rt.block_on(async {
        LifetimeGuard::new(server_end(server), &identity, expires, verifier, JsonAuth)
    });
    let mut guarded_client = Some(client);
    group.bench_function("LifetimeGuard-wrapped socket", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let (elapsed, client) =
                    pump(&mut guarded, guarded_client.take().unwrap(), iters).await;
                guarded_client = Some(client);
                elapsed
            })
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = throughput
}
criterion_main!(benches);
