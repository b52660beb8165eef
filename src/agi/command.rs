//! AGI commands: the full set res_agi knows, serialised the way Asterisk parses them.

use std::fmt;

use super::ProtocolError;

/// Asterisk reads a command line into a 2 KiB buffer (AGI_BUF_LEN); longer ones are cut.
pub const MAX_COMMAND_LINE: usize = 2047;

macro_rules! verbs {
    ($( $variant:ident => $words:literal, $min:literal..=$max:literal, dead: $dead:literal, text: [$($text:literal),*]; )*) => {
        /// Every command verb of res_agi, with its argument count and whether Asterisk
        /// still accepts it after the caller hung up.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Verb { $($variant),* }

        impl Verb {
            pub const ALL: &'static [Verb] = &[$(Verb::$variant),*];

            /// The command words as Asterisk spells them (`STREAM FILE`).
            pub fn words(self) -> &'static str {
                match self { $(Verb::$variant => $words),* }
            }

            /// Minimum and maximum number of arguments after the verb words.
            pub fn arity(self) -> (usize, usize) {
                match self { $(Verb::$variant => ($min, $max)),* }
            }

            /// Allowed on a dead channel (after hangup); everything else gets 511.
            pub fn allowed_on_dead_channel(self) -> bool {
                match self { $(Verb::$variant => $dead),* }
            }

            /// Argument positions that are free text and therefore always quoted.
            fn text_args(self) -> &'static [usize] {
                match self { $(Verb::$variant => &[$($text),*]),* }
            }
        }
    };
}

verbs! {
    Answer => "ANSWER", 0..=0, dead: false, text: [];
    AsyncAgiBreak => "ASYNCAGI BREAK", 0..=0, dead: true, text: [];
    ChannelStatus => "CHANNEL STATUS", 0..=1, dead: false, text: [];
    ControlStreamFile => "CONTROL STREAM FILE", 2..=7, dead: false, text: [];
    DatabaseDel => "DATABASE DEL", 2..=2, dead: true, text: [];
    DatabaseDeltree => "DATABASE DELTREE", 1..=2, dead: true, text: [];
    DatabaseGet => "DATABASE GET", 2..=2, dead: true, text: [];
    DatabasePut => "DATABASE PUT", 3..=3, dead: true, text: [];
    Exec => "EXEC", 1..=2, dead: true, text: [];
    GetData => "GET DATA", 1..=3, dead: false, text: [];
    GetFullVariable => "GET FULL VARIABLE", 1..=2, dead: true, text: [];
    GetOption => "GET OPTION", 2..=3, dead: false, text: [];
    GetVariable => "GET VARIABLE", 1..=1, dead: true, text: [];
    Gosub => "GOSUB", 3..=4, dead: false, text: [];
    Hangup => "HANGUP", 0..=1, dead: false, text: [];
    Noop => "NOOP", 0..=1, dead: true, text: [];
    ReceiveChar => "RECEIVE CHAR", 1..=1, dead: false, text: [];
    ReceiveText => "RECEIVE TEXT", 1..=1, dead: false, text: [];
    RecordFile => "RECORD FILE", 4..=7, dead: false, text: [];
    SayAlpha => "SAY ALPHA", 2..=2, dead: false, text: [];
    SayDigits => "SAY DIGITS", 2..=2, dead: false, text: [];
    SayNumber => "SAY NUMBER", 2..=3, dead: false, text: [];
    SayPhonetic => "SAY PHONETIC", 2..=2, dead: false, text: [];
    SayDate => "SAY DATE", 2..=2, dead: false, text: [];
    SayTime => "SAY TIME", 2..=2, dead: false, text: [];
    SayDatetime => "SAY DATETIME", 2..=4, dead: false, text: [];
    SendImage => "SEND IMAGE", 1..=1, dead: false, text: [];
    SendText => "SEND TEXT", 1..=1, dead: false, text: [0];
    SetAutohangup => "SET AUTOHANGUP", 1..=1, dead: false, text: [];
    SetCallerid => "SET CALLERID", 1..=1, dead: false, text: [];
    SetContext => "SET CONTEXT", 1..=1, dead: false, text: [];
    SetExtension => "SET EXTENSION", 1..=1, dead: false, text: [];
    SetMusic => "SET MUSIC", 1..=2, dead: false, text: [];
    SetPriority => "SET PRIORITY", 1..=1, dead: false, text: [];
    SetVariable => "SET VARIABLE", 2..=2, dead: true, text: [];
    SpeechActivateGrammar => "SPEECH ACTIVATE GRAMMAR", 1..=1, dead: false, text: [];
    SpeechCreate => "SPEECH CREATE", 1..=1, dead: false, text: [];
    SpeechDeactivateGrammar => "SPEECH DEACTIVATE GRAMMAR", 1..=1, dead: false, text: [];
    SpeechDestroy => "SPEECH DESTROY", 0..=0, dead: true, text: [];
    SpeechLoadGrammar => "SPEECH LOAD GRAMMAR", 2..=2, dead: false, text: [];
    SpeechRecognize => "SPEECH RECOGNIZE", 2..=3, dead: false, text: [];
    SpeechSet => "SPEECH SET", 2..=2, dead: false, text: [];
    SpeechUnloadGrammar => "SPEECH UNLOAD GRAMMAR", 1..=1, dead: true, text: [];
    StreamFile => "STREAM FILE", 2..=3, dead: false, text: [];
    TddMode => "TDD MODE", 1..=1, dead: false, text: [];
    Verbose => "VERBOSE", 1..=2, dead: true, text: [0];
    WaitForDigit => "WAIT FOR DIGIT", 1..=1, dead: false, text: [];
}

/// One AGI command: a verb and its arguments. Build it with the typed constructors
/// (`Command::stream_file("welcome", "")`); [`Command::to_line`] checks and serialises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    verb: Verb,
    args: Vec<String>,
}

impl Command {
    /// A command from a verb and raw arguments; the arity is checked by [`to_line`](Self::to_line).
    pub fn new(verb: Verb, args: impl IntoIterator<Item = impl Into<String>>) -> Command {
        Command {
            verb,
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    pub fn verb(&self) -> Verb {
        self.verb
    }

    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The line to write, without its `\n`. Refuses arguments that would let a value
    /// start a second command (CR, LF, NUL), wrong arities and over-long lines.
    pub fn to_line(&self) -> Result<String, ProtocolError> {
        let (min, max) = self.verb.arity();
        if self.args.len() < min || self.args.len() > max {
            return Err(ProtocolError::Arity {
                verb: self.verb.words(),
                min,
                max,
                got: self.args.len(),
            });
        }
        let mut line = String::from(self.verb.words());
        for (i, arg) in self.args.iter().enumerate() {
            if arg.contains(['\r', '\n', '\0']) {
                return Err(ProtocolError::UnsafeArgument {
                    verb: self.verb.words(),
                    position: i + 1,
                });
            }
            line.push(' ');
            push_quoted(&mut line, arg, self.verb.text_args().contains(&i));
        }
        if line.len() > MAX_COMMAND_LINE {
            return Err(ProtocolError::CommandTooLong(line.len()));
        }
        Ok(line)
    }

    /// Parses a command line the way res_agi does (words split on blanks, `"` quotes,
    /// backslash escapes the next byte). Used to play Asterisk's side.
    pub fn parse(line: &str) -> Result<Command, ProtocolError> {
        let words = split_words(line);
        // Longest verb first: "SPEECH LOAD GRAMMAR" before "SPEECH".
        let mut best: Option<(Verb, usize)> = None;
        for &verb in Verb::ALL {
            let verb_words: Vec<&str> = verb.words().split(' ').collect();
            let matches = verb_words.len() <= words.len()
                && verb_words
                    .iter()
                    .zip(&words)
                    .all(|(v, w)| v.eq_ignore_ascii_case(w));
            if matches && best.is_none_or(|(_, n)| verb_words.len() > n) {
                best = Some((verb, verb_words.len()));
            }
        }
        let (verb, n) =
            best.ok_or_else(|| ProtocolError::UnknownCommand(line.chars().take(80).collect()))?;
        Ok(Command::new(verb, words.into_iter().skip(n)))
    }

    pub fn answer() -> Command {
        Command::new(Verb::Answer, [""; 0])
    }
    pub fn hangup() -> Command {
        Command::new(Verb::Hangup, [""; 0])
    }
    pub fn noop() -> Command {
        Command::new(Verb::Noop, [""; 0])
    }
    pub fn verbose(message: &str, level: u8) -> Command {
        Command::new(Verb::Verbose, [message.to_string(), level.to_string()])
    }
    pub fn set_variable(name: &str, value: &str) -> Command {
        Command::new(Verb::SetVariable, [name, value])
    }
    pub fn get_variable(name: &str) -> Command {
        Command::new(Verb::GetVariable, [name])
    }
    pub fn get_full_variable(expression: &str) -> Command {
        Command::new(Verb::GetFullVariable, [expression])
    }
    pub fn stream_file(file: &str, escape_digits: &str) -> Command {
        Command::new(Verb::StreamFile, [file, escape_digits])
    }
    /// GET DATA with a prompt file, timeout in milliseconds and a maximum digit count.
    pub fn get_data(file: &str, timeout_ms: u32, max_digits: u32) -> Command {
        Command::new(
            Verb::GetData,
            [
                file.to_string(),
                timeout_ms.to_string(),
                max_digits.to_string(),
            ],
        )
    }
    pub fn wait_for_digit(timeout_ms: i32) -> Command {
        Command::new(Verb::WaitForDigit, [timeout_ms.to_string()])
    }
    pub fn say_digits(digits: &str, escape_digits: &str) -> Command {
        Command::new(Verb::SayDigits, [digits, escape_digits])
    }
    pub fn say_number(number: i64, escape_digits: &str) -> Command {
        Command::new(Verb::SayNumber, [number.to_string(), escape_digits.into()])
    }
    pub fn exec(application: &str, options: &str) -> Command {
        Command::new(Verb::Exec, [application, options])
    }
    pub fn channel_status() -> Command {
        Command::new(Verb::ChannelStatus, [""; 0])
    }
    pub fn set_autohangup(seconds: u32) -> Command {
        Command::new(Verb::SetAutohangup, [seconds.to_string()])
    }
    pub fn gosub(context: &str, extension: &str, priority: &str) -> Command {
        Command::new(Verb::Gosub, [context, extension, priority])
    }
    pub fn database_get(family: &str, key: &str) -> Command {
        Command::new(Verb::DatabaseGet, [family, key])
    }
    pub fn database_put(family: &str, key: &str, value: &str) -> Command {
        Command::new(Verb::DatabasePut, [family, key, value])
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_line() {
            Ok(line) => f.write_str(&line),
            Err(_) => write!(
                f,
                "{} <{} invalid args>",
                self.verb.words(),
                self.args.len()
            ),
        }
    }
}

fn push_quoted(line: &mut String, arg: &str, always_quote: bool) {
    let needs_quotes = always_quote
        || arg.is_empty()
        || arg
            .chars()
            .any(|c| c == ' ' || c == '\t' || c == '"' || c == '\\');
    if !needs_quotes {
        line.push_str(arg);
        return;
    }
    line.push('"');
    for c in arg.chars() {
        if c == '"' || c == '\\' {
            line.push('\\');
        }
        line.push(c);
    }
    line.push('"');
}

/// res_agi's parse_args: blanks separate words outside quotes, `"` toggles quoting
/// (and makes an empty word possible), a backslash takes the next byte literally.
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut in_word, mut quoted, mut escaped) = (false, false, false);
    for c in line.chars() {
        if escaped {
            word.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => {
                escaped = true;
                in_word = true;
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            ' ' | '\t' if !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            _ => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn serialises_like_the_recorded_transcripts() {
        assert_eq!(Command::answer().to_line().unwrap(), "ANSWER");
        assert_eq!(
            Command::verbose("hello", 1).to_line().unwrap(),
            r#"VERBOSE "hello" 1"#
        );
        assert_eq!(
            Command::stream_file("silence/1", "").to_line().unwrap(),
            r#"STREAM FILE silence/1 """#
        );
        assert_eq!(
            Command::get_variable("CALLERID(num)").to_line().unwrap(),
            "GET VARIABLE CALLERID(num)"
        );
        assert_eq!(
            Command::set_variable("DIALGATE_RESULT", "ok")
                .to_line()
                .unwrap(),
            "SET VARIABLE DIALGATE_RESULT ok"
        );
        assert_eq!(
            Command::set_variable("X", r#"say "hi" \o/"#)
                .to_line()
                .unwrap(),
            r#"SET VARIABLE X "say \"hi\" \\o/""#
        );
    }

    #[test]
    fn refuses_injection_before_anything_is_written() {
        for bad in ["x\nEXEC System rm", "x\r", "a\0b"] {
            let err = Command::set_variable("X", bad).to_line().unwrap_err();
            assert!(matches!(
                err,
                ProtocolError::UnsafeArgument { position: 2, .. }
            ));
        }
    }

    #[test]
    fn checks_arity_and_length() {
        assert!(Command::new(Verb::StreamFile, ["only-one"])
            .to_line()
            .is_err());
        assert!(Command::new(Verb::Answer, ["extra"]).to_line().is_err());
        let long = "x".repeat(3000);
        assert!(matches!(
            Command::verbose(&long, 1).to_line(),
            Err(ProtocolError::CommandTooLong(_))
        ));
    }

    #[test]
    fn parses_every_verb_case_insensitively() {
        for &verb in Verb::ALL {
            let (min, _) = verb.arity();
            let args: Vec<String> = (0..min).map(|i| format!("a{i}")).collect();
            let cmd = Command::new(verb, args);
            let line = cmd.to_line().unwrap();
            assert_eq!(Command::parse(&line).unwrap(), cmd, "{line}");
            assert_eq!(
                Command::parse(&line.to_lowercase()).unwrap().verb(),
                verb,
                "{line}"
            );
        }
        assert!(Command::parse("FROB NICATE").is_err());
    }

    #[test]
    fn dead_channel_set_matches_res_agi() {
        let dead: Vec<&str> = Verb::ALL
            .iter()
            .filter(|v| v.allowed_on_dead_channel())
            .map(|v| v.words())
            .collect();
        assert_eq!(
            dead,
            [
                "ASYNCAGI BREAK",
                "DATABASE DEL",
                "DATABASE DELTREE",
                "DATABASE GET",
                "DATABASE PUT",
                "EXEC",
                "GET FULL VARIABLE",
                "GET VARIABLE",
                "NOOP",
                "SET VARIABLE",
                "SPEECH DESTROY",
                "SPEECH UNLOAD GRAMMAR",
                "VERBOSE"
            ]
        );
    }

    proptest! {
        #[test]
        fn serialise_then_parse_round_trips(
            name in "[A-Za-z_()]{1,20}",
            value in "[^\r\n\0]{0,60}",
        ) {
            let cmd = Command::set_variable(&name, &value);
            let line = cmd.to_line().unwrap();
            prop_assert!(!line.contains('\n'));
            prop_assert_eq!(Command::parse(&line).unwrap(), cmd);
        }

        #[test]
        fn parse_never_panics(line in ".{0,200}") {
            let _ = Command::parse(&line);
        }
    }
}
