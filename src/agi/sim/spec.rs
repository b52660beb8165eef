//! The call Asterisk places: [`CallSpec`] and the environment block it writes.

use crate::agi::DEFAULT_PORT;

/// The call Asterisk places: what goes into the environment block, and how the caller
/// behaves (digits typed, hanging up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSpec {
    /// Path after `agi://host:port/`, query included (`verify?mode=code`).
    pub script: String,
    /// Channel name, e.g. `PJSIP/carrier-00000001`; its technology becomes `agi_type`.
    pub channel: String,
    /// Caller number; `None` is sent as `unknown`.
    pub caller: Option<String>,
    pub caller_name: Option<String>,
    /// Q.931 presentation byte (`agi_callingpres`): 0 allowed, 32 withheld, 67 unavailable.
    pub calling_pres: u8,
    pub dnid: Option<String>,
    pub extension: String,
    pub context: String,
    /// Dialplan arguments after the URL: `agi_arg_1` ... `agi_arg_N`.
    pub args: Vec<String>,
    pub uniqueid: String,
    /// What the caller types for GET DATA / WAIT FOR DIGIT (`#` ends a GET DATA entry);
    /// `None` (or once used up): the input times out.
    pub digits: Option<String>,
    /// Send an unsolicited `HANGUP` after this many replies (0: right after the
    /// environment), as when the caller hangs up mid-call.
    pub hangup_after: Option<usize>,
    /// Asterisk version (`agi_version`).
    pub version: String,
}

impl Default for CallSpec {
    fn default() -> Self {
        CallSpec {
            script: String::new(),
            channel: "PJSIP/carrier-00000001".into(),
            caller: None,
            caller_name: None,
            calling_pres: 0,
            dnid: None,
            extension: "s".into(),
            context: "default".into(),
            args: Vec::new(),
            uniqueid: "1700000000.1".into(),
            digits: None,
            hangup_after: None,
            version: "20.11.0".into(),
        }
    }
}

impl CallSpec {
    /// The FastAGI environment block exactly as Asterisk (20.x, `setup_env()`) writes it
    /// for `AGI(agi://host:port/<script>,<args>)`, ending with the empty line.
    pub fn env_block(&self, host: &str, port: u16) -> Vec<u8> {
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let authority = if port == DEFAULT_PORT {
            host
        } else {
            format!("{host}:{port}")
        };
        let script = self.script.trim_start_matches('/');
        let request = if script.is_empty() {
            format!("agi://{authority}")
        } else {
            format!("agi://{authority}/{script}")
        };
        let unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
        let technology = self
            .channel
            .split_once('/')
            .map_or(self.channel.as_str(), |(tech, _)| tech);

        let mut lines: Vec<(String, String)> = vec![("agi_network".into(), "yes".into())];
        if !script.is_empty() {
            lines.push(("agi_network_script".into(), script.to_string()));
        }
        lines.extend(
            [
                ("agi_request", request),
                ("agi_channel", self.channel.clone()),
                ("agi_language", "en".into()),
                ("agi_type", technology.to_string()),
                ("agi_uniqueid", self.uniqueid.clone()),
                ("agi_version", self.version.clone()),
                ("agi_callerid", unknown(&self.caller)),
                ("agi_calleridname", unknown(&self.caller_name)),
                ("agi_callingpres", self.calling_pres.to_string()),
                ("agi_callingani2", "0".into()),
                ("agi_callington", "0".into()),
                ("agi_callingtns", "0".into()),
                ("agi_dnid", unknown(&self.dnid)),
                ("agi_rdnis", "unknown".into()),
                ("agi_context", self.context.clone()),
                ("agi_extension", self.extension.clone()),
                ("agi_priority", "1".into()),
                ("agi_enhanced", "0.0".into()),
                ("agi_accountcode", String::new()),
                ("agi_threadid", "140234871391808".into()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        for (i, arg) in self.args.iter().enumerate() {
            lines.push((format!("agi_arg_{}", i + 1), arg.clone()));
        }
        let mut block = Vec::new();
        for (key, value) in lines {
            block.extend_from_slice(key.as_bytes());
            block.extend_from_slice(b": ");
            block.extend_from_slice(value.as_bytes());
            block.push(b'\n');
        }
        block.push(b'\n');
        block
    }

    /// A field that would end an environment line early (CR, LF, NUL).
    pub(crate) fn unsafe_field(&self) -> Option<&'static str> {
        let fields: [(&'static str, Option<&str>); 10] = [
            ("script", Some(&self.script)),
            ("channel", Some(&self.channel)),
            ("caller", self.caller.as_deref()),
            ("caller name", self.caller_name.as_deref()),
            ("dnid", self.dnid.as_deref()),
            ("extension", Some(&self.extension)),
            ("context", Some(&self.context)),
            ("uniqueid", Some(&self.uniqueid)),
            ("version", Some(&self.version)),
            ("digits", self.digits.as_deref()),
        ];
        let bad = |v: &str| v.contains(['\r', '\n', '\0']);
        fields
            .into_iter()
            .find(|(_, v)| v.is_some_and(bad))
            .map(|(name, _)| name)
            .or_else(|| self.args.iter().any(|a| bad(a)).then_some("argument"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::agi::AgiEnv;

    pub(crate) fn spec() -> CallSpec {
        CallSpec {
            script: "verify?mode=code".into(),
            caller: Some("+8613800138000".into()),
            dnid: Some("+861055550100".into()),
            extension: "+861055550100".into(),
            context: "dialin".into(),
            args: vec!["+861055550100".into(), String::new()],
            ..CallSpec::default()
        }
    }

    #[test]
    fn env_block_parses_and_ends_with_a_blank_line() {
        let block = spec().env_block("127.0.0.1", 4574);
        assert!(block.ends_with(b"agi_arg_2: \n\n"));
        let text = String::from_utf8(block.clone()).unwrap();
        assert!(text.starts_with(
            "agi_network: yes\nagi_network_script: verify?mode=code\n\
             agi_request: agi://127.0.0.1:4574/verify?mode=code\n\
             agi_channel: PJSIP/carrier-00000001\nagi_language: en\nagi_type: PJSIP\n"
        ));
        assert!(text.contains("agi_accountcode: \n"));
        let lines: Vec<&[u8]> = block[..block.len() - 2].split(|&b| b == b'\n').collect();
        let env = AgiEnv::from_lines(lines).unwrap();
        assert_eq!(env.caller_number().as_deref(), Some("+8613800138000"));
        assert_eq!(env.caller_name(), None);
        assert_eq!(env.script_path(), "verify");
        assert_eq!(env.args(), vec!["+861055550100", ""]);
    }

    #[test]
    fn default_port_and_ipv6_in_request() {
        let mut s = spec();
        s.script = String::new();
        let text = String::from_utf8(s.env_block("::1", DEFAULT_PORT)).unwrap();
        assert!(text.starts_with("agi_network: yes\nagi_request: agi://[::1]\n"));
    }
}
