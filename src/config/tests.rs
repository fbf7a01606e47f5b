//! The sources and the table together: precedence, errors and their
//! messages, validation, `--check-config` and `--help`. The value parsers'
//! own tables are in `values.rs`.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::options::{find_option, OPTIONS};
use super::sources::{env_name, META_FLAGS};
use super::*;

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn env(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs `from_sources` with `file`, if any, served as `corral.conf`.
fn load(args: &[&str], vars: &[(&str, &str)], file: Option<&str>) -> Result<Command, ConfigError> {
    let file = file.map(str::to_string);
    let read = move |path: &Path| -> io::Result<String> {
        match &file {
            Some(text) if path == Path::new("corral.conf") => Ok(text.clone()),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
        }
    };
    from_sources(&strings(args), &env(vars), &read)
}

/// `load` that must give `Command::Run`.
fn run(args: &[&str], vars: &[(&str, &str)], file: Option<&str>) -> Config {
    match load(args, vars, file) {
        Ok(Command::Run(config)) => config,
        other => panic!("expected Run, got {other:?}"),
    }
}

/// `load` that must fail; returns the error's one line.
fn fails(args: &[&str], vars: &[(&str, &str)], file: Option<&str>) -> String {
    match load(args, vars, file) {
        Err(e) => {
            let line = e.to_string();
            assert!(!line.contains('\n'), "error is not one line: {line}");
            line
        }
        Ok(other) => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn defaults_are_valid_and_documented() {
    let config = Config::default();
    config.validate().unwrap();
    assert_eq!(config.listen, vec![DEFAULT_LISTEN]);
    assert!(config.workers >= MIN_DEFAULT_WORKERS);
    assert_eq!(run(&[], &[], None), config);
}

#[test]
fn defaults_come_from_the_types_that_use_them() {
    let config = Config::default();
    assert_eq!(config.limits(), Limits::default());
    assert_eq!(config.timeouts(), Timeouts::default());
    assert_eq!(AppLimits::from(&config), AppLimits::default());
    let (got, want) = (config.cache_config(), CacheConfig::default());
    assert_eq!(got.max_bytes, want.max_bytes);
    assert_eq!(got.max_entry_bytes, want.max_entry_bytes);
    assert_eq!(got.wait_timeout, want.wait_timeout);
    assert_eq!(got.error_ttl, want.error_ttl);
    assert_eq!(got.compute_concurrency, want.compute_concurrency);
}

#[test]
fn precedence_is_flag_env_file_default() {
    let file = Some("workers = 3\nidle-timeout = 3s\nmax-body-bytes = 3KiB\n");
    let vars = [
        ("CORRAL_CONFIG", "corral.conf"),
        ("CORRAL_WORKERS", "5"),
        ("CORRAL_IDLE_TIMEOUT", "5s"),
    ];
    let flags = ["--workers", "7"];

    let c = run(&flags, &vars, file);
    assert_eq!(c.workers, 7, "flag beats env and file");
    assert_eq!(c.idle_timeout, Duration::from_secs(5), "env beats file");
    assert_eq!(c.max_body_bytes, 3 * 1024, "file beats default");
    assert_eq!(c.queue, DEFAULT_QUEUE, "default when nobody says");

    let c = run(&[], &vars, file);
    assert_eq!(c.workers, 5);
    let c = run(&[], &[("CORRAL_CONFIG", "corral.conf")], file);
    assert_eq!(c.workers, 3);
    assert_eq!(c.idle_timeout, Duration::from_secs(3));
}

#[test]
fn config_flag_beats_config_env() {
    let read = |path: &Path| -> io::Result<String> {
        match path.to_str() {
            Some("flag.conf") => Ok("workers = 11\n".to_string()),
            Some("env.conf") => Ok("workers = 22\n".to_string()),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
        }
    };
    let vars = env(&[("CORRAL_CONFIG", "env.conf")]);
    let got = from_sources(&strings(&["--config=flag.conf"]), &vars, &read).unwrap();
    match got {
        Command::Run(c) => assert_eq!(c.workers, 11),
        other => panic!("{other:?}"),
    }
    let got = from_sources(&[], &vars, &read).unwrap();
    match got {
        Command::Run(c) => assert_eq!(c.workers, 22),
        other => panic!("{other:?}"),
    }
    let err = from_sources(&strings(&["--config", "missing.conf"]), &[], &read).unwrap_err();
    assert!(err.to_string().contains("missing.conf"), "{err}");
}

#[test]
fn both_flag_forms_work() {
    let c = run(
        &["--queue", "9", "--max-headers=50", "--access-log=off"],
        &[],
        None,
    );
    assert_eq!(c.queue, 9);
    assert_eq!(c.max_headers, 50);
    assert_eq!(c.access_log, AccessLogTarget::Off);
    // A value may contain '=' after the first one.
    let c = run(&["--access-log=/tmp/a=b.log"], &[], None);
    assert_eq!(c.access_log, AccessLogTarget::File("/tmp/a=b.log".into()));
}

#[test]
fn listen_accumulates_within_a_source_and_replaces_across() {
    let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let b: SocketAddr = "[::1]:2".parse().unwrap();
    let c: SocketAddr = "0.0.0.0:3".parse().unwrap();
    let file = Some("listen = 127.0.0.1:1\nlisten = [::1]:2\n");
    let conf = [("CORRAL_CONFIG", "corral.conf")];

    assert_eq!(run(&[], &conf, file).listen, vec![a, b]);
    let with_env = [conf[0], ("CORRAL_LISTEN", "0.0.0.0:3, [::1]:2")];
    assert_eq!(run(&[], &with_env, file).listen, vec![c, b]);
    let flags = ["--listen", "0.0.0.0:3", "--listen=127.0.0.1:1"];
    assert_eq!(run(&flags, &with_env, file).listen, vec![c, a]);
    // A flag replaces the default rather than adding to it.
    assert_eq!(run(&["--listen", "[::1]:2"], &[], None).listen, vec![b]);
    // Port 0 may repeat: each asks for a fresh port.
    assert_eq!(
        run(&["--listen", "127.0.0.1:0,127.0.0.1:0"], &[], None)
            .listen
            .len(),
        2
    );
}

#[test]
fn listen_errors() {
    let e = fails(
        &["--listen", "127.0.0.1:1", "--listen", "127.0.0.1:1"],
        &[],
        None,
    );
    assert!(e.contains("listed twice"), "{e}");
    let e = fails(&["--listen", "localhost:80"], &[], None);
    assert!(e.contains("host names are not resolved"), "{e}");
    let e = fails(&["--listen", "127.0.0.1"], &[], None);
    assert!(e.contains("missing port"), "{e}");
    let e = fails(&[], &[("CORRAL_LISTEN", "")], None);
    assert!(e.contains("CORRAL_LISTEN"), "{e}");
    let e = fails(&["--listen", "127.0.0.1:1,,127.0.0.1:2"], &[], None);
    assert!(e.contains("--listen"), "{e}");
}

#[test]
fn unknown_names_are_errors() {
    let e = fails(&["--foo"], &[], None);
    assert_eq!(e, "unknown option --foo (see --help)");
    let e = fails(&["--wokers=8"], &[], None);
    assert_eq!(
        e,
        "unknown option --wokers; did you mean --workers? (see --help)"
    );
    let e = fails(&["-x"], &[], None);
    assert!(e.contains("unknown option -x"), "{e}");
    let e = fails(&["serve"], &[], None);
    assert!(e.contains("unexpected argument \"serve\""), "{e}");

    let e = fails(&[], &[("CORRAL_WOKERS", "8")], None);
    assert!(
        e.contains("CORRAL_WOKERS") && e.contains("did you mean CORRAL_WORKERS?"),
        "{e}"
    );
    let e = fails(&[], &[("CORRAL_CONFG", "x")], None);
    assert!(e.contains("did you mean CORRAL_CONFIG?"), "{e}");
    // Other variables are none of our business.
    run(&[], &[("PATH", "/bin"), ("CORRALX", "1")], None);

    let file = Some("# comment\n\nworkers = 8\nwokers = 8\n");
    let e = fails(&[], &[("CORRAL_CONFIG", "corral.conf")], file);
    assert_eq!(
        e,
        "corral.conf:4: unknown option \"wokers\"; did you mean \"workers\"? (see --help)"
    );
    let e = fails(
        &[],
        &[("CORRAL_CONFIG", "corral.conf")],
        Some("workers 8\n"),
    );
    assert!(e.starts_with("corral.conf:1: expected"), "{e}");
}

#[test]
fn missing_and_unexpected_values() {
    let e = fails(&["--workers"], &[], None);
    assert_eq!(
        e,
        "missing value for --workers; write --workers N or --workers=N"
    );
    let e = fails(&["--workers", "--queue", "5"], &[], None);
    assert!(e.starts_with("missing value for --workers"), "{e}");
    let e = fails(&["--config"], &[], None);
    assert!(e.starts_with("missing value for --config"), "{e}");
    let e = fails(&["--config="], &[], None);
    assert_eq!(e, "invalid value \"\" for --config: expected a file path");
    let e = fails(&[], &[("CORRAL_CONFIG", "")], None);
    assert!(
        e.starts_with("environment CORRAL_CONFIG: invalid value"),
        "{e}"
    );
    let e = fails(&["--help=yes"], &[], None);
    assert!(e.contains("--help takes no value"), "{e}");
    // A single dash is a value, and this one is a bad one.
    let e = fails(&["--workers", "-5"], &[], None);
    assert_eq!(
        e,
        "invalid value \"-5\" for --workers: expected a whole number"
    );
}

#[test]
fn invalid_values_name_their_source() {
    let e = fails(&["--workers", "abc"], &[], None);
    assert_eq!(
        e,
        "invalid value \"abc\" for --workers: expected a whole number"
    );
    let e = fails(&[], &[("CORRAL_IDLE_TIMEOUT", "5x")], None);
    assert!(
        e.starts_with("environment CORRAL_IDLE_TIMEOUT: invalid value \"5x\": unknown unit"),
        "{e}"
    );
    let file = Some("\n\nmax-head-bytes = 100\n");
    let e = fails(&[], &[("CORRAL_CONFIG", "corral.conf")], file);
    assert_eq!(
        e,
        "corral.conf:3: invalid value \"100\" for max-head-bytes: must be at least 256"
    );
    // A bad file value is reported even when a flag overrides it.
    let file = Some("workers = lots\n");
    fails(
        &["--workers", "8"],
        &[("CORRAL_CONFIG", "corral.conf")],
        file,
    );
    let e = fails(&["--workers", "100000"], &[], None);
    assert!(e.contains("at most 10000"), "{e}");
    let e = fails(&["--log-level", "loud"], &[], None);
    assert!(e.contains("expected off, error"), "{e}");
}

#[test]
fn every_timeout_refuses_zero() {
    let timeouts: Vec<&str> = OPTIONS
        .iter()
        .map(|o| o.name)
        .filter(|n| n.ends_with("-timeout"))
        .collect();
    assert_eq!(timeouts.len(), 10);
    for name in timeouts {
        let e = fails(&[&format!("--{name}=0s")], &[], None);
        assert!(e.contains("greater than zero"), "{name}: {e}");
        let e = fails(&[&format!("--{name}=25h")], &[], None);
        assert!(e.contains("at most 24h"), "{name}: {e}");
    }
}

#[test]
fn floors_and_cross_checks() {
    for (flag, value) in [
        ("--workers", "0"),
        ("--queue", "0"),
        ("--max-connections", "0"),
        ("--max-headers", "0"),
        ("--max-head-bytes", "255"),
        // A rate of 0 would make the body deadline infinite.
        ("--min-body-rate", "0"),
    ] {
        fails(&[flag, value], &[], None);
    }
    run(
        &["--min-body-rate", "1", "--body-timeout", "1ms"],
        &[],
        None,
    );
    run(
        &["--max-head-bytes", "256", "--max-body-bytes", "0"],
        &[],
        None,
    );
    let e = fails(&["--park-timeout", "5s", "--idle-timeout", "5s"], &[], None);
    assert!(
        e.contains("park-timeout (5s) must be shorter than idle-timeout (5s)"),
        "{e}"
    );

    let mut c = Config::default();
    c.listen.clear();
    assert!(c.validate().is_err());
    let mut c = Config::default();
    c.listen.push(DEFAULT_LISTEN);
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("listed twice"));
    let c = Config {
        workers: 0,
        ..Config::default()
    };
    assert!(c.validate().is_err());
}

#[test]
fn repeated_single_options_are_errors() {
    let e = fails(&["--workers", "8", "--workers=9"], &[], None);
    assert_eq!(e, "--workers is given twice; give it once");
    let file = Some("queue = 1\nqueue = 2\n");
    let e = fails(&[], &[("CORRAL_CONFIG", "corral.conf")], file);
    assert!(e.starts_with("corral.conf:2: queue is already set"), "{e}");
    fails(&["--config", "a", "--config", "b"], &[], None);
}

#[test]
fn file_comments_and_blank_lines() {
    let file = Some(
        "# full-line comment\n\
         \n\
         \t  # indented comment\n\
         workers = 12   # trailing comment\n\
         access-log = /var/log/a#b.log\n\
         idle-timeout=2s\r\n",
    );
    let c = run(&[], &[("CORRAL_CONFIG", "corral.conf")], file);
    assert_eq!(c.workers, 12);
    assert_eq!(
        c.access_log,
        AccessLogTarget::File("/var/log/a#b.log".into())
    );
    assert_eq!(c.idle_timeout, Duration::from_secs(2));
}

#[test]
fn check_config_output_reads_back_as_the_same_config() {
    let flags = [
        "--check-config",
        "--listen",
        "127.0.0.1:9000,[::1]:9001",
        "--workers=3",
        "--queue=17",
        "--max-connections=99",
        "--header-timeout=1.5s",
        "--idle-timeout=2m",
        "--read-timeout=250ms",
        "--write-timeout=1h",
        "--park-timeout=0.0015s",
        "--defer-accept=0",
        "--shutdown-timeout=7",
        "--max-head-bytes=1000",
        "--max-headers=7",
        "--max-body-bytes=2MB",
        "--access-log=off",
        "--log-level=DEBUG",
    ];
    let config = match load(&flags, &[], None) {
        Ok(Command::CheckConfig(config)) => config,
        other => panic!("expected CheckConfig, got {other:?}"),
    };
    for config in [config.clone(), Config::default()] {
        let text = config.to_config_text();
        let back = run(&["--config", "corral.conf"], &[], Some(&text));
        assert_eq!(back, config, "text was:\n{text}");
    }
    // A log file named like a keyword stays a file.
    let named_stderr = Config {
        access_log: AccessLogTarget::File("stderr".into()),
        ..Config::default()
    };
    let text = named_stderr.to_config_text();
    let back = run(&["--config", "corral.conf"], &[], Some(&text));
    assert_eq!(back.access_log, AccessLogTarget::File("./stderr".into()));
    let text = config.to_config_text();
    for opt in OPTIONS {
        assert!(text.contains(&format!("\n{} = ", opt.name)), "{}", opt.name);
    }
}

#[test]
fn help_mentions_every_option() {
    let help = match load(&["--help"], &[("CORRAL_NOPE", "ignored")], None) {
        Ok(Command::Help(help)) => help,
        other => panic!("expected Help, got {other:?}"),
    };
    for opt in OPTIONS {
        assert!(
            help.contains(&format!("--{} {}", opt.name, opt.value)),
            "{}",
            opt.name
        );
        assert!(help.contains(&env_name(opt)), "{}", opt.name);
        assert!(help.contains(&(opt.help)()), "{}", opt.name);
    }
    for word in [
        "--config",
        "--check-config",
        "--version",
        "CORRAL_CONFIG",
        "Precedence",
    ] {
        assert!(help.contains(word), "{word}");
    }
    assert!(help.contains("[default: 10s]"));
    assert_eq!(load(&["-h"], &[], None).unwrap(), Command::Help(help));
}

#[test]
fn version() {
    let want = Command::Version(format!("corral {}", env!("CARGO_PKG_VERSION")));
    assert_eq!(load(&["--version"], &[], None).unwrap(), want);
    assert_eq!(load(&["-V"], &[], None).unwrap(), want);
}

#[test]
fn env_names_follow_the_rule() {
    let i = find_option("max-body-bytes").unwrap();
    assert_eq!(env_name(&OPTIONS[i]), "CORRAL_MAX_BODY_BYTES");
    let c = run(&[], &[("CORRAL_MAX_BODY_BYTES", "4MiB")], None);
    assert_eq!(c.max_body_bytes, 4 << 20);
}

#[test]
fn limits_summary_is_one_line_with_the_limits() {
    let line = Config::default().limits_summary();
    assert!(!line.contains('\n'));
    for part in [
        "workers=",
        "queue=1024",
        "max-connections=10000",
        "header-timeout=10s",
        "park-timeout=5ms",
        "max-head-bytes=16KiB",
        "max-headers=100",
        "max-body-bytes=1MiB",
    ] {
        assert!(line.contains(part), "{part} missing from {line}");
    }
    assert!(!line.contains("listen"));
}

#[test]
fn option_names_are_unique_and_well_formed() {
    for (i, opt) in OPTIONS.iter().enumerate() {
        assert!(opt
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-'));
        assert!(!META_FLAGS.contains(&opt.name));
        assert!(OPTIONS[i + 1..].iter().all(|o| o.name != opt.name));
    }
}

#[test]
fn proxy_routes_from_every_source() {
    let routes = |c: &Config| crate::proxy::route::format_routes(&c.proxy);
    let c = run(
        &[
            "--proxy",
            "/=127.0.0.1:8000",
            "--proxy=/api=127.0.0.1:1,unix:/run/a.sock",
        ],
        &[],
        None,
    );
    assert_eq!(
        routes(&c),
        "/=127.0.0.1:8000 /api=127.0.0.1:1,unix:/run/a.sock"
    );
    let file = "proxy = /a=127.0.0.1:1\nproxy = /b=127.0.0.1:2 /c=127.0.0.1:3\n";
    let c = run(&["--config", "corral.conf"], &[], Some(file));
    assert_eq!(routes(&c), "/a=127.0.0.1:1 /b=127.0.0.1:2 /c=127.0.0.1:3");
    let c = run(&[], &[("CORRAL_PROXY", "/x=[::1]:9")], Some(file));
    assert_eq!(routes(&c), "/x=[::1]:9");
    let line = fails(&["--proxy", "/a=localhost:80"], &[], None);
    assert!(
        line.contains("--proxy") && line.contains("host names"),
        "{line}"
    );
    let line = fails(
        &["--proxy", "/a=127.0.0.1:1", "--proxy", "/a=127.0.0.1:2"],
        &[],
        None,
    );
    assert!(line.contains("two routes"), "{line}");
}

#[test]
fn proxy_timeout_must_be_below_the_wait_timeout() {
    let line = fails(
        &["--proxy", "/=127.0.0.1:1", "--proxy-timeout", "30s"],
        &[],
        None,
    );
    assert!(line.contains("proxy-timeout"), "{line}");
    // Without routes the proxy's deadline binds nothing.
    run(&["--proxy-timeout", "30s"], &[], None);
    let c = run(
        &[
            "--proxy=/=127.0.0.1:1",
            "--proxy-timeout=1m",
            "--cache-wait-timeout=2m",
        ],
        &[],
        None,
    );
    assert_eq!(c.proxy_config().timeout, Duration::from_secs(60));
    assert_eq!(
        Config::default().proxy_config(),
        crate::proxy::ProxyConfig::default()
    );
}

#[test]
fn trusted_proxies_accumulate_and_none_clears() {
    let block = |s: &str| crate::forwarded::Cidr::parse(s).unwrap();
    assert!(Config::default().trusted_proxies.is_empty());
    let c = run(
        &[
            "--trusted-proxy",
            "10.0.0.0/8, ::1",
            "--trusted-proxy=127.0.0.1",
        ],
        &[],
        None,
    );
    assert_eq!(
        c.trusted_proxies,
        vec![block("10.0.0.0/8"), block("::1"), block("127.0.0.1/32")]
    );
    assert!(c.trusted_proxies().trusts("10.1.2.3".parse().unwrap()));
    // `none` is the empty list, and clears one from a lower source.
    let file = Some("trusted-proxy = 10.0.0.0/8\n");
    let conf = [("CORRAL_CONFIG", "corral.conf")];
    assert_eq!(run(&[], &conf, file).trusted_proxies.len(), 1);
    let none = [conf[0], ("CORRAL_TRUSTED_PROXY", "none")];
    assert!(run(&[], &none, file).trusted_proxies.is_empty());
    // Both print back.
    for config in [c, Config::default()] {
        let text = config.to_config_text();
        assert!(text.contains("\ntrusted-proxy = "), "{text}");
        let back = run(&["--config", "corral.conf"], &[], Some(&text));
        assert_eq!(back, config, "text was:\n{text}");
    }
}

#[test]
fn trusted_proxy_errors() {
    for (value, says) in [
        ("localhost", "not an IP address"),
        ("10.0.0.1/8", "10.0.0.0/8"),
        ("10.0.0.0/40", "at most 32"),
        ("", "not an IP address"),
        ("10.0.0.0/8,,::1", "not an IP address"),
        ("10.0.0.0/8, 10.0.0.0/8", "listed twice"),
        ("none, 10.0.0.0/8", "not an IP address"),
    ] {
        let e = fails(&["--trusted-proxy", value], &[], None);
        assert!(
            e.contains("--trusted-proxy") && e.contains(says),
            "{value:?}: {e}"
        );
    }
}

#[test]
fn drain_delay_is_a_duration_that_may_be_zero() {
    assert_eq!(Config::default().drain_delay, DEFAULT_DRAIN_DELAY);
    let c = run(&["--drain-delay", "5s"], &[], None);
    assert_eq!(c.drain_delay, Duration::from_secs(5));
    assert_eq!(
        run(&["--drain-delay", "0"], &[], None).drain_delay,
        Duration::ZERO
    );
    fails(&["--drain-delay", "2d"], &[], None);
}
