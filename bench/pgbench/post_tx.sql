-- pgbench ceiling for one POST follow-up: the transaction colloquy's ticket actor runs for a
-- batch of one message (src/store/messages.rs, PgStore::append): BEGIN; SELECT … FOR UPDATE
-- on the ticket; one INSERT … SELECT FROM unnest(…) into messages; one UPDATE of the ticket;
-- COMMIT. Run with -M prepared and
--   -D team=<uuid of bench team 0> -D vlo=<first visitor, multiple of 4> -D vcnt=<visitors>
-- Bench team 0 owns the visitors v ≡ 0 (mod 4); visitor v owns tickets 4v..4v+3 (bench/seed.sql).
-- The created_at rule max(clock_timestamp(), last + 1 µs) — Rust in colloquy — is computed
-- in the SELECT; the message id imitates a UUIDv7 (millisecond-time prefix).
\set v :vlo + 4 * random(0, :vcnt / 4 - 1)
\set n 4 * :v + random(0, 3)
BEGIN;
SELECT status, last_created_at, clock_timestamp() AS now, unread_customer_count,
       traits->>'name' AS name, version,
       GREATEST(clock_timestamp(), last_created_at + interval '1 microsecond') AS at
FROM tickets
WHERE id = ('00000000-0000-4000-8000-' || lpad(to_hex(:n::bigint), 12, '0'))::uuid AND team_id = :team::uuid
FOR UPDATE \gset
INSERT INTO messages (id, team_id, ticket_id, content, author_type, author_name, is_private,
                      distinct_id, client_message_id, created_at)
SELECT u.id, :team::uuid, ('00000000-0000-4000-8000-' || lpad(to_hex(:n::bigint), 12, '0'))::uuid,
       u.content, u.author_type, u.author_name, u.is_private, u.distinct_id,
       u.client_message_id, u.created_at
FROM unnest(ARRAY[(lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
                   || md5(random()::text)::char(20))::uuid]::uuid[],
            ARRAY['Any news on my order? It was due on Monday, tracking says it is still in the warehouse (pgbench).']::text[],
            ARRAY['customer']::text[], ARRAY[:name::text]::text[], ARRAY[false]::bool[],
            ARRAY['bench-' || (:n::bigint / 4) || '@example.com']::text[], ARRAY[NULL]::text[],
            ARRAY[:at::timestamptz]::timestamptz[])
     AS u(id, content, author_type, author_name, is_private, distinct_id, client_message_id,
          created_at)
ON CONFLICT (team_id, distinct_id, client_message_id) WHERE client_message_id IS NOT NULL
DO NOTHING
RETURNING id;
UPDATE tickets SET status = 'open', last_created_at = :at::timestamptz,
       message_count = message_count + 1,
       last_message = COALESCE('Any news on my order? It was due on Monday, tracking says it is still in the warehouse (pgbench).', last_message),
       last_message_at = COALESCE(:at::timestamptz, last_message_at),
       unread_team_count = unread_team_count + 1,
       unread_customer_count = :unread_customer_count::int,
       traits = traits || '{}'::jsonb,
       version = version + 1
WHERE id = ('00000000-0000-4000-8000-' || lpad(to_hex(:n::bigint), 12, '0'))::uuid AND team_id = :team::uuid
RETURNING version;
COMMIT;
