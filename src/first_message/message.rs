//! The message types of the WebSocket libraries, seen through one trait so
//! that first-message auth and the lifetime guard have a single code path.

/// What a message is, as far as authentication cares.
#[derive(Debug)]
pub enum MessageKind<'a> {
    /// A text message.
    Text(&'a str),
    /// A binary message of this many bytes.
    Binary(usize),
    /// A ping or pong; the WebSocket library answers pings itself.
    Control,
    /// A close frame.
    Close,
}

/// A WebSocket message type: implemented for axum's `Message` (feature `axum`)
/// and tokio-tungstenite's `Message` (feature `tungstenite`). Implement it for
/// another library's type to use [`FirstMessageAuth`](super::FirstMessageAuth)
/// and [`LifetimeGuard`](super::LifetimeGuard) with it.
pub trait WsMessage: Sized {
    /// Classify the message.
    fn kind(&self) -> MessageKind<'_>;
    /// A text message.
    fn text(text: String) -> Self;
    /// A close frame with `code` and `reason`.
    fn close(code: u16, reason: &'static str) -> Self;
}

#[cfg(feature = "axum")]
impl WsMessage for axum::extract::ws::Message {
    fn kind(&self) -> MessageKind<'_> {
        use axum::extract::ws::Message;
        match self {
            Message::Text(text) => MessageKind::Text(text.as_str()),
            Message::Binary(bytes) => MessageKind::Binary(bytes.len()),
            Message::Ping(_) | Message::Pong(_) => MessageKind::Control,
            Message::Close(_) => MessageKind::Close,
        }
    }

    fn text(text: String) -> Self {
        Self::Text(text.into())
    }

    fn close(code: u16, reason: &'static str) -> Self {
        Self::Close(Some(axum::extract::ws::CloseFrame {
            code,
            reason: reason.into(),
        }))
    }
}

#[cfg(feature = "tungstenite")]
impl WsMessage for tokio_tungstenite::tungstenite::Message {
    fn kind(&self) -> MessageKind<'_> {
        use tokio_tungstenite::tungstenite::Message;
        match self {
            Message::Text(text) => MessageKind::Text(text.as_str()),
            Message::Binary(bytes) => MessageKind::Binary(bytes.len()),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => MessageKind::Control,
            Message::Close(_) => MessageKind::Close,
        }
    }

    fn text(text: String) -> Self {
        Self::Text(text.into())
    }

    fn close(code: u16, reason: &'static str) -> Self {
        use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
        Self::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        }))
    }
}
