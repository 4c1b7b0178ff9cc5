-- pgbench ceiling for a poll that finds new messages: the paging query of
-- src/store/messages.rs (PgStore::page_messages, PAGE_AFTER: a poll with `after`), after =
-- 10 messages before the ticket's tail (bench/seed.sql times: ticket n at
-- 2025-06-01T00:00:00Z + 7n s, message k + 60k s), fetching limit + 1 = 101 rows. Run with
-- -M prepared and
--   -D team=<uuid of bench team 0> -D vlo=<first visitor, multiple of 4> -D vcnt=<visitors>
--   -D msgs=<messages per ticket>
\set v :vlo + 4 * random(0, :vcnt / 4 - 1)
\set n 4 * :v + random(0, 3)
\set ep 1748736000 + 7 * :n + 60 * (:msgs - 11)
SELECT id, content, rich_content, author_type, author_name, is_private, created_at
FROM messages
WHERE ticket_id = ('00000000-0000-4000-8000-' || lpad(to_hex(:n::bigint), 12, '0'))::uuid
  AND team_id = :team::uuid
  AND (false OR NOT is_private)
  AND created_at > to_timestamp(:ep::float8)
ORDER BY created_at
LIMIT 101;
