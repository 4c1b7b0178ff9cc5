-- bench/seed.sql — bulk data for scripts/bench.sh, following sql/V1__init.sql exactly.
--
-- psql variables (all required):
--   bulk_teams      teams created here (besides the bench teams made through the admin API)
--   bulk_tpt        tickets per bulk team (even: two tickets per visitor)
--   nv              visitors of the bench teams; visitor v owns tickets 4v..4v+3, all in
--                   bench team v % 4, with distinct_id 'bench-<v>@example.com'
--   nv1             posthog-js widget sessions of the bench teams (0: none); session m owns one
--                   ticket keyed by widget_session_id (distinct_id NULL, as POST
--                   /api/conversations/v1/widget/message opens them), in bench team m % 4
--   msgs            messages per ticket (alternating customer / human operator)
--   team0..team3    ids of the four bench teams (created through POST /api/teams)
--
-- Deterministic ids and times, so the wrk Lua scripts and pgbench scripts can address rows:
--   bench ticket n     00000000-0000-4000-8000-<n as 12 hex digits>
--   bulk ticket m      00000000-0000-4000-9000-<m as 12 hex digits>
--   posthog-js ticket m 00000000-0000-4000-a000-<m as 12 hex digits>, widget_session_id
--                      00000003-0000-4000-8000-<m as 12 hex digits>, linked_distinct_id 'ph-anon-<m>'
--   bulk team t        00000002-0000-4000-8000-<t as 12 hex digits>
--   message k of n     00000001-0000-4000-8000-<n*64+k> (bench) / 00000001-0000-4000-9000-… (bulk)
--                      / 00000001-0000-4000-a000-… (posthog-js)
--   bench ticket n is created at 2025-06-01T00:00:00Z + n*7 s, its message k at + k*60 s
--   bulk ticket m  is created at 2025-06-01T00:00:00Z + m*11 s, its message k at + k*60 s
--   posthog-js ticket m is created at 2025-07-01T00:00:00Z + m*5 s, its message k at + k*60 s
-- Ticket numbers per bench team: the documented-surface tickets first, then the posthog-js ones.
\set ON_ERROR_STOP 1
SET synchronous_commit = off;

CREATE FUNCTION pg_temp.hexid(prefix text, n bigint) RETURNS uuid
    LANGUAGE sql IMMUTABLE AS $$ SELECT (prefix || lpad(to_hex(n), 12, '0'))::uuid $$;

-- A message body of 40–160 characters, varying with (n, k).
CREATE FUNCTION pg_temp.body(n bigint, k int) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN k % 2 = 0 THEN 'Hi, about order #' || (n * 31 + k) || ': '
                ELSE 'Thanks for reaching out! ' END
        || substr('Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod '
                  'tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, '
                  'quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo.',
                  1, 20 + ((n * 7 + k * 13) % 120)::int)
$$;

CREATE TEMP TABLE bench_teams (idx int PRIMARY KEY, id uuid NOT NULL, base bigint, v1 bigint);
INSERT INTO bench_teams (idx, id) VALUES (0, :'team0'), (1, :'team1'), (2, :'team2'), (3, :'team3');

-- ---------------------------------------------------------------- bulk teams
INSERT INTO teams (id, name, public_token, public_token_sha256, secret_key_sha256,
                   identity_secret, created_at)
SELECT pg_temp.hexid('00000002-0000-4000-8000-', t), 'Bulk team ' || t, 'pub_bulk_' || t,
       sha256(convert_to('pub_bulk_' || t, 'UTF8')), sha256(convert_to('sec_bulk_' || t, 'UTF8')),
       md5('identity' || t), timestamptz '2025-05-01 00:00:00+00' + t * interval '1 minute'
FROM generate_series(0, :bulk_teams - 1) t;

INSERT INTO ticket_counters (team_id, last_number)
SELECT pg_temp.hexid('00000002-0000-4000-8000-', t), :bulk_tpt
FROM generate_series(0, :bulk_teams - 1) t;

INSERT INTO tickets (id, team_id, ticket_number, distinct_id, traits, status,
                     unread_customer_count, unread_team_count, visitor_read_at,
                     message_count, last_message, last_message_at, last_created_at, created_at)
SELECT pg_temp.hexid('00000000-0000-4000-9000-', m),
       pg_temp.hexid('00000002-0000-4000-8000-', m / :bulk_tpt),
       m % :bulk_tpt + 1,
       'visitor-' || (m / 2) || '@bulk.example.com',
       jsonb_build_object('name', 'Visitor ' || (m / 2), 'email', 'visitor-' || (m / 2) || '@bulk.example.com'),
       'open', 0, 0, c + (:msgs - 1) * interval '1 minute',
       :msgs, pg_temp.body(m, :msgs - 1),
       c + (:msgs - 1) * interval '1 minute', c + (:msgs - 1) * interval '1 minute', c
FROM generate_series(0, :bulk_teams * :bulk_tpt - 1) m,
     LATERAL (SELECT timestamptz '2025-06-01 00:00:00+00' + m * interval '11 seconds' AS c) x;

INSERT INTO messages (id, team_id, ticket_id, content, author_type, author_name, is_private,
                      distinct_id, created_at)
SELECT pg_temp.hexid('00000001-0000-4000-9000-', m * 64 + k),
       pg_temp.hexid('00000002-0000-4000-8000-', m / :bulk_tpt),
       pg_temp.hexid('00000000-0000-4000-9000-', m),
       pg_temp.body(m, k),
       CASE WHEN k % 2 = 0 THEN 'customer' ELSE 'human' END,
       CASE WHEN k % 2 = 0 THEN 'Visitor ' || (m / 2) ELSE 'Sam' END,
       false,
       CASE WHEN k % 2 = 0 THEN 'visitor-' || (m / 2) || '@bulk.example.com' END,
       timestamptz '2025-06-01 00:00:00+00' + m * interval '11 seconds' + k * interval '1 minute'
FROM generate_series(0, :bulk_teams * :bulk_tpt - 1) m, generate_series(0, :msgs - 1) k
ORDER BY m, k;

-- ---------------------------------------------------------------- bench teams' tickets
-- base: the documented-surface tickets of the team (numbered 1..base); the posthog-js
-- tickets follow.
UPDATE bench_teams
SET base = (SELECT count(*) FROM generate_series(0, :nv - 1) v WHERE v % 4 = idx) * 4,
    v1 = (SELECT count(*) FROM generate_series(0, :nv1 - 1) m WHERE m % 4 = idx);

INSERT INTO ticket_counters (team_id, last_number)
SELECT id, base + v1
FROM bench_teams
ON CONFLICT (team_id) DO UPDATE SET last_number = EXCLUDED.last_number;

INSERT INTO tickets (id, team_id, ticket_number, distinct_id, traits, status,
                     unread_customer_count, unread_team_count, visitor_read_at,
                     message_count, last_message, last_message_at, last_created_at, created_at)
SELECT pg_temp.hexid('00000000-0000-4000-8000-', n),
       bt.id,
       (n / 16) * 4 + n % 4 + 1,
       'bench-' || (n / 4) || '@example.com',
       jsonb_build_object('name', 'Visitor ' || (n / 4), 'email', 'bench-' || (n / 4) || '@example.com'),
       'open', 0, 0, c + (:msgs - 1) * interval '1 minute',
       :msgs, pg_temp.body(n, :msgs - 1),
       c + (:msgs - 1) * interval '1 minute', c + (:msgs - 1) * interval '1 minute', c
FROM generate_series(0, :nv * 4 - 1) n
     JOIN bench_teams bt ON bt.idx = (n / 4) % 4,
     LATERAL (SELECT timestamptz '2025-06-01 00:00:00+00' + n * interval '7 seconds' AS c) x;

INSERT INTO messages (id, team_id, ticket_id, content, author_type, author_name, is_private,
                      distinct_id, created_at)
SELECT pg_temp.hexid('00000001-0000-4000-8000-', n * 64 + k),
       bt.id,
       pg_temp.hexid('00000000-0000-4000-8000-', n),
       pg_temp.body(n, k),
       CASE WHEN k % 2 = 0 THEN 'customer' ELSE 'human' END,
       CASE WHEN k % 2 = 0 THEN 'Visitor ' || (n / 4) ELSE 'Sam' END,
       false,
       CASE WHEN k % 2 = 0 THEN 'bench-' || (n / 4) || '@example.com' END,
       timestamptz '2025-06-01 00:00:00+00' + n * interval '7 seconds' + k * interval '1 minute'
FROM generate_series(0, :nv * 4 - 1) n
     JOIN bench_teams bt ON bt.idx = (n / 4) % 4,
     generate_series(0, :msgs - 1) k
ORDER BY n, k;

-- ---------------------------------------------------------------- posthog-js tickets
-- As the v1 surface stores them: keyed by widget_session_id, linked to the SDK's distinct_id,
-- customer messages without distinct_id or author name.
INSERT INTO tickets (id, team_id, ticket_number, distinct_id, widget_session_id,
                     linked_distinct_id, traits, status, unread_customer_count,
                     unread_team_count, visitor_read_at, message_count, last_message,
                     last_message_at, last_created_at, created_at)
SELECT pg_temp.hexid('00000000-0000-4000-a000-', m),
       bt.id,
       bt.base + m / 4 + 1,
       NULL,
       pg_temp.hexid('00000003-0000-4000-8000-', m),
       'ph-anon-' || m,
       '{}'::jsonb,
       'open', 0, 0, c + (:msgs - 1) * interval '1 minute',
       :msgs, pg_temp.body(m, :msgs - 1),
       c + (:msgs - 1) * interval '1 minute', c + (:msgs - 1) * interval '1 minute', c
FROM generate_series(0, :nv1 - 1) m
     JOIN bench_teams bt ON bt.idx = m % 4,
     LATERAL (SELECT timestamptz '2025-07-01 00:00:00+00' + m * interval '5 seconds' AS c) x;

INSERT INTO messages (id, team_id, ticket_id, content, author_type, author_name, is_private,
                      distinct_id, created_at)
SELECT pg_temp.hexid('00000001-0000-4000-a000-', m * 64 + k),
       bt.id,
       pg_temp.hexid('00000000-0000-4000-a000-', m),
       pg_temp.body(m, k),
       CASE WHEN k % 2 = 0 THEN 'customer' ELSE 'human' END,
       CASE WHEN k % 2 = 0 THEN NULL ELSE 'Sam' END,
       false,
       NULL,
       timestamptz '2025-07-01 00:00:00+00' + m * interval '5 seconds' + k * interval '1 minute'
FROM generate_series(0, :nv1 - 1) m
     JOIN bench_teams bt ON bt.idx = m % 4,
     generate_series(0, :msgs - 1) k
ORDER BY m, k;

RESET synchronous_commit;
