//! Blocking work (store, Argon2id) on tokio's blocking pool, off the async workers.

use std::any::Any;

/// Blocking work that did not return: it panicked, or the runtime shut down first.
#[derive(Debug, thiserror::Error)]
pub enum Interrupted {
    #[error("blocking work panicked: {0}")]
    Panicked(String),
    #[error("blocking work was cancelled (the runtime is shutting down)")]
    Cancelled,
}

/// Runs `work` on the blocking pool and returns what it returned.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Interrupted> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        if e.is_panic() {
            Interrupted::Panicked(panic_message(e.into_panic()))
        } else {
            Interrupted::Cancelled
        }
    })
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map_or_else(|| "(no message)".to_string(), |m| m.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_or_the_panic() {
        assert_eq!(blocking(|| 7).await.unwrap(), 7);
        let e = blocking(|| -> u8 { panic!("boom {}", 1) })
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "blocking work panicked: boom 1");
        let e = blocking(|| -> u8 { panic!("static") }).await.unwrap_err();
        assert!(matches!(e, Interrupted::Panicked(m) if m == "static"));
    }
}
