//! The simulated channel: res_agi's answers to every command, shared by every player so
//! they all answer exactly alike.
//!
//! The channel has no audio: prompts "play" at once (`endpos=8000`), and the caller's key
//! presses come from the digits given, consumed in order by GET DATA and WAIT FOR DIGIT
//! (once they are used up, input times out).

use super::CallSpec;
use crate::agi::{server::RESULT_VARIABLE, Command, Verb};

/// GET DATA's digit limit when the command gives none (res_agi's default).
const DEFAULT_GET_DATA_MAX: usize = 1024;

/// A simulated channel without audio: res_agi's answers to every command, digits the
/// caller types, and the channel's own variables.
pub(crate) struct Channel {
    name: String,
    /// Variables the channel has before the script sets any (`CALLERID(num)`...).
    own_variables: Vec<(&'static str, String)>,
    pub(crate) answered: bool,
    pub(crate) dead: bool,
    pub(crate) set_variables: Vec<(String, String)>,
    /// Digits the caller has not typed yet.
    pending_digits: std::collections::VecDeque<char>,
}

pub(crate) struct Answer {
    pub(crate) line: String,
    /// This reply hangs the channel up (a HANGUP line follows it).
    pub(crate) hangs_up: bool,
}

impl Channel {
    pub(crate) fn new(
        name: &str,
        digits: Option<&str>,
        own_variables: Vec<(&'static str, String)>,
    ) -> Channel {
        Channel {
            name: name.to_string(),
            own_variables,
            answered: false,
            dead: false,
            set_variables: Vec::new(),
            pending_digits: digits.unwrap_or("").chars().collect(),
        }
    }

    /// The channel `spec` describes, with its caller ID, DNID, unique id and extension.
    pub(crate) fn for_spec(spec: &CallSpec) -> Channel {
        let mut own = vec![
            ("UNIQUEID", spec.uniqueid.clone()),
            ("EXTEN", spec.extension.clone()),
            ("CONTEXT", spec.context.clone()),
        ];
        for (name, value) in [
            ("CALLERID(num)", &spec.caller),
            ("CALLERID(name)", &spec.caller_name),
            ("CALLERID(dnid)", &spec.dnid),
        ] {
            if let Some(value) = value {
                own.push((name, value.clone()));
            }
        }
        Channel::new(&spec.channel, spec.digits.as_deref(), own)
    }

    /// The last value the script gave `name`.
    pub(crate) fn set_variable_value(&self, name: &str) -> Option<&str> {
        self.set_variables
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The last value the script gave `DIALGATE_RESULT`.
    pub(crate) fn result(&self) -> Option<String> {
        self.set_variable_value(RESULT_VARIABLE).map(str::to_string)
    }

    /// Answers one command line on the wire: appends the reply line to `out`, then a
    /// `HANGUP` line when the channel dies with it (our HANGUP, or `caller_hangs_up`: the
    /// caller hangs up right after this reply). Returns the reply without its line end
    /// and whether the `HANGUP` line followed.
    pub(crate) fn reply_to(
        &mut self,
        line: &str,
        caller_hangs_up: bool,
        out: &mut Vec<u8>,
    ) -> (String, bool) {
        let answer = self.answer(line);
        let was_dead = self.dead;
        if answer.hangs_up || caller_hangs_up {
            self.dead = true;
        }
        let hangup_event = self.dead && !was_dead;
        out.extend_from_slice(answer.line.as_bytes());
        out.push(b'\n');
        if hangup_event {
            out.extend_from_slice(b"HANGUP\n");
        }
        (answer.line, hangup_event)
    }

    /// res_agi's answer to one command line.
    pub(crate) fn answer(&mut self, line: &str) -> Answer {
        let reply = |line: &str| Answer {
            line: line.to_string(),
            hangs_up: false,
        };
        let command = match Command::parse(line) {
            Ok(command) => command,
            Err(_) => return reply("510 Invalid or unknown command"),
        };
        let verb = command.verb();
        if self.dead && !verb.allowed_on_dead_channel() {
            return reply("511 Command Not Permitted on a dead channel or intercept routine");
        }
        let args = command.args();
        let (min, max) = verb.arity();
        if args.len() < min || args.len() > max {
            return reply("520 Invalid command syntax.  Proper usage not available.");
        }
        match verb {
            Verb::Answer => {
                self.answered = true;
                reply("200 result=0")
            }
            Verb::SetVariable => {
                self.set_variables.push((args[0].clone(), args[1].clone()));
                reply("200 result=1")
            }
            Verb::GetVariable => match self.variable(&args[0]) {
                Some(value) => reply(&format!("200 result=1 ({value})")),
                None => reply("200 result=0"),
            },
            Verb::GetData => {
                let max = args
                    .get(2)
                    .and_then(|m| m.parse::<usize>().ok())
                    .filter(|&m| m > 0)
                    .unwrap_or(DEFAULT_GET_DATA_MAX);
                let (digits, complete) = self.read_digits(max);
                if complete {
                    reply(&format!("200 result={digits}"))
                } else {
                    reply(&format!("200 result={digits} (timeout)"))
                }
            }
            Verb::WaitForDigit => match self.pending_digits.pop_front() {
                Some(digit) => reply(&format!("200 result={}", digit as u32)),
                None => reply("200 result=0"),
            },
            Verb::StreamFile | Verb::ControlStreamFile => reply("200 result=0 endpos=8000"),
            Verb::Hangup => {
                let ours = args.first().is_none_or(|c| *c == self.name);
                if ours {
                    Answer {
                        line: "200 result=1".into(),
                        hangs_up: true,
                    }
                } else {
                    // No such channel to hang up.
                    reply("200 result=-1")
                }
            }
            Verb::Verbose => reply("200 result=1"),
            // NOOP, EXEC, SAY *, and everything else a silent channel accepts.
            _ => reply("200 result=0"),
        }
    }

    /// GET DATA input: up to `max` digits or a `#`. Complete when the caller filled the
    /// entry or pressed `#`, else it timed out with what was typed.
    fn read_digits(&mut self, max: usize) -> (String, bool) {
        let mut digits = String::new();
        while digits.len() < max {
            match self.pending_digits.pop_front() {
                Some('#') => return (digits, true),
                Some(d) => digits.push(d),
                None => return (digits, false),
            }
        }
        (digits, true)
    }

    /// A variable set by the script, or one of the channel's own.
    fn variable(&self, name: &str) -> Option<String> {
        if let Some(value) = self.set_variable_value(name) {
            return Some(value.to_string());
        }
        if matches!(name, "CHANNEL" | "CHANNEL(name)") {
            return Some(self.name.clone());
        }
        self.own_variables
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agi::sim::spec::tests::spec;

    #[test]
    fn answers_like_res_agi() {
        let mut s = spec();
        s.digits = Some("12#3".into());
        let mut ch = Channel::for_spec(&s);
        let mut say = |line: &str| ch.answer(line).line;
        assert_eq!(say("FROB"), "510 Invalid or unknown command");
        assert_eq!(say("ANSWER"), "200 result=0");
        assert_eq!(say("GET VARIABLE X"), "200 result=0");
        assert_eq!(say("SET VARIABLE X \"a b\""), "200 result=1");
        assert_eq!(say("GET VARIABLE X"), "200 result=1 (a b)");
        assert_eq!(
            say("GET VARIABLE CALLERID(num)"),
            "200 result=1 (+8613800138000)"
        );
        assert_eq!(say("GET DATA beep 3000 4"), "200 result=12");
        assert_eq!(say("WAIT FOR DIGIT 1000"), "200 result=51");
        assert_eq!(say("WAIT FOR DIGIT 1000"), "200 result=0");
        assert_eq!(say("GET DATA beep 3000 4"), "200 result= (timeout)");
        assert_eq!(say("STREAM FILE x \"\""), "200 result=0 endpos=8000");
        assert_eq!(say("SAY DIGITS 12 \"\""), "200 result=0");
        assert_eq!(say("VERBOSE \"hi\" 1"), "200 result=1");
        assert_eq!(say("NOOP"), "200 result=0");
        assert_eq!(
            say("STREAM FILE"),
            "520 Invalid command syntax.  Proper usage not available."
        );
        assert!(ch.answered);
    }

    #[test]
    fn get_data_truncates_to_max_and_times_out_short() {
        let mut s = spec();
        s.digits = Some("123456".into());
        let mut ch = Channel::for_spec(&s);
        assert_eq!(ch.answer("GET DATA beep 3000 4").line, "200 result=1234");
        assert_eq!(
            ch.answer("GET DATA beep 3000 4").line,
            "200 result=56 (timeout)"
        );
    }

    #[test]
    fn dead_channel_refuses_live_only_verbs() {
        let s = spec();
        let mut ch = Channel::for_spec(&s);
        let hangup = ch.answer("HANGUP");
        assert!(hangup.hangs_up);
        assert_eq!(hangup.line, "200 result=1");
        ch.dead = true;
        assert_eq!(
            ch.answer("STREAM FILE x \"\"").line,
            "511 Command Not Permitted on a dead channel or intercept routine"
        );
        assert_eq!(ch.answer("SET VARIABLE A b").line, "200 result=1");
        assert_eq!(ch.answer("EXEC Busy").line, "200 result=0");
    }
}
