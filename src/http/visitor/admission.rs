//! Admission of widget requests on every visitor surface (both widget surfaces, the stream
//! and restore): the block list, the per-IP gate and the endpoint's budgets, whose refusals
//! are counted and reported to the suspicion detector. A handler names its budgets; this
//! decides.

use super::super::errors::ApiError;
use super::super::AppState;
use crate::teams::Team;
use colloquy_actors::domain::{DistinctId, Limit};
use colloquy_actors::rate_limiter::{Charged, RateCheck, RateRefusal, Tier};
use colloquy_actors::suspicion::Observation;
use std::net::IpAddr;

/// The first gate of every widget request on both surfaces, before anything is keyed to a
/// visitor: the IP's block, then the team's per-IP budget (`widget_ip_per_minute`; IPv6 by
/// its /64). Never taken back: requests refused later still cost their sender, so one IP
/// cannot flood a tenant with refused requests. The honeypot passes this gate alone.
pub(in crate::http) async fn admit_ip(
    state: &AppState,
    team: &Team,
    ip: IpAddr,
) -> Result<(), ApiError> {
    if state.blocks.is_blocked(team.id, ip, None) {
        return Err(ApiError::Blocked);
    }
    match state.limiters.check(team.id, ip_gate(team, ip)).await {
        Ok(_kept) => Ok(()),
        Err(r) => Err(refused(state, team, r, None, ip)),
    }
}

/// The per-IP budget of [`admit_ip`], charged with the endpoint's budgets in one step.
fn ip_gate(team: &Team, ip: IpAddr) -> Vec<RateCheck> {
    vec![RateCheck {
        tier: Tier::WidgetIp,
        key: ip_key(ip),
        limit: Limit::per_minute(team.rate_limits.widget_ip_per_minute),
    }]
}

/// An IP as a rate-limit key: what `ip.to_string()` writes, without the formatting
/// machinery for IPv4 (every widget request formats one; bench/NOTES.md).
pub(in crate::http) fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut key = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    key.push('.');
                }
                if octet >= 100 {
                    key.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    key.push(char::from(b'0' + octet / 10 % 10));
                }
                key.push(char::from(b'0' + octet % 10));
            }
            key
        }
        IpAddr::V6(_) => ip.to_string(),
    }
}

/// A budget refused the request: counted, reported to the suspicion detector, answered 429.
fn refused(
    state: &AppState,
    team: &Team,
    r: RateRefusal,
    visitor: Option<&str>,
    ip: IpAddr,
) -> ApiError {
    state
        .metrics
        .rate_limited
        .with_label_values(&[r.tier.as_str()])
        .inc();
    state.suspicion.observe(Observation::RateLimited {
        team_id: team.id,
        tier: r.tier,
        visitor: visitor.map(str::to_owned),
        ip,
        settings: team.suspicion,
    });
    ApiError::from(r)
}

/// Admission of a widget request naming one visitor key: see [`admit_as`].
pub(in crate::http) async fn admit(
    state: &AppState,
    team: &Team,
    checks: Vec<RateCheck>,
    ip: IpAddr,
    visitor: Option<&str>,
) -> Result<Charged, ApiError> {
    admit_as(state, team, checks, ip, visitor.as_slice()).await
}

/// Admission of a widget request: blocks on the IP and on every visitor key the request
/// names, the per-IP gate ([`admit_ip`]), then the endpoint's budgets. A refusal by a budget
/// is counted and reported to the suspicion detector. The budgets' charges come back as
/// [`Charged`]: a handler whose request is then refused (`403`, `404`, …) settles its result
/// through it, so refused requests leave no rate-limit keys behind.
pub(in crate::http) async fn admit_as(
    state: &AppState,
    team: &Team,
    checks: Vec<RateCheck>,
    ip: IpAddr,
    visitors: &[&str],
) -> Result<Charged, ApiError> {
    // `is_blocked` with a visitor checks the IP too: the IP alone only when none is named
    let blocked = if visitors.is_empty() {
        state.blocks.is_blocked(team.id, ip, None)
    } else {
        visitors
            .iter()
            .any(|v| state.blocks.is_blocked(team.id, ip, Some(v)))
    };
    if blocked {
        return Err(ApiError::Blocked);
    }
    state
        .limiters
        .check_gated(team.id, ip_gate(team, ip), checks)
        .await
        .map_err(|r| {
            // the per-IP gate's refusal is the IP's, not the visitor's
            let visitor = visitors
                .first()
                .copied()
                .filter(|_| r.tier != Tier::WidgetIp);
            refused(state, team, r, visitor, ip)
        })
}

/// A honeypot hit on either surface: it passes the per-IP gate (so a bot's flood is
/// limited like any other traffic) and is reported against the IP only — the distinct_id a
/// bot names is unproven, and naming a victim's must never flag the victim.
pub(in crate::http) async fn honeypot_hit(
    state: &AppState,
    team: &Team,
    ip: IpAddr,
) -> Result<(), ApiError> {
    admit_ip(state, team, ip).await?;
    state.suspicion.observe(Observation::Honeypot {
        team_id: team.id,
        ip,
        settings: team.suspicion,
    });
    Ok(())
}

/// A read budget of one documented-surface visitor: `what` names the endpoint, so polling
/// one endpoint never starves another.
pub(in crate::http) fn read_check(team: &Team, what: &str, distinct_id: &DistinctId) -> RateCheck {
    RateCheck {
        tier: Tier::ReadDistinctId,
        key: [what, ":", distinct_id.as_str()].concat(),
        limit: Limit::per_minute(team.rate_limits.read_distinct_id_per_minute),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_keys_are_what_to_string_writes() {
        for o in 0..=255u8 {
            for ip in [
                IpAddr::from([o, 0, 9, 10]),
                IpAddr::from([99, o, 100, 255]),
                IpAddr::from([1, 10, o, 200]),
                IpAddr::from([127, 0, 0, o]),
                IpAddr::from([0, 0, 0, 0, 0, 0xffff, u16::from(o), 1]),
            ] {
                assert_eq!(ip_key(ip), ip.to_string());
            }
        }
    }
}
