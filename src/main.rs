//! The `corral` binary: turns arguments, environment and a config file into
//! a [`Config`], sets up logging and signals, runs the server, and maps the
//! result to an exit code. No HTTP here.

use std::process::ExitCode;

use std::net::TcpListener;
use std::time::Instant;

use corral::access::AccessLog;
use corral::admin::{self, AdminState};
use corral::app::{self, AppLimits};
use corral::cached;
use corral::config::{self, AccessLogTarget, Command, Config};
use corral::server::Server;
use signal_hook::consts::{SIGINT, SIGTERM};

fn main() -> ExitCode {
    let args: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect()
    {
        Ok(args) => args,
        Err(bad) => {
            eprintln!("corral: argument {bad:?} is not valid UTF-8");
            return ExitCode::from(2);
        }
    };
    // Variables of other programs may hold any bytes; only ours must be text.
    let mut env: Vec<(String, String)> = Vec::new();
    for (name, value) in std::env::vars_os() {
        match (name.into_string(), value.into_string()) {
            (Ok(n), Ok(v)) => env.push((n, v)),
            (Ok(n), Err(_)) if n.starts_with("CORRAL_") => {
                eprintln!("corral: environment {n} is not valid UTF-8");
                return ExitCode::from(2);
            }
            _ => {}
        }
    }
    let command = match config::from_sources(&args, &env, &|p| std::fs::read_to_string(p)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("corral: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match command {
        Command::Help(text) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Command::Version(text) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Command::CheckConfig(config) => {
            print!("{}", config.to_config_text());
            return ExitCode::SUCCESS;
        }
        Command::Run(config) => config,
    };
    match run(config) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("corral: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> Result<ExitCode, Box<dyn std::error::Error>> {
    simplelog::TermLogger::init(
        config.log_level,
        simplelog::ConfigBuilder::new()
            .set_time_format_rfc3339()
            .set_thread_level(log::LevelFilter::Off)
            .set_target_level(log::LevelFilter::Off)
            .build(),
        simplelog::TerminalMode::Stderr,
        simplelog::ColorChoice::Never,
    )?;
    // A handler panic is caught and logged by the connection loop; the
    // default hook would print it a second time, unformatted.
    std::panic::set_hook(Box::new(|info| log::debug!("{info}")));

    let access_log = match &config.access_log {
        AccessLogTarget::Off => None,
        AccessLogTarget::Stderr => Some(AccessLog::stderr()),
        AccessLogTarget::File(path) => Some(
            AccessLog::file(path)
                .map_err(|e| format!("cannot open access log {}: {e}", path.display()))?,
        ),
    };
    let started = Instant::now();
    cached::configure(config.cache_config());
    let cache = cached::GLOBAL.clone();
    let app = app::router(cache.clone(), AppLimits::from(&config));
    let routes = app.stats();
    let admin_listen = config.admin_listen;
    let workers = config.workers;
    let mut server = Server::bind(config, app)?;
    if let Some(addr) = admin_listen {
        let listener =
            TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let admin = admin::router(AdminState {
            metrics: server.metrics(),
            cache,
            routes,
            started,
            workers,
        });
        let addr = server.add_listener(listener, admin)?;
        log::info!("operator endpoints (/metrics, /status, /cache/purge) on {addr}");
    }
    if let Some(log) = access_log {
        server = server.with_access_log(log);
    }
    let handle = server.shutdown_handle();
    // A second SIGINT exits at once: registered first, it sees the flag the
    // first one set.
    signal_hook::flag::register_conditional_shutdown(SIGINT, 1, handle.flag())?;
    for sig in [SIGTERM, SIGINT] {
        signal_hook::flag::register(sig, handle.flag())?;
        signal_hook::low_level::pipe::register(sig, handle.waker()?)?;
    }
    let report = server.run()?;
    Ok(if report.abandoned == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
