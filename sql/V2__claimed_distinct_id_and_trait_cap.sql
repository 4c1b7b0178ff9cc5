-- A distinct_id a posthog-js visitor named without proving it. Operators see it; it never
-- grants access (linked_distinct_id, which does, is only set from a verified identity).
ALTER TABLE tickets ADD COLUMN claimed_distinct_id text;

-- Traits merged across follow-ups stay within 50 keys and 16 KiB: new keys past the cap are
-- dropped, and changes to known keys are kept only while the whole still fits.
CREATE FUNCTION colloquy_merge_traits(old jsonb, new jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN (SELECT count(*) FROM jsonb_object_keys(old || new)) <= 50
             AND octet_length((old || new)::text) <= 16384 THEN old || new
        ELSE (SELECT CASE WHEN octet_length((old || known)::text) <= 16384
                          THEN old || known ELSE old END
              FROM (SELECT COALESCE(jsonb_object_agg(k, v), '{}'::jsonb) AS known
                    FROM jsonb_each(new) AS e(k, v)
                    WHERE old ? k) AS kept)
    END
$$;
