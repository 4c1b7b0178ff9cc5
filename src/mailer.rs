//! The Mailer actor: delivers the `outbox` over SMTP, off the request path, with retries
//! (exponential backoff, at most 10 attempts). Requests only insert rows and wake it; a mail
//! server that is down never fails or slows a widget request. Without `SMTP_URL` mails stay in
//! the outbox (and the log) for a developer to read.

use crate::store::{Mail, PgStore};
use actix::prelude::*;
use colloquy_actors::stats::{ActorStats, ActorStatsSnapshot};
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message as Email, Tokio1Executor};
use std::sync::Arc;
use std::time::Duration;

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
    stats: Arc<ActorStats>,
}

/// Looks for due mail now (sent after a request queued one).
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Wake;

/// How request handlers reach the mailer.
#[derive(Clone)]
pub struct MailerHandle {
    addr: Addr<Mailer>,
    stats: Arc<ActorStats>,
}

impl MailerHandle {
    /// Starts the mailer on the current arbiter.
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
            store,
            smtp,
            busy: false,
            stats: Arc::clone(&stats),
        }
        .start();
        Self { addr, stats }
    }

    /// Asks for a delivery round soon; never waits (a full mailbox means one is coming).
    pub fn wake(&self) {
        match self.addr.try_send(Wake) {
            Ok(()) => self.stats.enqueued(1),
            // Not lost: the queued wake-ups and the 2 s timer deliver it. Counted all the same.
            Err(_) => self.stats.dropped(),
        }
    }

    /// The mailer's counters, for `/api/ops/actors` and metrics: `handled` counts wake-ups
    /// and delivery attempts, `errors` failed deliveries (retried later).
    pub fn stats(&self) -> ActorStatsSnapshot {
        self.stats.snapshot()
    }
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
        let stats = Arc::clone(&self.stats);
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
                stats.handled();
                if result.is_err() {
                    stats.error();
                }
                let (err, retry) = match &result {
                    Ok(()) => (None, 0),
                    Err(e) => (Some(e.as_str()), backoff(mail.attempts)),
                };
                if let Some(e) = err {
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
        self.stats.started();
        ctx.run_interval(Duration::from_secs(2), |act, ctx| act.deliver(ctx));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.stats.stopped();
    }
}

impl Handler<Wake> for Mailer {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Self::Context) {
        self.stats.dequeued(1);
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
