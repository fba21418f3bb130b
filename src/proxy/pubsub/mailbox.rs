//! Where a client's pub/sub messages wait for its connection to write them.

use tokio::sync::mpsc;

use super::Message;

/// A client's message channel, made on its first subscription: most connections never
/// subscribe, and an idle connection should cost as little memory as possible (a channel holds a
/// block of message slots from the start).
#[derive(Default)]
pub struct Mailbox {
    channel: Option<(mpsc::UnboundedSender<Message>, mpsc::UnboundedReceiver<Message>)>,
}

impl Mailbox {
    /// Where subscriber connections deliver this client's messages (the channel is made now if
    /// it does not exist yet).
    pub fn sender(&mut self) -> mpsc::UnboundedSender<Message> {
        let (tx, _) = self.channel.get_or_insert_with(mpsc::unbounded_channel);
        tx.clone()
    }

    /// The next message; never resolves while the client has no channel.
    pub async fn recv(&mut self) -> Option<Message> {
        match &mut self.channel {
            Some((_, rx)) => rx.recv().await,
            None => std::future::pending().await,
        }
    }
}
