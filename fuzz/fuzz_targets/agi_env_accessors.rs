//! Arbitrary lines (split on LF, CR stripped) to `AgiEnv::from_lines`, then every typed
//! accessor of the parsed environment.
#![no_main]

use dialgate::agi::AgiEnv;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lines = data
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let Ok(env) = AgiEnv::from_lines(lines) else {
        return;
    };
    let entries: Vec<(&str, &[u8])> = env.entries().collect();
    assert_eq!(entries.is_empty(), env.is_empty());
    // Checked on the first entries only: the check itself is quadratic.
    for (key, value) in entries.iter().take(32) {
        // The first line with a key wins.
        let first = entries.iter().find(|(k, _)| k == key).unwrap().1;
        assert_eq!(env.get_raw(key), Some(first));
        let _ = value;
    }
    let script = env.script_path();
    assert!(!script.contains('?'), "{script:?}");
    assert!(
        !script.starts_with('/') && !script.ends_with('/'),
        "{script:?}"
    );
    let params = env.query_params();
    for (k, v) in params.iter().take(32) {
        assert_eq!(
            env.query_param(k).as_ref(),
            params.iter().find(|(pk, _)| pk == k).map(|(_, v)| v)
        );
        let _ = v;
    }
    if let Some((tech, _endpoint)) = env.channel_technology_endpoint() {
        assert!(!tech.contains('/'));
    }
    let id = env.caller_id();
    assert_eq!(env.caller_number(), id.number);
    assert_eq!(env.caller_name(), id.name);
    if let Some(n) = &id.number {
        assert!(!n.is_empty() && !n.eq_ignore_ascii_case("unknown"));
    }
    assert_eq!(env.presentation().is_some(), env.calling_pres().is_some());
    let args = env.args();
    for (i, a) in args.iter().enumerate().take(32) {
        assert_eq!(env.arg(i + 1).as_ref(), Some(a));
    }
    assert_eq!(env.arg(args.len() + 1), None);
    let _ = (
        env.network(),
        env.network_script(),
        env.request(),
        env.channel(),
        env.language(),
        env.channel_type(),
        env.uniqueid(),
        env.version(),
        env.calling_ani2(),
        env.calling_ton(),
        env.calling_tns(),
        env.dnid(),
        env.rdnis(),
        env.context(),
        env.extension(),
        env.priority(),
        env.enhanced(),
        env.account_code(),
        env.thread_id(),
    );
});
