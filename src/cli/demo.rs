//! `dialgate demo`: a ready SQLite database with a demo account and a fictional dial-in
//! number, served on loopback, with a "simulate the call" button on the page.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use clap::Args;
use diesel::prelude::*;
use serde::Deserialize;
use serde_json::json;

use super::{
    serve::{self, ServeOptions, ServeSettings},
    Failure, GlobalArgs,
};
use crate::{
    agi::sim::{place_call, CallSpec},
    auth::{
        accounts::{self, AccountError, Enrollment},
        login::{self, random_token, ChallengeState},
    },
    config::Given,
    store::{schema::login_challenges, DatabaseUrl, Store},
};

pub const DEMO_USERNAME: &str = "demo";
/// Fictional numbers: a Beijing number in a range used for examples, and a mobile.
pub const DEMO_PHONE: &str = "+8613800138000";
pub const DEMO_DIALIN: &str = "+861055550100";
/// The trunk the simulated calls arrive on, and the only one the demo trusts.
const DEMO_TRUNK: &str = "PJSIP/carrier";

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub serve: Given<ServeOptions>,
}

pub async fn run(global: &GlobalArgs, args: DemoArgs) -> Result<(), Failure> {
    let mut config = global.config()?;
    if global.options.database_url.is_none() {
        config.database_url = DatabaseUrl::Sqlite(config.data_dir.join("demo.sqlite3"));
    }
    let mut options = ServeOptions::layered(args.serve, &config)?;
    options
        .dialin_number
        .get_or_insert_with(|| vec![DEMO_DIALIN.into()]);
    options
        .trusted_trunk
        .get_or_insert_with(|| vec![DEMO_TRUNK.into()]);
    // The demo serves plain HTTP on loopback.
    options.insecure_cookies = true;
    let settings = ServeSettings::resolve(options, &config)?;
    let store = serve::open_store(global, &config).await?;
    let password = random_token(9);
    let account = {
        let store = store.clone();
        let password = password.clone();
        let config = config.clone();
        tokio::task::spawn_blocking(move || -> Result<(), AccountError> {
            let enrollment = Enrollment::prepare(
                DEMO_USERNAME,
                &password,
                "Demo User",
                DEMO_PHONE,
                Vec::new(),
                &super::enroll::rules(&config),
            )?;
            match accounts::enroll(&store, &enrollment) {
                Err(AccountError::UsernameTaken(_)) => {
                    accounts::set_password(&store, DEMO_USERNAME, &enrollment.password_hash)?;
                    accounts::set_phone(&store, DEMO_USERNAME, &enrollment.phone)?;
                    accounts::set_status(&store, DEMO_USERNAME, accounts::Status::Active)?;
                    Ok(())
                }
                other => other.map(drop),
            }
        })
        .await
        .map_err(|e| Failure::System(anyhow::anyhow!("preparing the demo account panicked: {e}")))?
    };
    account?;
    let http = settings.http_listen;
    let agi = settings.agi_listen;
    let dialin = settings
        .gateway
        .login
        .dialin_numbers
        .first()
        .map(|n| n.to_string())
        .unwrap_or_default();
    println!("dialgate demo (database {})", store.url());
    println!("  open:     http://{http}/");
    println!("  username: {DEMO_USERNAME}  password: {password}");
    println!("  the demo phone is {DEMO_PHONE}; the page's \"Simulate the call\" plays the call,");
    println!("  or run:   dialgate simulate-call --target {agi} --from {DEMO_PHONE} --to {dialin}");
    println!("  stop with Ctrl-C");
    let demo = Arc::new(Demo {
        store: store.clone(),
        agi,
    });
    let routes = Router::new()
        .route("/v1/demo", get(|| async { Json(json!({ "demo": true })) }))
        .route("/v1/demo/simulate-call", post(simulate_call))
        .with_state(demo);
    serve::run_with(store, settings, Some(routes)).await
}

struct Demo {
    store: Store,
    agi: SocketAddr,
}

#[derive(Deserialize)]
struct SimulateRequest {
    challenge_id: String,
}

fn error(status: StatusCode, code: &str) -> Response {
    (status, Json(json!({ "error": code }))).into_response()
}

/// Plays the enrolled phone calling the challenge's number, over real FastAGI.
async fn simulate_call(
    State(demo): State<Arc<Demo>>,
    headers: HeaderMap,
    body: Option<Json<SimulateRequest>>,
) -> Response {
    let Some(Json(request)) = body else {
        return error(StatusCode::BAD_REQUEST, "bad_request");
    };
    let Some(secret) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
    else {
        return error(StatusCode::NOT_FOUND, "not_found");
    };
    let store = demo.store.clone();
    let id = request.challenge_id.clone();
    let found = tokio::task::spawn_blocking(move || {
        let status = login::status(&store, &id, &secret).ok()?;
        if status.state != ChallengeState::Pending {
            return None;
        }
        login_challenges::table
            .find(&id)
            .select((login_challenges::caller_e164, login_challenges::dial_number))
            .first::<(String, String)>(&mut *store.conn().ok()?)
            .ok()
    })
    .await
    .ok()
    .flatten();
    let Some((caller, dialled)) = found else {
        return error(StatusCode::NOT_FOUND, "not_found");
    };
    let spec = CallSpec {
        script: "verify".into(),
        context: "dialin".into(),
        caller: Some(caller),
        args: vec![dialled.clone()],
        dnid: Some(dialled.clone()),
        extension: dialled,
        ..CallSpec::default()
    };
    match place_call(demo.agi, &spec, Duration::from_secs(10)).await {
        Ok(outcome) => Json(json!({ "result": outcome.result })).into_response(),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({ "error": "call_failed", "detail": e.to_string() })),
        )
            .into_response(),
    }
}
