//! `AGI(agi://host/ping)`: lets an operator test the dialplan wiring before anything else.

use crate::agi::{server::RESULT_VARIABLE, AgiCall};

/// Sets `DIALGATE_RESULT=pong` and closes. It never answers the channel, so a test
/// call costs the caller nothing.
pub async fn ping(mut call: AgiCall) -> anyhow::Result<()> {
    call.set_variable(RESULT_VARIABLE, "pong").await?;
    call.close().await;
    Ok(())
}
