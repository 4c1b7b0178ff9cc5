#!/usr/bin/env bash
# scripts/dev-db.sh — find (or start) a PostgreSQL server for development and tests.
#
# Discovery order:
#   a) $DATABASE_URL, if set and reachable;
#   b) a server on 127.0.0.1:5432 accepting user `postgres` without a password
#      -> postgres://postgres@127.0.0.1:5432/postgres
#   c) a private cluster under <repo>/.data/pg, created with the system's PostgreSQL
#      binaries (highest /usr/lib/postgresql/*/bin, else initdb/pg_ctl on PATH), listening
#      on 127.0.0.1:$COLLOQUY_DB_PORT (default 55432) with trust auth; reused (and started
#      again if stopped) on later calls
#      -> postgres://postgres@127.0.0.1:55432/postgres
#   d) otherwise: exit non-zero, saying what to install.
#
# Usage:
#   source scripts/dev-db.sh        exports DATABASE_URL (and COLLOQUY_DB_SOURCE=env|system|private)
#                                   and defines the functions colloquy_db_url_for,
#                                   colloquy_db_create, colloquy_db_drop, colloquy_db_psql
#   scripts/dev-db.sh               prints the URL of the found server
#   scripts/dev-db.sh --create NAME creates database NAME if missing, prints its URL
#   scripts/dev-db.sh --url-for NAME
#                                   prints the found server's URL with database NAME
#   scripts/dev-db.sh --stop        stops the private cluster under .data/pg (if running)
#
# Environment:
#   DATABASE_URL              candidate a)
#   COLLOQUY_DB_SKIP_SYSTEM=1 skip a) and b): always use the private cluster (testing)
#   COLLOQUY_DB_PORT          port of the private cluster (default 55432)
#   COLLOQUY_DB_DIR           private cluster directory (default <repo>/.data/pg)
#   COLLOQUY_DB_OS_USER       non-root OS user that owns the private cluster when run as
#                             root (default: postgres if it exists, else nobody)
#   PG_BIN                    directory of initdb/pg_ctl to use instead of the discovery
# All messages go to stderr; stdout only carries URLs.

# ---------------------------------------------------------------------------------------
# helpers (no `set -e` reliance: this file is also sourced into interactive shells)

_cdb_log() { printf 'dev-db: %s\n' "$*" >&2; }

_cdb_repo_root() {
    local here
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)" || return 1
    (cd "$here/.." && pwd)
}

# Highest-version PostgreSQL bin directory containing the given tool (default initdb).
_cdb_pg_bindir() {
    local tool="${1:-initdb}" d best=""
    if [[ -n "${PG_BIN:-}" && -x "${PG_BIN}/$tool" ]]; then
        printf '%s\n' "$PG_BIN"
        return 0
    fi
    best="$(for d in /usr/lib/postgresql/*/bin /usr/pgsql-*/bin /opt/homebrew/opt/postgresql*/bin \
        /usr/local/opt/postgresql*/bin; do
        [[ -x "$d/$tool" ]] && printf '%s\n' "$d"
    done | sort -V | tail -n 1)"
    if [[ -n "$best" ]]; then
        printf '%s\n' "$best"
        return 0
    fi
    local p
    if p="$(command -v "$tool" 2>/dev/null)"; then
        dirname "$p"
        return 0
    fi
    return 1
}

# psql binary (PATH first, then the PostgreSQL bin directories).
_cdb_psql() {
    local d
    if command -v psql >/dev/null 2>&1; then
        command -v psql
    elif d="$(_cdb_pg_bindir psql)"; then
        printf '%s/psql\n' "$d"
    else
        return 1
    fi
}

# Split a postgres URL into host and port (prints "host port"). Unix-socket URLs give the
# socket directory as host.
_cdb_host_port() {
    local url="$1" rest hostport host port
    rest="${url#*://}"
    rest="${rest%%/*}"
    rest="${rest%%\?*}"
    hostport="${rest##*@}"
    if [[ "$hostport" =~ ^\[(.*)\](:([0-9]+))?$ ]]; then
        host="${BASH_REMATCH[1]}"
        port="${BASH_REMATCH[3]}"
    elif [[ "$hostport" == *:* ]]; then
        host="${hostport%%:*}"
        port="${hostport##*:}"
    else
        host="$hostport"
        port=""
    fi
    if [[ "$url" =~ [\?\&]host=([^\&]*) ]]; then host="${BASH_REMATCH[1]//%2F//}"; fi
    if [[ "$url" =~ [\?\&]port=([0-9]+) ]]; then port="${BASH_REMATCH[1]}"; fi
    printf '%s %s\n' "${host:-localhost}" "${port:-5432}"
}

# Reachability: pg_isready if present, else psql, else bash /dev/tcp.
_cdb_reachable() {
    local url="$1" tool hp host port
    if tool="$(command -v pg_isready 2>/dev/null)" || tool="$(_cdb_pg_bindir pg_isready 2>/dev/null)/pg_isready"; then
        if [[ -x "$tool" ]]; then
            "$tool" -q -t 3 -d "$url" >/dev/null 2>&1
            return
        fi
    fi
    if tool="$(_cdb_psql 2>/dev/null)"; then
        PGCONNECT_TIMEOUT=3 "$tool" "$url" -w -tAc 'SELECT 1' >/dev/null 2>&1
        return
    fi
    hp="$(_cdb_host_port "$url")"
    host="${hp% *}"
    port="${hp##* }"
    if [[ "$host" == /* ]]; then
        [[ -S "$host/.s.PGSQL.$port" ]]
        return
    fi
    timeout 3 bash -c ": <'/dev/tcp/$host/$port'" >/dev/null 2>&1
}

# Can we log in (not only reach the port)? Needs psql; without psql assume yes.
_cdb_can_login() {
    local url="$1" psql
    psql="$(_cdb_psql 2>/dev/null)" || return 0
    PGCONNECT_TIMEOUT=3 PGPASSWORD="" "$psql" "$url" -w -tAc 'SELECT 1' >/dev/null 2>&1
}

# colloquy_db_url_for URL NAME — URL with its database replaced by NAME (query kept).
colloquy_db_url_for() {
    local url="$1" name="$2"
    if [[ "$url" =~ ^([a-zA-Z][a-zA-Z0-9+.-]*://[^/?]*)(/[^?]*)?(\?.*)?$ ]]; then
        printf '%s/%s%s\n' "${BASH_REMATCH[1]}" "$name" "${BASH_REMATCH[3]}"
    else
        _cdb_log "cannot parse database URL: $url"
        return 1
    fi
}

_cdb_check_name() {
    if [[ ! "$1" =~ ^[A-Za-z_][A-Za-z0-9_]{0,62}$ ]]; then
        _cdb_log "invalid database name '$1' (letters, digits, _; at most 63)"
        return 1
    fi
}

# colloquy_db_psql [psql args...] — psql against the found server's `postgres` database.
colloquy_db_psql() {
    local psql url
    psql="$(_cdb_psql)" || { _cdb_log "psql not found (Debian: apt-get install postgresql-client)"; return 1; }
    url="$(colloquy_db_url_for "${DATABASE_URL:?DATABASE_URL not set; source scripts/dev-db.sh first}" postgres)" || return 1
    PGCONNECT_TIMEOUT=5 "$psql" "$url" -w -X -q -v ON_ERROR_STOP=1 "$@"
}

# colloquy_db_create NAME — create database NAME on the found server if missing; print its URL.
colloquy_db_create() {
    local name="$1"
    _cdb_check_name "$name" || return 1
    # \gexec runs the CREATE only when missing; a concurrent creator is tolerated below.
    if ! colloquy_db_psql -v "name=$name" >/dev/null 2>&1 <<'SQL'
SELECT format('CREATE DATABASE %I', :'name')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'name') \gexec
SQL
    then
        if [[ "$(colloquy_db_psql -v "name=$name" -tA 2>/dev/null <<'SQL'
SELECT 1 FROM pg_database WHERE datname = :'name'
SQL
        )" != 1 ]]; then
            _cdb_log "could not create database '$name' on $(colloquy_db_url_for "$DATABASE_URL" postgres)"
            return 1
        fi
    fi
    colloquy_db_url_for "$DATABASE_URL" "$name"
}

# colloquy_db_drop NAME — drop database NAME if it exists (forcing connections closed).
colloquy_db_drop() {
    local name="$1"
    _cdb_check_name "$name" || return 1
    colloquy_db_psql -v "name=$name" >/dev/null 2>&1 <<'SQL' && return 0
SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', :'name') \gexec
SQL
    # PostgreSQL < 13 has no WITH (FORCE).
    colloquy_db_psql -v "name=$name" >/dev/null <<'SQL'
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :'name';
SELECT format('DROP DATABASE IF EXISTS %I', :'name') \gexec
SQL
}

# ---------------------------------------------------------------------------------------
# private cluster (path c)

_cdb_private_dir() { printf '%s\n' "${COLLOQUY_DB_DIR:-$(_cdb_repo_root)/.data/pg}"; }
_cdb_private_port() { printf '%s\n' "${COLLOQUY_DB_PORT:-55432}"; }

# Pick the OS user that runs the cluster; empty when the caller is not root.
_cdb_os_user() {
    if [[ "$(id -u)" != 0 ]]; then
        return 0
    fi
    if [[ -n "${COLLOQUY_DB_OS_USER:-}" ]]; then
        printf '%s\n' "$COLLOQUY_DB_OS_USER"
    elif id -u postgres >/dev/null 2>&1; then
        printf 'postgres\n'
    else
        printf 'nobody\n'
    fi
}

# Run a command as the cluster's OS user (directly when not root).
_cdb_as_owner() {
    local user="$1"
    shift
    if [[ -z "$user" ]]; then
        "$@"
    elif command -v runuser >/dev/null 2>&1; then
        runuser -u "$user" -- "$@"
    elif command -v setpriv >/dev/null 2>&1; then
        setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups -- "$@"
    else
        local q
        printf -v q '%q ' "$@"
        su -s /bin/sh "$user" -c "$q"
    fi
}

_cdb_private_start() {
    local dir port user bindir data sock log ver
    dir="$(_cdb_private_dir)" || return 1
    port="$(_cdb_private_port)"
    data="$dir/data"
    sock="$dir/run"
    log="$dir/postgres.log"
    user="$(_cdb_os_user)"

    if [[ -f "$data/PG_VERSION" ]]; then
        # Reuse: prefer the binaries of the version that created the cluster.
        ver="$(cat "$data/PG_VERSION")"
        if [[ -x "/usr/lib/postgresql/$ver/bin/pg_ctl" && -z "${PG_BIN:-}" ]]; then
            bindir="/usr/lib/postgresql/$ver/bin"
        else
            bindir="$(_cdb_pg_bindir pg_ctl)" || bindir=""
        fi
    else
        bindir="$(_cdb_pg_bindir initdb)" || bindir=""
    fi
    if [[ -z "$bindir" || ! -x "$bindir/pg_ctl" ]]; then
        _cdb_log "no PostgreSQL found: no reachable \$DATABASE_URL, nothing on 127.0.0.1:5432, and no"
        _cdb_log "initdb/pg_ctl to create a private cluster. Install PostgreSQL:"
        _cdb_log "  Debian/Ubuntu: sudo apt-get install postgresql"
        _cdb_log "  Fedora:        sudo dnf install postgresql-server"
        _cdb_log "  macOS:         brew install postgresql"
        _cdb_log "or set DATABASE_URL to a server you can reach."
        return 1
    fi

    mkdir -p "$dir" || return 1
    if [[ -n "$user" ]]; then
        chown "$user:" "$dir" || return 1
        if ! _cdb_as_owner "$user" test -w "$dir"; then
            _cdb_log "OS user '$user' cannot write $dir (is a parent directory private to root?)."
            _cdb_log "Set COLLOQUY_DB_DIR to a directory '$user' can reach, or DATABASE_URL."
            return 1
        fi
    fi

    # Serialise concurrent callers (two scripts starting at once) with a lock on fd 9.
    # Every child gets `9>&-` so the postmaster does not inherit (and keep) the lock.
    local locked=""
    if command -v flock >/dev/null 2>&1 && exec 9>"$dir/.lock"; then
        locked=1
        flock -w 120 9 || _cdb_log "could not lock $dir/.lock within 120 s; going on"
    fi

    local rc=0
    if [[ ! -f "$data/PG_VERSION" ]]; then
        _cdb_log "creating a private PostgreSQL cluster ($bindir) in $data"
        mkdir -p "$sock" && { [[ -z "$user" ]] || chown -R "$user:" "$dir"; } || rc=1
        if ((rc == 0)) && ! _cdb_as_owner "$user" "$bindir/initdb" -D "$data" -U postgres \
            --auth=trust -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 9>&-; then
            _cdb_log "initdb failed; see $dir/initdb.log:"
            tail -n 20 "$dir/initdb.log" >&2
            rc=1
        fi
        if ((rc == 0)); then
            cat >>"$data/postgresql.conf" <<EOF

# --- colloquy private development cluster (scripts/dev-db.sh) ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sock'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
            [[ -z "$user" ]] || chown "$user:" "$data/postgresql.conf"
        fi
    fi

    if ((rc == 0)) && ! _cdb_as_owner "$user" "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1 9>&-; then
        _cdb_log "starting the private cluster on 127.0.0.1:$port (log: $log)"
        if ! _cdb_as_owner "$user" "$bindir/pg_ctl" -D "$data" -l "$log" -w -t 60 \
            -o "-p $port" start >/dev/null 2>&1 9>&-; then
            _cdb_log "pg_ctl start failed (is port $port taken? set COLLOQUY_DB_PORT); last log lines:"
            tail -n 20 "$log" >&2 2>/dev/null
            rc=1
        fi
    fi

    if [[ -n "$locked" ]]; then exec 9>&-; fi
    return "$rc"
}

# colloquy_db_stop_private — stop the private cluster if it runs.
colloquy_db_stop_private() {
    local dir data user bindir ver
    dir="$(_cdb_private_dir)" || return 1
    data="$dir/data"
    if [[ ! -f "$data/PG_VERSION" ]]; then
        _cdb_log "no private cluster in $dir"
        return 0
    fi
    ver="$(cat "$data/PG_VERSION")"
    bindir="/usr/lib/postgresql/$ver/bin"
    [[ -x "$bindir/pg_ctl" ]] || bindir="$(_cdb_pg_bindir pg_ctl)" || return 1
    user="$(_cdb_os_user)"
    if _cdb_as_owner "$user" "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        _cdb_as_owner "$user" "$bindir/pg_ctl" -D "$data" -m fast -w stop >/dev/null && _cdb_log "private cluster stopped"
    else
        _cdb_log "private cluster is not running"
    fi
}

# ---------------------------------------------------------------------------------------
# discovery

# colloquy_db_find — print the URL of a usable server; sets COLLOQUY_DB_SOURCE.
colloquy_db_find() {
    local url
    if [[ -z "${COLLOQUY_DB_SKIP_SYSTEM:-}" ]]; then
        if [[ -n "${DATABASE_URL:-}" ]]; then
            if _cdb_reachable "$DATABASE_URL"; then
                COLLOQUY_DB_SOURCE="env"
                printf '%s\n' "$DATABASE_URL"
                return 0
            fi
            _cdb_log "DATABASE_URL is set but not reachable; looking further"
        fi
        url="postgres://postgres@127.0.0.1:5432/postgres"
        if _cdb_reachable "$url"; then
            if _cdb_can_login "$url"; then
                COLLOQUY_DB_SOURCE=system
                printf '%s\n' "$url"
                return 0
            fi
            _cdb_log "a server answers on 127.0.0.1:5432 but refuses user postgres without a password; looking further"
        fi
    else
        _cdb_log "COLLOQUY_DB_SKIP_SYSTEM set: using the private cluster"
    fi
    _cdb_private_start || return 1
    url="postgres://postgres@127.0.0.1:$(_cdb_private_port)/postgres"
    if ! _cdb_reachable "$url"; then
        _cdb_log "the private cluster started but $url is not reachable; see $(_cdb_private_dir)/postgres.log"
        return 1
    fi
    COLLOQUY_DB_SOURCE=private
    printf '%s\n' "$url"
}

_cdb_discover_export() {
    local url
    # colloquy_db_find runs in a subshell: carry COLLOQUY_DB_SOURCE back after a '|'.
    url="$(colloquy_db_find && printf '|%s' "${COLLOQUY_DB_SOURCE:-}")" || return 1
    COLLOQUY_DB_SOURCE="${url##*|}"
    url="${url%|*}"
    url="${url%$'\n'}"
    [[ -n "$url" ]] || return 1
    export DATABASE_URL="$url" COLLOQUY_DB_SOURCE
}

# ---------------------------------------------------------------------------------------
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    # Sourced: export DATABASE_URL; arguments (the caller's positional parameters) are ignored.
    if ! _cdb_discover_export; then
        _cdb_log "no usable PostgreSQL server (see above)"
        # shellcheck disable=SC2317  # return works when sourced
        return 1
    fi
    _cdb_log "using $DATABASE_URL ($COLLOQUY_DB_SOURCE)"
else
    set -euo pipefail
    case "${1:-}" in
        -h | --help)
            sed -n '2,/^# All messages/p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        --stop)
            colloquy_db_stop_private
            exit
            ;;
    esac
    _cdb_discover_export || { _cdb_log "no usable PostgreSQL server (see above)"; exit 1; }
    case "${1:-}" in
        "") printf '%s\n' "$DATABASE_URL" ;;
        --create)
            [[ $# -ge 2 ]] || { _cdb_log "usage: $0 --create NAME"; exit 2; }
            colloquy_db_create "$2"
            ;;
        --url-for)
            [[ $# -ge 2 ]] || { _cdb_log "usage: $0 --url-for NAME"; exit 2; }
            _cdb_check_name "$2"
            colloquy_db_url_for "$DATABASE_URL" "$2"
            ;;
        *)
            _cdb_log "unknown option '$1' (try --help)"
            exit 2
            ;;
    esac
fi
