//! Why a configuration could not be built, and where the bad value came
//! from. Every message is one line that names the option and its source.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The command line.
    Flag,
    /// The environment variable with this name.
    Env(String),
    /// A line of a config file, counting from 1.
    File {
        /// The file as it was named.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
    },
}

/// Why the configuration could not be built. `Display` is one line that
/// names the option and its source and says what to do; `main` prints it and
/// exits with status 2.
#[derive(Debug)]
pub enum ConfigError {
    /// A flag that names no option.
    UnknownFlag {
        /// The argument as given.
        flag: String,
        /// A known flag it may be a typo of, without `--`.
        suggestion: Option<&'static str>,
    },
    /// A `CORRAL_*` environment variable that names no option.
    UnknownEnv {
        /// The variable's name.
        var: String,
        /// A known variable it may be a typo of.
        suggestion: Option<String>,
    },
    /// A config file key that names no option.
    UnknownKey {
        /// The file as it was named.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// The key as written.
        key: String,
        /// A known key it may be a typo of.
        suggestion: Option<&'static str>,
    },
    /// A command-line argument that is not a flag; corral takes none.
    UnexpectedArgument(String),
    /// A flag that needs a value came last, or was followed by another flag.
    MissingValue {
        /// The flag, without `--`.
        flag: &'static str,
        /// The placeholder from the help text.
        value: &'static str,
    },
    /// A flag that takes no value was given one with `=`.
    UnexpectedValue {
        /// The flag, without `--`.
        flag: &'static str,
    },
    /// A config file line that is not `name = value`.
    Syntax {
        /// The file as it was named.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
    },
    /// A single-valued option given twice in one source.
    Repeated {
        /// The option's name.
        option: &'static str,
        /// Where the second occurrence is.
        origin: Origin,
    },
    /// A value the option does not accept.
    InvalidValue {
        /// The option's name.
        option: &'static str,
        /// Where the value came from.
        origin: Origin,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The config file could not be read.
    ReadFile {
        /// The file as it was named.
        path: PathBuf,
        /// What went wrong.
        error: io::Error,
    },
    /// The merged configuration breaks a rule ([`Config::validate`](super::Config::validate)).
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::UnknownFlag { flag, suggestion } => {
                write!(f, "unknown option {flag}")?;
                if let Some(name) = suggestion {
                    write!(f, "; did you mean --{name}?")?;
                }
                write!(f, " (see --help)")
            }
            ConfigError::UnknownEnv { var, suggestion } => {
                write!(f, "unknown environment variable {var}")?;
                if let Some(name) = suggestion {
                    write!(f, "; did you mean {name}?")?;
                }
                write!(f, " (fix or unset it; --help lists the CORRAL_* names)")
            }
            ConfigError::UnknownKey {
                path,
                line,
                key,
                suggestion,
            } => {
                write!(f, "{}:{line}: unknown option {key:?}", path.display())?;
                if let Some(name) = suggestion {
                    write!(f, "; did you mean {name:?}?")?;
                }
                write!(f, " (see --help)")
            }
            ConfigError::UnexpectedArgument(arg) => write!(
                f,
                "unexpected argument {arg:?}: corral takes only --options (see --help)"
            ),
            ConfigError::MissingValue { flag, value } => {
                write!(
                    f,
                    "missing value for --{flag}; write --{flag} {value} or --{flag}={value}"
                )
            }
            ConfigError::UnexpectedValue { flag } => {
                write!(f, "--{flag} takes no value; write it alone")
            }
            ConfigError::Syntax { path, line } => write!(
                f,
                "{}:{line}: expected \"name = value\", a # comment or a blank line",
                path.display()
            ),
            ConfigError::Repeated { option, origin } => match origin {
                Origin::Flag => write!(f, "--{option} is given twice; give it once"),
                Origin::Env(var) => write!(f, "environment {var} is given twice"),
                Origin::File { path, line } => write!(
                    f,
                    "{}:{line}: {option} is already set earlier in this file; keep one",
                    path.display()
                ),
            },
            ConfigError::InvalidValue {
                option,
                origin,
                value,
                reason,
            } => match origin {
                Origin::Flag => write!(f, "invalid value {value:?} for --{option}: {reason}"),
                Origin::Env(var) => {
                    write!(f, "environment {var}: invalid value {value:?}: {reason}")
                }
                Origin::File { path, line } => write!(
                    f,
                    "{}:{line}: invalid value {value:?} for {option}: {reason}",
                    path.display()
                ),
            },
            ConfigError::ReadFile { path, error } => {
                write!(f, "cannot read config file {}: {error}", path.display())
            }
            ConfigError::Invalid(message) => write!(f, "invalid configuration: {message}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::ReadFile { error, .. } => Some(error),
            _ => None,
        }
    }
}
