//! The `corral` binary: turns arguments, environment and a config file into
//! a [`Config`], adopts sockets passed by systemd, sets up logging and
//! signals, runs the server, and maps the result to an exit code. No HTTP
//! here.
//!
//! Signals: SIGTERM and SIGINT drain and exit (a second SIGINT exits at
//! once): `/healthz` answers 503 at once, the listeners close after
//! `--drain-delay`; SIGHUP reopens the access log file, for logrotate, and
//! logs a status line.
//!
//! Debug builds, and builds with the `test-hooks` feature, also take the
//! flags of the test hooks (see [`hooks`]); a plain release build does not.

use std::process::ExitCode;

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use corral::access::AccessLog;
use corral::allocator::{self, Tuning};
use corral::app::admin::{self, AdminState};
use corral::app::{self, AppLimits};
use corral::cached::{self, ResponseCache};
use corral::config::{self, AccessLogTarget, Command, Config};
use corral::metrics::Metrics;
use corral::notify::{self, Notifier};
use corral::proxy::Proxy;
use corral::server::Server;
use hooks::Hooks;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

fn main() -> ExitCode {
    let mut args: Vec<String> = match std::env::args_os()
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
    let hooks = match Hooks::take(&mut args) {
        Ok(hooks) => hooks,
        Err(e) => {
            eprintln!("corral: {e}");
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
    match run(config, hooks) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("corral: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config, hooks: Hooks) -> Result<ExitCode, Box<dyn std::error::Error>> {
    // First: this must run while ours is the only thread, and before
    // anything opens a file (the passed sockets are descriptors 3 and up).
    let activated = notify::take_listen_fds()?;
    // Before the first large buffer: the memory bound depends on it.
    let allocator = allocator::return_large_buffers();
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
    match allocator {
        Tuning::Fixed | Tuning::NotGlibc => {}
        Tuning::LeftToTunables => log::info!(
            "GLIBC_TUNABLES sets malloc's mmap threshold; README's memory bound assumes {} KiB",
            allocator::MMAP_THRESHOLD_BYTES / 1024
        ),
        Tuning::Refused => log::warn!(
            "malloc refused a fixed mmap threshold: freed large buffers may stay in the \
             process, above README's memory bound"
        ),
    }

    let access_log = match &config.access_log {
        AccessLogTarget::Off => None,
        AccessLogTarget::Stderr => Some(Arc::new(AccessLog::stderr())),
        AccessLogTarget::File(path) => {
            Some(Arc::new(AccessLog::file(path).map_err(|e| {
                format!("cannot open access log {}: {e}", path.display())
            })?))
        }
    };
    let log_file = match &config.access_log {
        AccessLogTarget::File(path) => Some(path.clone()),
        _ => None,
    };
    let started = Instant::now();
    cached::configure(config.cache_config());
    let cache = cached::GLOBAL.clone();
    // Set by SIGTERM (the server's shutdown flag), read by /healthz.
    let draining = Arc::new(AtomicBool::new(false));
    let app = hooks.routes(app::router_with_drain(
        cache.clone(),
        AppLimits::from(&config),
        draining.clone(),
    ));
    let routes = app.stats();
    let admin_listen = config.admin_listen;
    let workers = config.workers;

    // Passed sockets replace --listen and --admin-listen for their role:
    // one named "admin" is the operator's listener, any other is public.
    let (mut admin_fds, public_fds): (Vec<_>, Vec<_>) =
        activated.into_iter().partition(|a| a.name == "admin");
    if admin_fds.len() > 1 {
        return Err("systemd passed more than one socket named \"admin\"".into());
    }
    let admin_fd = admin_fds.pop();
    if !public_fds.is_empty() || admin_fd.is_some() {
        let names: Vec<String> = public_fds
            .iter()
            .chain(&admin_fd)
            .map(|a| match a.listener.local_addr() {
                Ok(addr) => format!("{} {addr}", a.name),
                Err(_) => a.name.clone(),
            })
            .collect();
        log::info!(
            "socket activation: serving on {} passed by systemd{}{}",
            names.join(", "),
            if public_fds.is_empty() {
                ""
            } else {
                "; --listen ignored"
            },
            if admin_fd.is_some() {
                "; --admin-listen ignored"
            } else {
                ""
            },
        );
    }
    // The proxy answers its routes' paths and hands the rest to the app
    // (all of them when there are no routes).
    let public = Proxy::new(&config, cache.clone(), app);
    let upstreams = public.upstream_stats();
    let server = if public_fds.is_empty() {
        Server::bind(config, public)?
    } else {
        let listeners = public_fds.into_iter().map(|a| a.listener).collect();
        Server::from_listeners(listeners, config, public)?
    };
    let mut server = server.with_shutdown_flag(draining.clone());
    let admin_listener = match (admin_fd, admin_listen) {
        (Some(passed), _) => Some(passed.listener),
        (None, Some(addr)) => {
            Some(TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?)
        }
        (None, None) => None,
    };
    if let Some(listener) = admin_listener {
        let admin = admin::router(AdminState {
            metrics: server.metrics(),
            cache: cache.clone(),
            routes,
            started,
            workers,
            upstreams,
            draining,
        });
        let addr = server.add_listener(listener, admin)?;
        log::info!("operator endpoints (/metrics, /status, /cache/purge) on {addr}");
    }
    if let Some(log) = &access_log {
        server = server.with_access_log(log.clone());
    }
    hooks.attach(&server);
    let status = {
        let metrics = server.metrics();
        let cache = cache.clone();
        move || status_line(&metrics, &cache, workers)
    };
    server = server.with_notifier(Notifier::from_env(), status.clone());

    let mut hangups = signal_hook::iterator::Signals::new([SIGHUP])?;
    std::thread::Builder::new()
        .name("corral-signals".into())
        .spawn(move || {
            for _ in hangups.forever() {
                hangup(access_log.as_deref(), log_file.as_ref(), &status());
            }
        })?;
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

/// SIGHUP: reopen the access log file (logrotate has moved it) and log a
/// status line.
fn hangup(log: Option<&AccessLog>, file: Option<&PathBuf>, status: &str) {
    let what = match (log, file) {
        (Some(log), Some(path)) => match log.reopen() {
            Ok(()) => format!("reopened access log {}", path.display()),
            Err(e) => {
                log::error!("SIGHUP: cannot reopen access log {}: {e}", path.display());
                format!("kept the old access log {}", path.display())
            }
        },
        _ => "no access log file to reopen".to_owned(),
    };
    log::info!("SIGHUP: {what}; {status}");
}

/// The one-line summary for `STATUS=` and SIGHUP.
fn status_line(m: &Metrics, cache: &ResponseCache, workers: usize) -> String {
    let cached = cache.stats();
    let lane = cache.lane();
    format!(
        "{} requests; {} connections open ({} parked, {} queued); {}/{workers} workers busy; \
         {} waiting; compute {}/{} busy, {} queued; cache {} entries, {:.1}MiB",
        m.requests.load(Relaxed),
        m.connections_open.load(Relaxed),
        m.connections_parked.load(Relaxed),
        m.connections_queued.load(Relaxed),
        m.workers_busy.load(Relaxed),
        m.requests_waiting.load(Relaxed),
        lane.busy(),
        lane.threads(),
        lane.queued(),
        cached.entries,
        cached.bytes as f64 / f64::from(1 << 20),
    )
}

/// Test hooks: compiled into debug builds (so `cargo test` has them) and
/// into builds with the `test-hooks` feature, never into a plain release
/// build. There the flags are unknown options like any other, and the
/// binary has no route that hangs it.
#[cfg(any(debug_assertions, feature = "test-hooks"))]
mod hooks {
    use std::sync::{Arc, OnceLock};

    use corral::notify::{Component, Health};
    use corral::server::Server;
    use corral::{Request, Response, Router};

    /// `--x-wedge=pool|parker|acceptor` adds a route, `GET /x-wedge`, that
    /// hangs that part of the server the way a deadlock would, so the tests
    /// can watch the systemd watchdog pings stop. It is taken off the
    /// command line before the options are parsed, so `--help`, the config
    /// file and the environment never know it.
    const WEDGE_FLAG: &str = "--x-wedge=";

    /// The hooks the command line asked for.
    pub struct Hooks {
        wedge: Option<Component>,
        /// Filled by [`Hooks::attach`]: the route exists before the server.
        health: Arc<OnceLock<Arc<Health>>>,
    }

    impl Hooks {
        /// Takes the hooks' flags out of `args`.
        pub fn take(args: &mut Vec<String>) -> Result<Hooks, String> {
            let mut wedge = None;
            if let Some(i) = args.iter().position(|a| a.starts_with(WEDGE_FLAG)) {
                wedge = Some(match &args.remove(i)[WEDGE_FLAG.len()..] {
                    "pool" => Component::Pool,
                    "parker" => Component::Parker,
                    "acceptor" => Component::Acceptor,
                    other => {
                        return Err(format!(
                            "{WEDGE_FLAG}{other}: expected pool, parker or acceptor"
                        ))
                    }
                });
            }
            Ok(Hooks {
                wedge,
                health: Arc::default(),
            })
        }

        /// `app` with the hooks' routes added.
        pub fn routes(&self, app: Router) -> Router {
            match self.wedge {
                Some(c) => app.get("/x-wedge", wedge_route(c, self.health.clone())),
                None => app,
            }
        }

        /// Hands the routes the server they act on.
        pub fn attach(&self, server: &Server) {
            let _ = self.health.set(server.health());
        }
    }

    /// The route behind `--x-wedge` (see [`WEDGE_FLAG`]). For the pool, the
    /// handler itself never returns, so each request takes one worker for
    /// good and, once all are taken, queued work ages. For the acceptor and
    /// the parker it tells that thread to hang at its next loop turn.
    fn wedge_route(
        c: Component,
        health: Arc<OnceLock<Arc<Health>>>,
    ) -> impl Fn(&mut Request) -> Response + Send + Sync + 'static {
        move |_: &mut Request| {
            if c == Component::Pool {
                log::warn!("test hook: a worker hangs now");
                loop {
                    std::thread::park();
                }
            }
            if let Some(health) = health.get() {
                health.wedge(c);
            }
            Response::text(200, format!("wedging the {c}\n"))
        }
    }
}

/// A plain release build: no hooks, so no flags to take and no routes.
#[cfg(not(any(debug_assertions, feature = "test-hooks")))]
mod hooks {
    use corral::server::Server;
    use corral::Router;

    /// No hooks.
    pub struct Hooks;

    impl Hooks {
        /// Takes nothing: every argument is left for the option parser.
        pub fn take(_args: &mut Vec<String>) -> Result<Hooks, String> {
            Ok(Hooks)
        }

        /// `app` unchanged.
        pub fn routes(&self, app: Router) -> Router {
            app
        }

        /// Nothing to attach.
        pub fn attach(&self, _server: &Server) {}
    }
}
