-- Nodes serving this database. Each registers at start and beats every second; a node
-- whose beat is older than three seconds counts as gone. `feed` says whether the node
-- announces its changes ('postgres') or not ('off'): memory is only trusted while every
-- live node does (src/cluster/mod.rs).
CREATE TABLE nodes (
    id           uuid PRIMARY KEY,
    name         text NOT NULL,
    feed         text NOT NULL CHECK (feed IN ('off', 'postgres')),
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- The change feed. Nodes with CHANGE_FEED=postgres open their connections with
-- `-c colloquy.feed=on -c colloquy.node=<id>`; only their statements raise notices, inside
-- the committing transaction (delivered iff it commits, after it), on channel
-- colloquy_changes. Payloads, each "<kind> <node id> <rest>":
--   t <node> <ticket id>,<ticket id>,…  tickets changed (messages, status, read marks,
--                                        assignee, re-keying, erase); at most 200 ids each
--   T <node> <team id>                  a team's settings or credentials changed
--   B <node>                            blocks changed
--   y <node> <ticket id> c|o            typing (raised directly, not by a trigger)
--   p <node>                            a node's ping of its own feed
CREATE FUNCTION colloquy_notify_tickets() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    chunk text;
BEGIN
    FOR chunk IN
        SELECT string_agg(id::text, ',')
        FROM (SELECT id, (row_number() OVER () - 1) / 200 AS part FROM changed) c
        GROUP BY part
    LOOP
        PERFORM pg_notify('colloquy_changes',
                          't ' || current_setting('colloquy.node', true) || ' ' || chunk);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER tickets_feed_update AFTER UPDATE ON tickets
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT
    WHEN (current_setting('colloquy.feed', true) = 'on')
    EXECUTE FUNCTION colloquy_notify_tickets();
CREATE TRIGGER tickets_feed_delete AFTER DELETE ON tickets
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT
    WHEN (current_setting('colloquy.feed', true) = 'on')
    EXECUTE FUNCTION colloquy_notify_tickets();

CREATE FUNCTION colloquy_notify_team() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('colloquy_changes',
                      'T ' || current_setting('colloquy.node', true) || ' ' || OLD.id);
    RETURN NULL;
END
$$;
CREATE TRIGGER teams_feed AFTER UPDATE OR DELETE ON teams FOR EACH ROW
    WHEN (current_setting('colloquy.feed', true) = 'on')
    EXECUTE FUNCTION colloquy_notify_team();

CREATE FUNCTION colloquy_notify_blocks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('colloquy_changes', 'B ' || current_setting('colloquy.node', true));
    RETURN NULL;
END
$$;
CREATE TRIGGER blocks_feed AFTER INSERT OR UPDATE OR DELETE ON blocks FOR EACH STATEMENT
    WHEN (current_setting('colloquy.feed', true) = 'on')
    EXECUTE FUNCTION colloquy_notify_blocks();
