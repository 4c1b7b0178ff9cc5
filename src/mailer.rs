//! The Mailer: delivers the `outbox` over SMTP, off the request path, with retries
//! (exponential backoff, at most 10 attempts), and works through restore requests.
//!
//! Requests never touch the database for mail: `restore/request` puts a [`RestoreJob`] on a
//! bounded queue and answers at once, so its answer takes the same time whether or not the
//! email has tickets (issue 12, item 14). One worker task looks each job up, stores a token
//! and queues the mail, then wakes the Mailer actor; a full queue drops the job and counts
//! it (`/api/ops/actors` → `mailer.dropped`). A mail server that is down never fails or
//! slows a widget request. Without `SMTP_URL` mails stay in the outbox (and the log) for a
//! developer to read, until their link is used or expires; delivered bodies are redacted.

use crate::store::{Mail, PgStore};
use actix::prelude::*;
use colloquy_actors::domain::RestorePage;
use colloquy_actors::stats::{ActorStats, ActorStatsSnapshot};
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message as Email, Tokio1Executor};
use rand::distributions::Alphanumeric;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Restore requests waiting for their lookup; more are dropped (and counted), not queued.
pub const RESTORE_QUEUE_CAPACITY: usize = 1024;

/// How often dead restore links are redacted from the outbox (and old tokens forgotten).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Where mail goes.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// SMTP server host.
    pub host: String,
    /// SMTP server port.
    pub port: u16,
    /// The From address.
    pub from: String,
}

impl SmtpSettings {
    /// Parses `smtp://host:port` (plain SMTP to a local relay or sink).
    pub fn parse(url: &str, from: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("smtp://")
            .ok_or_else(|| anyhow::anyhow!("SMTP_URL must look like smtp://host:port"))?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| anyhow::anyhow!("SMTP_URL has an invalid port"))?,
            ),
            None => (rest, 25),
        };
        if host.is_empty() {
            anyhow::bail!("SMTP_URL must name a host");
        }
        from.parse::<Mailbox>()
            .map_err(|_| anyhow::anyhow!("MAIL_FROM {from:?} is not an email address"))?;
        Ok(Self {
            host: host.to_owned(),
            port,
            from: from.to_owned(),
        })
    }
}

/// Delivers due mail; one delivery round at a time.
pub struct Mailer {
    store: PgStore,
    smtp: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
    busy: bool,
    /// A redaction sweep is running (one at a time).
    sweeping: bool,
    stats: Arc<ActorStats>,
}

/// Looks for due mail now (sent after a request queued one).
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Wake;

/// A restore request the HTTP handler accepted: looked up and mailed off the request path.
#[derive(Debug, Clone)]
pub struct RestoreJob {
    /// The team asked.
    pub team_id: Uuid,
    /// The address tickets are looked up by, and mailed to if there are any.
    pub email: String,
    /// The page the link points at (already checked against the team's domains).
    pub page: RestorePage,
}

/// How request handlers reach the mailer.
#[derive(Clone)]
pub struct MailerHandle {
    addr: Addr<Mailer>,
    restores: mpsc::Sender<RestoreJob>,
    stats: Arc<ActorStats>,
}

impl MailerHandle {
    /// Starts the mailer and the restore worker on the current arbiter.
    pub fn start(store: PgStore, smtp: Option<SmtpSettings>) -> Self {
        let smtp = smtp.and_then(|s| {
            let from = s.from.parse::<Mailbox>().ok()?;
            let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.host)
                .port(s.port)
                .timeout(Some(Duration::from_secs(10)))
                .build();
            Some((transport, from))
        });
        if smtp.is_none() {
            tracing::info!("SMTP_URL is not set: mails stay in the outbox table");
        }
        let stats = Arc::new(ActorStats::default());
        let addr = Mailer {
            store: store.clone(),
            smtp,
            busy: false,
            sweeping: false,
            stats: stats.clone(),
        }
        .start();
        let (restores, queue) = mpsc::channel(RESTORE_QUEUE_CAPACITY);
        actix::spawn(restore_worker(store, queue, addr.clone(), stats.clone()));
        Self {
            addr,
            restores,
            stats,
        }
    }

    /// Asks for a delivery round soon; never waits (a full mailbox means one is coming).
    pub fn wake(&self) {
        let _ = self.addr.try_send(Wake);
    }

    /// Queues a restore request without waiting; `false` (counted as dropped) when the
    /// queue is full or the worker is gone.
    pub fn request_restore(&self, job: RestoreJob) -> bool {
        match self.restores.try_send(job) {
            Ok(()) => {
                self.stats.enqueued(1);
                true
            }
            Err(_) => {
                self.stats.dropped();
                false
            }
        }
    }

    /// The restore queue's and deliveries' counters, for `/api/ops/actors` and `/metrics`.
    pub fn stats(&self) -> ActorStatsSnapshot {
        self.stats.snapshot()
    }
}

/// The restore mail for a link.
fn restore_mail(link: &str) -> (String, String) {
    let subject = "Your support conversations".to_owned();
    let body = format!(
        "Hello,\n\nSomeone (hopefully you) asked to continue your support conversations on another \
         device. Open this link within 60 minutes:\n\n{link}\n\nIf you did not ask for this, ignore this mail.\n"
    );
    (subject, body)
}

/// Works through restore requests one at a time (so a flood costs one connection, not the
/// pool): if the email has tickets, a token is stored and its mail queued, then the Mailer
/// is woken. Ends when every handle is gone.
async fn restore_worker(
    store: PgStore,
    mut queue: mpsc::Receiver<RestoreJob>,
    mailer: Addr<Mailer>,
    stats: Arc<ActorStats>,
) {
    stats.started();
    while let Some(job) = queue.recv().await {
        stats.dequeued(1);
        let token: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(40)
            .map(char::from)
            .collect();
        let compose = |t: &str| restore_mail(&job.page.link(t));
        match store
            .request_restore(job.team_id, &job.email, &token, compose)
            .await
        {
            Ok(true) => {
                tracing::info!(team_id = %job.team_id, "restore link queued in the outbox");
                let _ = mailer.try_send(Wake);
            }
            Ok(false) => {}
            Err(e) => {
                stats.error();
                tracing::warn!(team_id = %job.team_id, error = %e, "restore request not processed");
            }
        }
    }
    stats.stopped();
}

/// Seconds until the next attempt after `attempts` failures: 5 s doubling, at most an hour.
fn backoff(attempts: i32) -> i32 {
    5i32.saturating_mul(1 << attempts.clamp(0, 10)).min(3600)
}

impl Mailer {
    fn deliver(&mut self, ctx: &mut Context<Self>) {
        let Some((transport, from)) = self.smtp.clone() else {
            return;
        };
        if self.busy {
            return;
        }
        self.busy = true;
        let store = self.store.clone();
        let stats = self.stats.clone();
        let round = async move {
            let mails = match store.claim_mail(20).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the outbox");
                    return;
                }
            };
            for mail in mails {
                let result = send(&transport, &from, &mail).await;
                let (err, retry) = match &result {
                    Ok(()) => (None, 0),
                    Err(e) => (Some(e.as_str()), backoff(mail.attempts)),
                };
                if let Some(e) = err {
                    stats.error();
                    tracing::warn!(mail_id = mail.id, error = %e, retry_in_secs = retry, "mail not delivered");
                } else {
                    tracing::info!(mail_id = mail.id, "mail delivered");
                }
                if let Err(e) = store.mail_result(mail.id, err, retry).await {
                    tracing::warn!(error = %e, "cannot record a mail delivery");
                }
            }
        };
        ctx.spawn(round.into_actor(self).map(|(), act, _| act.busy = false));
    }

    /// Redacts restore links that died unsent; runs with or without SMTP.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if self.sweeping {
            return;
        }
        self.sweeping = true;
        let store = self.store.clone();
        let stats = self.stats.clone();
        let sweep = async move {
            match store.redact_dead_links().await {
                Ok((0, 0)) => {}
                Ok((redacted, forgotten)) => {
                    tracing::info!(
                        redacted,
                        forgotten,
                        "dead restore links removed from the outbox"
                    )
                }
                Err(e) => {
                    stats.error();
                    tracing::warn!(error = %e, "cannot redact dead restore links");
                }
            }
        };
        ctx.spawn(
            sweep
                .into_actor(self)
                .map(|(), act, _| act.sweeping = false),
        );
    }
}

async fn send(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    from: &Mailbox,
    mail: &Mail,
) -> Result<(), String> {
    let to: Mailbox = mail
        .recipient
        .parse()
        .map_err(|e| format!("bad recipient: {e}"))?;
    let email = Email::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject.clone())
        .body(mail.body.clone())
        .map_err(|e| e.to_string())?;
    transport
        .send(email)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

impl Actor for Mailer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(8);
        ctx.run_interval(Duration::from_secs(2), |act, ctx| act.deliver(ctx));
        ctx.run_interval(SWEEP_EVERY, |act, ctx| act.sweep(ctx));
    }
}

impl Handler<Wake> for Mailer {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Self::Context) {
        self.deliver(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_parse_host_and_port() {
        let s =
            SmtpSettings::parse("smtp://127.0.0.1:2525", "colloquy <noreply@example.com>").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 2525));
        assert_eq!(
            SmtpSettings::parse("smtp://mail.test", "a@b.test")
                .unwrap()
                .port,
            25
        );
        assert!(SmtpSettings::parse("http://x", "a@b.test").is_err());
        assert!(SmtpSettings::parse("smtp://x:notaport", "a@b.test").is_err());
        assert!(SmtpSettings::parse("smtp://x:25", "not an address").is_err());
    }

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(backoff(0), 5);
        assert_eq!(backoff(1), 10);
        assert_eq!(backoff(20), 3600);
    }
}
