//! Ordering and durability under concurrent writers: every acknowledged message is listed
//! exactly once, in commit order, and polling with `after` sees each exactly once.

use crate::helpers::spawn_app;
use serde_json::{json, Value};
use std::collections::HashSet;

#[actix_web::test]
async fn concurrent_writers_to_one_ticket_are_each_listed_once_in_order() {
    // Arrange
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let visitor = "racer@example.com";
    let ticket = app.open_ticket(&team.token, visitor, "first").await;

    // A poller follows the ticket with `after` while the writers run.
    let poller = {
        let (client, address, token, ticket) = (
            app.client.clone(),
            app.address.clone(),
            team.token.clone(),
            ticket.clone(),
        );
        actix_web::rt::spawn(async move {
            let mut after: Option<String> = None;
            let mut seen: Vec<String> = Vec::new();
            let mut quiet_rounds = 0;
            while quiet_rounds < 20 {
                let mut req = client
                    .get(format!(
                        "{address}/api/conversations/widget/messages/{ticket}"
                    ))
                    .header("X-Conversations-Token", &token)
                    .query(&[("distinct_id", visitor), ("limit", "7")]);
                if let Some(a) = &after {
                    req = req.query(&[("after", a.as_str())]);
                }
                let page: Value = req.send().await.unwrap().json().await.unwrap();
                let msgs = page["messages"].as_array().cloned().unwrap_or_default();
                if msgs.is_empty() {
                    quiet_rounds += 1;
                    actix_web::rt::time::sleep(std::time::Duration::from_millis(25)).await;
                } else {
                    quiet_rounds = 0;
                }
                for m in msgs {
                    seen.push(m["id"].as_str().unwrap().to_owned());
                    after = Some(m["created_at"].as_str().unwrap().to_owned());
                }
            }
            seen
        })
    };

    // Act: 24 clients, 10 messages each, all to the same ticket.
    let writers: Vec<_> = (0..24)
        .map(|w| {
            let (client, address, token, ticket) = (app.client.clone(), app.address.clone(), team.token.clone(), ticket.clone());
            actix_web::rt::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..10 {
                    let res = client
                        .post(format!("{address}/api/conversations/widget/message"))
                        .header("X-Conversations-Token", &token)
                        .json(&json!({"distinct_id": visitor, "ticket_id": ticket, "message": format!("w{w} m{i}")}))
                        .send()
                        .await
                        .unwrap();
                    if res.status() == 201 {
                        let v: Value = res.json().await.unwrap();
                        acked.push(v["message_id"].as_str().unwrap().to_owned());
                    }
                }
                acked
            })
        })
        .collect();
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    let polled = poller.await.unwrap();

    // Assert: the full listing has every acknowledged message once, timestamps strictly rising.
    assert_eq!(acked.len(), 240, "every write was acknowledged");
    let page: Value = app
        .get_messages(
            &team.token,
            &ticket,
            &[("distinct_id", visitor), ("limit", "500")],
        )
        .await
        .json()
        .await
        .unwrap();
    let listed: Vec<&Value> = page["messages"].as_array().unwrap().iter().collect();
    assert_eq!(listed.len(), 241, "first message plus 240 follow-ups");
    let ids: Vec<String> = listed
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no message is listed twice");
    for a in &acked {
        assert!(unique.contains(a), "acknowledged message {a} is listed");
    }
    let times: Vec<&str> = listed
        .iter()
        .map(|m| m["created_at"].as_str().unwrap())
        .collect();
    for w in times.windows(2) {
        assert!(
            w[0] < w[1],
            "created_at strictly increasing: {} then {}",
            w[0],
            w[1]
        );
    }
    // Each writer's own messages appear in the order it sent them.
    for w in 0..24 {
        let own: Vec<String> = listed
            .iter()
            .map(|m| m["content"].as_str().unwrap())
            .filter(|c| c.starts_with(&format!("w{w} ")))
            .map(str::to_owned)
            .collect();
        let expected: Vec<String> = (0..10).map(|i| format!("w{w} m{i}")).collect();
        assert_eq!(own, expected, "writer {w}'s messages keep its order");
    }
    // The poller saw every message exactly once, in the listing's order.
    assert_eq!(
        polled, ids,
        "polling with `after` never misses or repeats a message"
    );

    // And the database agrees: what was acknowledged is durable.
    let stored = app
        .count(&format!(
            "SELECT count(*) FROM messages WHERE ticket_id = '{ticket}'"
        ))
        .await;
    assert_eq!(stored, 241);
}

#[actix_web::test]
async fn writers_on_many_tickets_share_commits_and_each_ticket_stays_exact() {
    // Arrange: 24 visitors, a ticket each.
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let mut tickets = Vec::new();
    for v in 0..24 {
        let visitor = format!("many-{v}@example.com");
        let ticket = app.open_ticket(&team.token, &visitor, "first").await;
        tickets.push((visitor, ticket));
    }

    // Act: every visitor writes 8 follow-ups to their own ticket, all visitors at once.
    let writers: Vec<_> = tickets
        .iter()
        .cloned()
        .map(|(visitor, ticket)| {
            let (client, address, token) =
                (app.client.clone(), app.address.clone(), team.token.clone());
            actix_web::rt::spawn(async move {
                let mut acked = 0;
                for i in 0..8 {
                    let res = client
                        .post(format!("{address}/api/conversations/widget/message"))
                        .header("X-Conversations-Token", &token)
                        .json(&json!({"distinct_id": visitor, "ticket_id": ticket, "message": format!("m{i}")}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status(), 201, "follow-up {i} of {visitor}");
                    acked += 1;
                }
                acked
            })
        })
        .collect();
    for w in writers {
        assert_eq!(w.await.unwrap(), 8);
    }

    // Assert: each ticket has its own messages, in order, and its summary counts them.
    for (visitor, ticket) in &tickets {
        let page: Value = app
            .get_messages(&team.token, ticket, &[("distinct_id", visitor)])
            .await
            .json()
            .await
            .unwrap();
        let contents: Vec<&str> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap())
            .collect();
        let expected: Vec<String> = std::iter::once("first".to_owned())
            .chain((0..8).map(|i| format!("m{i}")))
            .collect();
        assert_eq!(
            contents, expected,
            "{visitor}'s ticket has exactly its messages"
        );
        let list: Value = app
            .get_tickets(&team.token, &[("distinct_id", visitor)])
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(list["count"], 1);
        assert_eq!(list["results"][0]["message_count"], 9);
        assert_eq!(list["results"][0]["last_message"], "m7");
    }
    // And the writes of different tickets went through shared transactions (one commit,
    // one WAL flush for several tickets): some transaction wrote messages of 2+ tickets.
    let widest = app
        .count(
            "SELECT max(n) FROM (SELECT count(DISTINCT ticket_id) AS n FROM messages
                                 GROUP BY xmin::text) per_transaction",
        )
        .await;
    assert!(widest >= 2, "no transaction carried two tickets' messages");
}

#[actix_web::test]
async fn a_ticket_deleted_under_its_actor_is_not_found_and_the_writes_beside_it_land() {
    // Arrange: live actors on 9 tickets; then one ticket's row disappears behind its actor's
    // back (another node erased it).
    let app = spawn_app().await;
    let team = app.create_unlimited_team().await;
    let mut tickets = Vec::new();
    for v in 0..9 {
        let visitor = format!("beside-{v}@example.com");
        let ticket = app.open_ticket(&team.token, &visitor, "first").await;
        tickets.push((visitor, ticket));
    }
    let (gone_visitor, gone) = tickets[0].clone();
    app.db()
        .await
        .execute(&format!("DELETE FROM tickets WHERE id = '{gone}'"), &[])
        .await
        .unwrap();

    // Act: a write to every ticket at once, so they share transactions.
    let writes: Vec<_> = tickets
        .iter()
        .cloned()
        .map(|(visitor, ticket)| {
            let (client, address, token) =
                (app.client.clone(), app.address.clone(), team.token.clone());
            actix_web::rt::spawn(async move {
                client
                    .post(format!("{address}/api/conversations/widget/message"))
                    .header("X-Conversations-Token", &token)
                    .json(&json!({"distinct_id": visitor, "ticket_id": ticket, "message": "again"}))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for w in writes {
        statuses.push(w.await.unwrap());
    }

    // Assert
    assert_eq!(statuses[0], 404, "{gone_visitor}'s ticket is gone");
    assert!(
        statuses[1..].iter().all(|s| *s == 201),
        "the others are stored: {statuses:?}"
    );
    let stored = app
        .count("SELECT count(*) FROM messages WHERE content = 'again'")
        .await;
    assert_eq!(stored, 8);
}
