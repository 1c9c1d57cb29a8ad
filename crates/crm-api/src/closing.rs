//! The server's shutdown as the background tasks see it: the event streams and the webhook
//! sender stop when it starts.

use tokio::sync::watch;

/// Resolves when the server starts shutting down (`closing` turns `true` or is dropped);
/// never when there is no `closing` to watch.
pub(crate) async fn closed(closing: Option<watch::Receiver<bool>>) {
    match closing {
        Some(mut closing) => drop(closing.wait_for(|closing| *closing).await),
        None => std::future::pending().await,
    }
}
