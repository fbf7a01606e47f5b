//! The sources a configuration is read from: the command line, the
//! environment and a config file, merged over `Config::default()`; and the
//! `--help` and `--version` texts. The file is read only through the
//! function the caller passes in.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use super::error::{ConfigError, Origin};
use super::options::{find_option, OptSpec, Set, OPTIONS};
use super::Config;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start the server.
    Run(Config),
    /// Print the effective configuration ([`Config::to_config_text`]) and
    /// exit.
    CheckConfig(Config),
    /// Print this help text and exit.
    Help(String),
    /// Print this version string and exit.
    Version(String),
}

/// Prefix of every environment variable corral reads.
const ENV_PREFIX: &str = "CORRAL_";
/// The environment variable naming a config file.
const ENV_CONFIG: &str = "CORRAL_CONFIG";
/// Flags that steer `from_sources` itself and take no value.
const BARE_FLAGS: &[&str] = &["check-config", "help", "version"];
/// Every flag that is not an option, for typo suggestions.
pub(super) const META_FLAGS: &[&str] = &["config", "check-config", "help", "version"];

/// `CORRAL_` followed by the name uppercased, `-` turned into `_`.
pub(super) fn env_name(opt: &OptSpec) -> String {
    format!(
        "{ENV_PREFIX}{}",
        opt.name.to_ascii_uppercase().replace('-', "_")
    )
}

/// One `name = value` from some source, not yet applied.
struct Assignment {
    /// Index into `OPTIONS`.
    option: usize,
    value: String,
    origin: Origin,
}

/// What the command line said, before any value is applied.
struct Args {
    assignments: Vec<Assignment>,
    config_file: Option<String>,
    check_config: bool,
}

/// Builds the configuration from the command line (without `argv[0]`), the
/// environment and the config file, which is read through `read_file` so
/// that this module never opens files itself.
///
/// Precedence is flag > environment > file > default. `--help` and
/// `--version` return at once, before the environment or any file is looked
/// at; errors in arguments before them are still reported. A flag's value
/// may not start with `--` (`--workers --queue 8` is a missing value); write
/// `--name=--odd-value` for that.
///
/// `main` should collect `args` and `env` with `std::env::args_os` and
/// `std::env::vars_os`: the plain versions panic on a value that is not
/// UTF-8, where a clear error belongs.
pub fn from_sources(
    args: &[String],
    env: &[(String, String)],
    read_file: &dyn Fn(&Path) -> io::Result<String>,
) -> Result<Command, ConfigError> {
    let args = match parse_args(args)? {
        CommandLine::Options(args) => args,
        CommandLine::Print(command) => return Ok(*command),
    };
    let (env_assignments, env_config_file) = parse_env(env)?;
    let file_assignments = match args.config_file.or(env_config_file) {
        Some(path) => {
            let path = PathBuf::from(path);
            let text = read_file(&path).map_err(|error| ConfigError::ReadFile {
                path: path.clone(),
                error,
            })?;
            parse_file(&path, &text)?
        }
        None => Vec::new(),
    };

    let mut config = Config::default();
    apply(&mut config, &file_assignments)?;
    apply(&mut config, &env_assignments)?;
    apply(&mut config, &args.assignments)?;
    config.validate()?;
    Ok(if args.check_config {
        Command::CheckConfig(config)
    } else {
        Command::Run(config)
    })
}

/// Applies one source's assignments on top of `config`.
fn apply(config: &mut Config, assignments: &[Assignment]) -> Result<(), ConfigError> {
    let mut seen = vec![false; OPTIONS.len()];
    for a in assignments {
        let opt = &OPTIONS[a.option];
        let first = !seen[a.option];
        seen[a.option] = true;
        if !first && matches!(opt.set, Set::One(_)) {
            return Err(ConfigError::Repeated {
                option: opt.name,
                origin: a.origin.clone(),
            });
        }
        opt.set
            .apply(config, &a.value, first)
            .map_err(|reason| ConfigError::InvalidValue {
                option: opt.name,
                origin: a.origin.clone(),
                value: a.value.clone(),
                reason,
            })?;
    }
    Ok(())
}

/// What the command line asks for.
enum CommandLine {
    /// Run or check a configuration built from these options.
    Options(Args),
    /// `--help` or `--version`: print and exit, nothing else matters.
    Print(Box<Command>),
}

/// Reads the command line.
fn parse_args(args: &[String]) -> Result<CommandLine, ConfigError> {
    let mut parsed = Args {
        assignments: Vec::new(),
        config_file: None,
        check_config: false,
    };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(CommandLine::Print(Box::new(Command::Help(help_text())))),
            "-V" | "--version" => {
                return Ok(CommandLine::Print(Box::new(Command::Version(
                    version_text(),
                ))))
            }
            "--check-config" => {
                parsed.check_config = true;
                continue;
            }
            _ => {}
        }
        let Some(body) = arg.strip_prefix("--") else {
            if arg.starts_with('-') {
                return Err(ConfigError::UnknownFlag {
                    flag: arg.clone(),
                    suggestion: None,
                });
            }
            return Err(ConfigError::UnexpectedArgument(arg.clone()));
        };
        let (name, inline_value) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        if let Some(&flag) = BARE_FLAGS.iter().find(|&&bare| bare == name) {
            // Only `--help=x` and the like get here; the bare forms matched above.
            return Err(ConfigError::UnexpectedValue { flag });
        }
        let (option, flag, placeholder) = if name == "config" {
            (None, "config", "FILE")
        } else {
            let index = find_option(name).ok_or_else(|| ConfigError::UnknownFlag {
                flag: format!("--{name}"),
                suggestion: suggest(name, META_FLAGS),
            })?;
            (Some(index), OPTIONS[index].name, OPTIONS[index].value)
        };
        let value = match inline_value {
            Some(value) => value.to_string(),
            None => match rest.next() {
                Some(value) if !value.starts_with("--") => value.clone(),
                _ => {
                    return Err(ConfigError::MissingValue {
                        flag,
                        value: placeholder,
                    })
                }
            },
        };
        match option {
            Some(option) => parsed.assignments.push(Assignment {
                option,
                value,
                origin: Origin::Flag,
            }),
            None if parsed.config_file.is_some() => {
                return Err(ConfigError::Repeated {
                    option: "config",
                    origin: Origin::Flag,
                })
            }
            None => parsed.config_file = Some(config_path(value, Origin::Flag)?),
        }
    }
    Ok(CommandLine::Options(parsed))
}

/// A config file path as given, which must not be empty.
fn config_path(value: String, origin: Origin) -> Result<String, ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::InvalidValue {
            option: "config",
            origin,
            value,
            reason: "expected a file path".to_string(),
        });
    }
    Ok(value)
}

/// Reads the `CORRAL_*` variables: the assignments, and the config file
/// `CORRAL_CONFIG` names, if any. Other variables are ignored.
fn parse_env(env: &[(String, String)]) -> Result<(Vec<Assignment>, Option<String>), ConfigError> {
    let mut assignments = Vec::new();
    let mut config_file = None;
    for (var, value) in env {
        if !var.starts_with(ENV_PREFIX) {
            continue;
        }
        if var == ENV_CONFIG {
            let path = config_path(value.clone(), Origin::Env(var.clone()))?;
            if config_file.replace(path).is_some() {
                return Err(ConfigError::Repeated {
                    option: "config",
                    origin: Origin::Env(var.clone()),
                });
            }
            continue;
        }
        let Some(option) = OPTIONS.iter().position(|opt| env_name(opt) == *var) else {
            let as_name = var[ENV_PREFIX.len()..]
                .to_ascii_lowercase()
                .replace('_', "-");
            let suggestion = suggest(&as_name, &["config"]).map(|name| match find_option(name) {
                Some(i) => env_name(&OPTIONS[i]),
                None => ENV_CONFIG.to_string(),
            });
            return Err(ConfigError::UnknownEnv {
                var: var.clone(),
                suggestion,
            });
        };
        assignments.push(Assignment {
            option,
            value: value.clone(),
            origin: Origin::Env(var.clone()),
        });
    }
    Ok((assignments, config_file))
}

/// Reads a config file: `name = value` lines, `#` comments (a whole line, or
/// the rest of a line after whitespace), blank lines.
fn parse_file(path: &Path, text: &str) -> Result<Vec<Assignment>, ConfigError> {
    let mut assignments = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = strip_comment(raw).trim();
        if content.is_empty() {
            continue;
        }
        let Some((key, value)) = content.split_once('=') else {
            return Err(ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
            });
        };
        let key = key.trim();
        let option = find_option(key).ok_or_else(|| ConfigError::UnknownKey {
            path: path.to_path_buf(),
            line,
            key: key.to_string(),
            suggestion: suggest(key, &[]),
        })?;
        assignments.push(Assignment {
            option,
            value: value.trim().to_string(),
            origin: Origin::File {
                path: path.to_path_buf(),
                line,
            },
        });
    }
    Ok(assignments)
}

/// `line` without its comment: a `#` at the start or after whitespace
/// begins one, so a path like `/var/log/a#b` survives.
fn strip_comment(line: &str) -> &str {
    let mut after_space = true;
    for (i, c) in line.char_indices() {
        if c == '#' && after_space {
            return &line[..i];
        }
        after_space = c.is_whitespace();
    }
    line
}

/// The option (or one of `extra`) closest to `name`, if it is close enough
/// to be a typo of it.
fn suggest(name: &str, extra: &[&'static str]) -> Option<&'static str> {
    OPTIONS
        .iter()
        .map(|opt| opt.name)
        .chain(extra.iter().copied())
        .map(|candidate| (edit_distance(name, candidate), candidate))
        .filter(|&(distance, _)| distance <= 2)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, in chars. One string is always an option name, so
/// the cost is linear in the other.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

// ---------------------------------------------------------------------------
// Help and version.

/// `corral <version>`.
pub fn version_text() -> String {
    format!("corral {}", env!("CARGO_PKG_VERSION"))
}

/// The `--help` text: every option with its placeholder, help, environment
/// variable and default on this machine, then how the sources combine.
pub fn help_text() -> String {
    let defaults = Config::default();
    let mut out = format!(
        "{}\nA hardened synchronous HTTP/1.1 server.\n\nUsage: corral [OPTIONS]\n\nOptions:\n",
        version_text()
    );
    for opt in OPTIONS {
        let _ = writeln!(out, "  --{} {}", opt.name, opt.value);
        let _ = writeln!(out, "        {}", (opt.help)());
        let _ = writeln!(
            out,
            "        [default: {}] [env: {}]",
            (opt.show)(&defaults),
            env_name(opt)
        );
    }
    out.push_str(
        "  --config FILE
        read options from FILE [env: CORRAL_CONFIG]
  --check-config
        print the effective configuration as a config file and exit
  -h, --help
        print this help and exit
  -V, --version
        print the version and exit

Every option can also be set in the environment as CORRAL_ and its name in
capitals with - as _ (CORRAL_MAX_BODY_BYTES=4MiB), or in the config file as a
\"name = value\" line (max-body-bytes = 4MiB); # starts a comment, and listen
may be repeated. Precedence: flags, then environment, then config file, then
defaults. An unknown option or CORRAL_* variable is an error.

Durations: 500ms, 10s, 1.5s, 2m, 1h; a bare number is seconds.
Sizes: 512, 16KiB, 1MiB, 1GiB (powers of 1024) or 16KB, 1MB, 1GB (of 1000).
",
    );
    out
}
