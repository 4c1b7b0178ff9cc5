//! Settings from the environment or flags, validated once at start so a mistake is reported
//! in one clear sentence before anything listens.

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

/// The `colloquy` command line.
#[derive(Debug, Parser)]
#[command(
    name = "colloquy",
    version,
    about = "Backend for an embeddable customer-support chat widget"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
// Parsed once at start: the size of the `serve` variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Migrate the database, then serve HTTP until SIGINT/SIGTERM.
    Serve(ServeArgs),
    /// Apply the SQL migrations in sql/ and exit.
    Migrate(DatabaseArgs),
    /// Manage teams (tenants).
    #[command(subcommand)]
    Team(TeamCommand),
}

/// Team subcommands.
#[derive(Debug, Subcommand)]
pub enum TeamCommand {
    /// Create a team and print it as JSON (its secret key is shown only now).
    Create {
        /// The team's name.
        #[arg(long)]
        name: String,
        /// Print the existing team of that name instead of creating a second one.
        #[arg(long)]
        if_not_exists: bool,
        /// Database settings.
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

/// Where the database is.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/colloquy
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Connections in the pool for writes; ~8 is best on 2 cores (more only adds contention).
    /// Reads use one connection per worker thread besides these (`store/readers.rs`).
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 8)]
    pub database_pool_size: usize,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `serve` settings.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Bearer token for the administration API (POST /api/teams, /api/ops/…); unset disables it.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Comma-separated proxy IPs/CIDRs whose X-Forwarded-For is believed.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// HTTP worker threads (default: one per CPU core).
    #[arg(long, env = "WORKERS")]
    pub workers: Option<usize>,
    /// Outgoing mail server, `smtp://host:port`; unset keeps mails in the outbox table.
    #[arg(long, env = "SMTP_URL")]
    pub smtp_url: Option<String>,
    /// The From address of outgoing mail.
    #[arg(
        long,
        env = "MAIL_FROM",
        default_value = "colloquy <noreply@localhost.localdomain>"
    )]
    pub mail_from: String,
    /// How this node learns what other nodes changed: `off` (one node) or `postgres`
    /// (LISTEN/NOTIFY on the shared database; set it on every node of a cluster).
    #[arg(long, env = "CHANGE_FEED", value_enum, default_value_t = crate::cluster::ChangeFeed::Off)]
    pub change_feed: crate::cluster::ChangeFeed,
    /// Redis 7 (`redis://host:port`) shared by the nodes of a cluster, so budgets and spam
    /// windows count across nodes; unset, each node counts alone.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// What this cluster's Redis keys start with, so several clusters can share one Redis.
    #[arg(long, env = "REDIS_PREFIX", default_value = "colloquy:")]
    pub redis_prefix: String,
    /// Most rate-limit keys (visitors, IPs, sessions) one team's limiter remembers; beyond it
    /// the oldest are forgotten, so a flood of made-up keys costs memory, never admission.
    #[arg(long, env = "RATE_LIMIT_KEYS_PER_TEAM", default_value_t = KeyTables::default().rate_limit_keys_per_team)]
    pub rate_limit_keys_per_team: usize,
    /// Most keys each of the suspicion detector's windows remembers (oldest forgotten first).
    #[arg(long, env = "SUSPICION_MAX_KEYS", default_value_t = KeyTables::default().suspicion_keys)]
    pub suspicion_max_keys: usize,
    /// Bounds on Server-Sent Event streams.
    #[command(flatten)]
    pub streams: StreamArgs,
}

/// Bounds on Server-Sent Event streams: each open stream holds a connection, a subscription
/// and memory for as long as it lives, so one client, one tenant or everyone together may
/// only hold so many, and none forever.
#[derive(Debug, Clone, Args)]
pub struct StreamArgs {
    /// Open SSE streams per client IP (an IPv6 address counts by its /64); more answer `429`.
    #[arg(long, env = "STREAMS_PER_IP", default_value_t = 100)]
    pub streams_per_ip: usize,
    /// Open SSE streams per team; more answer `429`.
    #[arg(long, env = "STREAMS_PER_TEAM", default_value_t = 5_000)]
    pub streams_per_team: usize,
    /// Open SSE streams in this process; more answer `429`.
    #[arg(long, env = "STREAMS_TOTAL", default_value_t = 20_000)]
    pub streams_total: usize,
    /// Seconds an SSE stream lives at most (less up to a tenth, at random, so streams opened
    /// together end apart); then the client reconnects with `Last-Event-ID`, losing nothing.
    #[arg(long, env = "STREAM_MAX_LIFETIME", default_value_t = 600)]
    pub stream_max_lifetime: u64,
}

/// Validated SSE stream bounds (see [`StreamArgs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// Open streams per client IP (IPv6: per /64).
    pub per_ip: usize,
    /// Open streams per team.
    pub per_team: usize,
    /// Open streams in the process.
    pub total: usize,
    /// How long one stream lives.
    pub max_lifetime: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            per_ip: 100,
            per_team: 5_000,
            total: 20_000,
            max_lifetime: Duration::from_secs(600),
        }
    }
}

impl StreamSettings {
    /// Validates the bounds, naming the setting that is wrong.
    pub fn from_args(args: &StreamArgs) -> anyhow::Result<Self> {
        for (name, value) in [
            ("STREAMS_PER_IP", args.streams_per_ip),
            ("STREAMS_PER_TEAM", args.streams_per_team),
            ("STREAMS_TOTAL", args.streams_total),
        ] {
            if !(1..=1_000_000).contains(&value) {
                bail!("{name} must be between 1 and 1000000");
            }
        }
        if !(1..=86_400).contains(&args.stream_max_lifetime) {
            bail!("STREAM_MAX_LIFETIME must be between 1 and 86400 seconds");
        }
        Ok(Self {
            per_ip: args.streams_per_ip,
            per_team: args.streams_per_team,
            total: args.streams_total,
            max_lifetime: Duration::from_secs(args.stream_max_lifetime),
        })
    }
}

/// Validated database settings.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// Parsed connection settings.
    pub config: tokio_postgres::Config,
    /// Pool size.
    pub pool_size: usize,
}

impl DatabaseSettings {
    /// Validates the URL and pool size.
    pub fn from_args(args: &DatabaseArgs) -> anyhow::Result<Self> {
        let config = tokio_postgres::Config::from_str(&args.database_url).with_context(|| {
            "DATABASE_URL is not a valid PostgreSQL URL (expected postgres://user@host:port/dbname)"
        })?;
        if config.get_dbname().is_none() {
            bail!("DATABASE_URL must name a database, e.g. postgres://postgres@127.0.0.1:5432/colloquy");
        }
        if !(1..=256).contains(&args.database_pool_size) {
            bail!("DATABASE_POOL_SIZE must be between 1 and 256");
        }
        Ok(Self {
            config,
            pool_size: args.database_pool_size,
        })
    }
}

/// Validated `serve` settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Database.
    pub database: DatabaseSettings,
    /// Listen address.
    pub bind: SocketAddr,
    /// Admin bearer token, if the admin API is enabled.
    pub admin_token: Option<String>,
    /// Proxies whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Log format.
    pub log_format: LogFormat,
    /// HTTP workers.
    pub workers: Option<usize>,
    /// Outgoing mail, if configured.
    pub smtp: Option<crate::mailer::SmtpSettings>,
    /// Cluster membership and change feed.
    pub cluster: crate::cluster::ClusterSettings,
    /// Bounds on SSE streams.
    pub streams: StreamSettings,
    /// How many keys the in-memory tables a stranger can fill may hold.
    pub key_tables: KeyTables,
}

/// Bounds of the in-memory tables that strangers' requests add keys to: big enough for a busy
/// tenant, small enough that a flood costs bounded memory (and tests can flood a small one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyTables {
    /// Rate-limit keys per team.
    pub rate_limit_keys_per_team: usize,
    /// Keys per suspicion-detector map.
    pub suspicion_keys: usize,
}

impl Default for KeyTables {
    fn default() -> Self {
        Self {
            rate_limit_keys_per_team: 200_000,
            suspicion_keys: 50_000,
        }
    }
}

impl Settings {
    /// Validates every setting, naming the one that is wrong.
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Self> {
        let database = DatabaseSettings::from_args(&args.database)?;
        let bind = SocketAddr::from_str(args.bind.trim()).with_context(|| {
            format!("BIND={:?} is not an address like 127.0.0.1:8080", args.bind)
        })?;
        let admin_token = match args.admin_token.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(t) if t.len() < 16 => bail!("ADMIN_TOKEN must be at least 16 characters"),
            Some(t) => Some(t.to_owned()),
        };
        let trusted_proxies = parse_trusted_proxies(&args.trusted_proxies)?;
        if args.workers == Some(0) {
            bail!("WORKERS must be at least 1");
        }
        let smtp = args
            .smtp_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| crate::mailer::SmtpSettings::parse(u, &args.mail_from))
            .transpose()?;
        let key_tables = KeyTables {
            rate_limit_keys_per_team: table_size(
                "RATE_LIMIT_KEYS_PER_TEAM",
                args.rate_limit_keys_per_team,
            )?,
            suspicion_keys: table_size("SUSPICION_MAX_KEYS", args.suspicion_max_keys)?,
        };
        let streams = StreamSettings::from_args(&args.streams)?;
        let redis_url = args.redis_url.clone().filter(|u| !u.trim().is_empty());
        if let Some(url) = &redis_url {
            redis::Client::open(url.as_str()).map_err(|e| {
                anyhow::anyhow!("REDIS_URL is not a Redis URL (redis://host:port): {e}")
            })?;
        }
        Ok(Self {
            database,
            bind,
            admin_token,
            trusted_proxies,
            log_format: args.log_format,
            workers: args.workers,
            smtp,
            key_tables,
            streams,
            cluster: crate::cluster::ClusterSettings {
                feed: args.change_feed,
                redis_url,
                redis_prefix: args.redis_prefix.clone(),
                ..Default::default()
            },
        })
    }
}

/// A table bound: at least 16 keys (fewer would forget a visitor between two requests) and
/// at most 100 million.
fn table_size(name: &str, n: usize) -> anyhow::Result<usize> {
    if !(16..=100_000_000).contains(&n) {
        bail!("{name} must be between 16 and 100000000");
    }
    Ok(n)
}

/// Parses `10.0.0.1, 10.1.0.0/16, ::1` into networks; a bare IP is a /32 or /128.
pub fn parse_trusted_proxies(raw: &str) -> anyhow::Result<Vec<IpNet>> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            IpNet::from_str(s)
                .or_else(|_| IpAddr::from_str(s).map(IpNet::from))
                .with_context(|| {
                    format!("TRUSTED_PROXIES entry {s:?} is not an IP address or CIDR")
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(f: impl FnOnce(&mut ServeArgs)) -> ServeArgs {
        let mut a = ServeArgs {
            database: DatabaseArgs {
                database_url: "postgres://postgres@127.0.0.1:5432/colloquy".into(),
                database_pool_size: 8,
            },
            bind: "127.0.0.1:8080".into(),
            admin_token: None,
            trusted_proxies: String::new(),
            log_format: LogFormat::Text,
            workers: None,
            smtp_url: None,
            mail_from: "colloquy <noreply@example.com>".into(),
            rate_limit_keys_per_team: 200_000,
            suspicion_max_keys: 50_000,
            streams: StreamArgs {
                streams_per_ip: 100,
                streams_per_team: 5_000,
                streams_total: 20_000,
                stream_max_lifetime: 600,
            },
            change_feed: crate::cluster::ChangeFeed::Off,
            redis_url: None,
            redis_prefix: "colloquy:".into(),
        };
        f(&mut a);
        a
    }

    #[test]
    fn defaults_are_valid() {
        let s = Settings::from_args(&args(|_| {})).unwrap();
        assert_eq!(s.bind.port(), 8080);
        assert!(s.admin_token.is_none());
        assert_eq!(s.streams, StreamSettings::default());
    }

    #[test]
    fn each_bad_setting_is_named() {
        let cases: Vec<(ServeArgs, &str)> = vec![
            (args(|a| a.bind = "localhost".into()), "BIND"),
            (
                args(|a| a.admin_token = Some("short".into())),
                "ADMIN_TOKEN",
            ),
            (
                args(|a| a.trusted_proxies = "10.0.0.1, nope".into()),
                "TRUSTED_PROXIES",
            ),
            (
                args(|a| a.database.database_url = "mysql:/x".into()),
                "DATABASE_URL",
            ),
            (
                args(|a| a.database.database_pool_size = 0),
                "DATABASE_POOL_SIZE",
            ),
            (
                args(|a| a.rate_limit_keys_per_team = 0),
                "RATE_LIMIT_KEYS_PER_TEAM",
            ),
            (args(|a| a.suspicion_max_keys = 3), "SUSPICION_MAX_KEYS"),
            (args(|a| a.streams.streams_per_ip = 0), "STREAMS_PER_IP"),
            (args(|a| a.streams.streams_per_team = 0), "STREAMS_PER_TEAM"),
            (args(|a| a.streams.streams_total = 0), "STREAMS_TOTAL"),
            (
                args(|a| a.streams.stream_max_lifetime = 0),
                "STREAM_MAX_LIFETIME",
            ),
            (
                args(|a| a.redis_url = Some("http://127.0.0.1:6379".into())),
                "REDIS_URL",
            ),
        ];
        for (a, name) in cases {
            let err = format!("{:#}", Settings::from_args(&a).unwrap_err());
            assert!(err.contains(name), "{err:?} should name {name}");
        }
    }

    #[test]
    fn an_empty_redis_url_means_none() {
        let s = Settings::from_args(&args(|a| a.redis_url = Some(" ".into()))).unwrap();
        assert_eq!(s.cluster.redis_url, None);
        let s =
            Settings::from_args(&args(|a| a.redis_url = Some("redis://r:6379".into()))).unwrap();
        assert_eq!(s.cluster.redis_url.as_deref(), Some("redis://r:6379"));
        assert_eq!(s.cluster.redis_prefix, "colloquy:");
    }

    #[test]
    fn trusted_proxies_take_ips_and_networks() {
        let nets = parse_trusted_proxies("10.0.0.1, 192.168.0.0/16,::1").unwrap();
        assert_eq!(nets.len(), 3);
        assert!(nets[1].contains(&"192.168.3.4".parse::<IpAddr>().unwrap()));
    }
}
