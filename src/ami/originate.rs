//! `Originate`: the request (always `Async: true`) and its outcome, Asterisk's
//! `OriginateResponse` event, with its numeric `Reason` read into [`OriginateReason`].

use super::{Action, AmiError, Message};

/// Where an originated call goes once answered: a dialplan location or an application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Originate {
    /// e.g. `PJSIP/+15550100@carrier`.
    pub channel: String,
    pub context: Option<String>,
    pub exten: Option<String>,
    pub priority: Option<u32>,
    pub application: Option<String>,
    pub data: Option<String>,
    /// Ring time in milliseconds (Asterisk's default is 30000).
    pub timeout_ms: u64,
    pub caller_id: Option<String>,
    /// Channel variables, each sent as its own `Variable: name=value` line.
    pub variables: Vec<(String, String)>,
    pub account: Option<String>,
    pub channel_id: Option<String>,
}

impl Default for Originate {
    fn default() -> Self {
        Originate {
            channel: String::new(),
            context: None,
            exten: None,
            priority: None,
            application: None,
            data: None,
            timeout_ms: 30_000,
            caller_id: None,
            variables: Vec::new(),
            account: None,
            channel_id: None,
        }
    }
}

impl Originate {
    /// The action, always `Async: true`.
    pub fn to_action(&self) -> Result<Action, AmiError> {
        if self.channel.is_empty() {
            return Err(AmiError::Invalid("Originate needs a channel".into()));
        }
        let dialplan = self.context.is_some() || self.exten.is_some();
        if dialplan == self.application.is_some() {
            return Err(AmiError::Invalid(
                "Originate needs either context/exten/priority or an application".into(),
            ));
        }
        let mut action = Action::new("Originate").field("Channel", &self.channel);
        let optional = [
            ("Context", self.context.clone()),
            ("Exten", self.exten.clone()),
            ("Priority", self.priority.map(|p| p.to_string())),
            ("Application", self.application.clone()),
            ("Data", self.data.clone()),
            ("Timeout", Some(self.timeout_ms.to_string())),
            ("CallerID", self.caller_id.clone()),
            ("Account", self.account.clone()),
            ("ChannelId", self.channel_id.clone()),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                action.push(key, value);
            }
        }
        for (name, value) in &self.variables {
            if name.is_empty() || name.contains('=') {
                return Err(AmiError::Invalid(format!(
                    "Originate variable name {name:?} is empty or contains `=`"
                )));
            }
            action.push("Variable", format!("{name}={value}"));
        }
        action.push("Async", "true");
        action.validate()?;
        Ok(action)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginateResult {
    Success,
    Failure,
}

/// Why an async Originate ended: the `Reason` of its `OriginateResponse`, which is
/// Asterisk's `AST_CONTROL_*` value of the last frame the outgoing channel saw
/// (main/manager.c, `fast_originate`). Read from the number here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginateReason {
    /// 0: no such channel, or the call failed before any signalling.
    Failed,
    /// 1: the far end hung up.
    HungUp,
    /// 3: still ringing when the timeout ran out: no answer.
    NoAnswer,
    /// 4: answered.
    Answered,
    /// 5: busy.
    Busy,
    /// 8: congestion.
    Congestion,
    /// Any other code.
    Other(i32),
}

impl OriginateReason {
    fn from_code(code: i32) -> OriginateReason {
        match code {
            0 => OriginateReason::Failed,
            1 => OriginateReason::HungUp,
            3 => OriginateReason::NoAnswer,
            4 => OriginateReason::Answered,
            5 => OriginateReason::Busy,
            8 => OriginateReason::Congestion,
            other => OriginateReason::Other(other),
        }
    }

    /// Asterisk's number.
    pub fn code(self) -> i32 {
        match self {
            OriginateReason::Failed => 0,
            OriginateReason::HungUp => 1,
            OriginateReason::NoAnswer => 3,
            OriginateReason::Answered => 4,
            OriginateReason::Busy => 5,
            OriginateReason::Congestion => 8,
            OriginateReason::Other(code) => code,
        }
    }

    /// How logs and audit details name it.
    pub fn as_str(self) -> &'static str {
        match self {
            OriginateReason::Failed => "failed",
            OriginateReason::HungUp => "hung up",
            OriginateReason::NoAnswer => "no answer",
            OriginateReason::Answered => "answered",
            OriginateReason::Busy => "busy",
            OriginateReason::Congestion => "congestion",
            OriginateReason::Other(_) => "unknown",
        }
    }
}

/// The `OriginateResponse` event of an async Originate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginateOutcome {
    pub response: OriginateResult,
    /// `Reason` (a missing or unreadable one counts as 0, failed).
    pub reason: OriginateReason,
    pub channel: Option<String>,
    pub uniqueid: Option<String>,
    pub event: Message,
}

impl OriginateOutcome {
    pub(super) fn from_event(event: Message) -> OriginateOutcome {
        let response = match event.get("Response") {
            Some(r) if r.eq_ignore_ascii_case("Success") => OriginateResult::Success,
            _ => OriginateResult::Failure,
        };
        let reason = event
            .get("Reason")
            .and_then(|r| r.trim().parse().ok())
            .map_or(OriginateReason::Failed, OriginateReason::from_code);
        let text = |k: &str| {
            event
                .get(k)
                .filter(|v| !v.is_empty() && *v != "<null>")
                .map(str::to_string)
        };
        OriginateOutcome {
            response,
            reason,
            channel: text("Channel"),
            uniqueid: text("Uniqueid"),
            event,
        }
    }

    pub fn answered(&self) -> bool {
        self.response == OriginateResult::Success && self.reason == OriginateReason::Answered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn originate_action_is_always_async_with_repeated_variables() {
        let o = Originate {
            channel: "PJSIP/+15550100@carrier".into(),
            context: Some("dialgate-callback".into()),
            exten: Some("s".into()),
            priority: Some(1),
            caller_id: Some("\"dialgate\" <+15550199>".into()),
            variables: vec![("A".into(), "1".into()), ("B".into(), "x=y".into())],
            ..Originate::default()
        };
        let action = o.to_action().unwrap();
        let lines: Vec<_> = action.lines().collect();
        assert_eq!(lines.last(), Some(&("Async", "true")));
        assert!(lines.contains(&("Variable", "A=1")));
        assert!(lines.contains(&("Variable", "B=x=y")));
        assert!(lines.contains(&("Timeout", "30000")));
        let both = Originate {
            application: Some("Playback".into()),
            ..o.clone()
        };
        assert!(matches!(both.to_action(), Err(AmiError::Invalid(_))));
        let bad_name = Originate {
            variables: vec![("A=B".into(), "1".into())],
            ..o.clone()
        };
        assert!(matches!(bad_name.to_action(), Err(AmiError::Invalid(_))));
        let injected = Originate {
            variables: vec![("A".into(), "1\r\nAction: Command".into())],
            ..o
        };
        assert!(matches!(injected.to_action(), Err(AmiError::Protocol(_))));
    }

    #[test]
    fn outcome_from_event() {
        let event = Message::new(vec![
            ("Event".into(), "OriginateResponse".into()),
            ("Response".into(), "Failure".into()),
            ("Channel".into(), "PJSIP/1@c".into()),
            ("Reason".into(), "5".into()),
            ("Uniqueid".into(), "<null>".into()),
        ]);
        let o = OriginateOutcome::from_event(event);
        assert_eq!(o.response, OriginateResult::Failure);
        assert_eq!(o.reason, OriginateReason::Busy);
        assert_eq!(o.reason.as_str(), "busy");
        assert_eq!(o.uniqueid, None);
        assert!(!o.answered());
    }

    #[test]
    fn reason_codes_round_trip() {
        for code in -1..10 {
            assert_eq!(OriginateReason::from_code(code).code(), code);
        }
        assert_eq!(OriginateReason::from_code(2), OriginateReason::Other(2));
        let unreadable = Message::new(vec![
            ("Event".into(), "OriginateResponse".into()),
            ("Response".into(), "Success".into()),
            ("Reason".into(), "x".into()),
        ]);
        assert_eq!(
            OriginateOutcome::from_event(unreadable).reason,
            OriginateReason::Failed
        );
    }
}
