#!/usr/bin/env bash
# Checks the settings `docker compose up` would use before anything starts, so that a bad
# size or a missing key file stops here with one line naming the setting, not later with the
# engine's message (Compose passes SHM_SIZE=1e99 on as -9223372036854775808, MEMLOCK=-2 as -2).
#   ./preflight.sh [--env-file FILE]      (default: .env next to compose.yaml)
# Values come as Compose reads them: a variable of the shell wins over the env file.
# Exit 0: every check passed; 2: a setting is wrong (each problem is printed on its own line).
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")

env_file=.env
if [ "${1:-}" = "--env-file" ] && [ -n "${2:-}" ]; then
    env_file=$(realpath -m -- "$2")
elif [ -n "${1:-}" ]; then
    echo "usage: ./preflight.sh [--env-file FILE]" >&2
    exit 2
fi
# Relative files (API_KEY_FILE=./api-key) are relative to compose.yaml, as for Compose.
cd "$here"
if [ ! -f "$env_file" ]; then
    echo "preflight: $env_file not found: copy .env.example to .env and set ARCH and MODELS_DIR" >&2
    exit 2
fi

failed=0
refuse() {
    echo "preflight: $*" >&2
    failed=1
}

# setting NAME DEFAULT: the shell's value, else the env file's last NAME=, else DEFAULT.
setting() {
    local name=$1 default=$2 line value
    if [ -n "${!name+set}" ]; then
        printf '%s' "${!name}"
        return
    fi
    line=$(grep -E "^[[:space:]]*${name}=" "$env_file" | tail -n 1 || true)
    if [ -z "$line" ]; then
        printf '%s' "$default"
        return
    fi
    value=${line#*=}
    value=${value%$'\r'}
    if [[ $value =~ ^\"(.*)\"$ || $value =~ ^\'(.*)\'$ ]]; then
        value=${BASH_REMATCH[1]}
    fi
    printf '%s' "${value:-$default}"
}

# A size as Docker reads it, without overflow: at most 9 digits and a unit b, k, m or g.
check_size() {
    local name=$1 value=$2
    if [[ ! $value =~ ^[0-9]{1,9}([bBkKmMgG]|[kKmMgG][iI]?[bB])?$ ]] || [[ $value =~ ^0+[^0-9]*$ ]]; then
        refuse "$name=$value is not a size: write a positive whole number of at most 9 digits and a unit b, k, m or g, e.g. $3"
    fi
}

# A count: a positive whole number of at most 9 digits ($3 allows -1 for unlimited).
check_count() {
    local name=$1 value=$2 unlimited=$3
    if [ "$unlimited" = yes ] && [ "$value" = "-1" ]; then
        return
    fi
    if [[ ! $value =~ ^[0-9]{1,18}$ ]] || [[ $value =~ ^0+$ && $unlimited != yes ]]; then
        refuse "$name=$value is not valid: write a whole number of bytes of at most 18 digits${4:-}"
    fi
}

check_size SHM_SIZE "$(setting SHM_SIZE 16g)" 16g
check_size MEM_LIMIT "$(setting MEM_LIMIT 200g)" 200g
check_size CONVERT_MEM_LIMIT "$(setting CONVERT_MEM_LIMIT 256g)" 256g
check_size PROMETHEUS_MEM_LIMIT "$(setting PROMETHEUS_MEM_LIMIT 2g)" 2g
check_size ROUTER_MEM_LIMIT "$(setting ROUTER_MEM_LIMIT 4g)" 4g
# The fleet's per-replica limits (plan --replicas N --fleet-env); empty means MEM_LIMIT.
for fleet_name in $( { grep -oE "^[[:space:]]*FLEET_[0-9]+_MEM_LIMIT=" "$env_file" || true; compgen -v FLEET_ || true; } \
        | tr -d ' \t=' | grep -E "^FLEET_[0-9]+_MEM_LIMIT$" | sort -u); do
    fleet_value=$(setting "$fleet_name" "")
    if [ -n "$fleet_value" ]; then
        check_size "$fleet_name" "$fleet_value" 200g
    fi
done
# A FLEET_<i>_* line that compose.fleet.yaml does not read (a replica it does not run, a
# misspelt name) would be ignored, and the fleet would not be the plan it was made from.
fleet_reads=$(grep -oE '[$][{]FLEET_[0-9]+_[A-Z_]+' compose.fleet.yaml | cut -c3- | sort -u)
fleet_replicas=$(grep -cE '^  server-[0-9]+:$' compose.fleet.yaml || true)
fleet_keys=$(grep '^FLEET_0_' <<<"$fleet_reads" | cut -c9- | paste -sd, -)
for fleet_name in $( { grep -oE "^[[:space:]]*FLEET_[0-9]+_[A-Za-z0-9_]*=" "$env_file" || true; compgen -v FLEET_ || true; } \
        | tr -d ' \t=' | grep -E "^FLEET_[0-9]+_" | sort -u); do
    if ! grep -qxF -- "$fleet_name" <<<"$fleet_reads"; then
        refuse "$fleet_name is not read by compose.fleet.yaml, which runs $fleet_replicas replicas and reads FLEET_<0..$((fleet_replicas - 1))>_{$fleet_keys}: for another number of replicas set replicas: in builder/fleet.yaml to the plan's --replicas and run \`make dockerfiles\`; else remove the line"
    fi
done
check_count MEMLOCK "$(setting MEMLOCK -1)" yes ", or -1 for unlimited"
pids=$(setting PIDS_LIMIT 16384)
if [[ ! $pids =~ ^[1-9][0-9]{0,8}$ ]]; then
    refuse "PIDS_LIMIT=$pids is not valid: write a positive whole number of processes and threads (at most 9 digits), e.g. 16384"
fi

# The API key: a non-empty regular file the services' UID 10000 can read (README: API key).
key=$(setting API_KEY_FILE ./api-key)
if [ ! -e "$key" ]; then
    refuse "API_KEY_FILE=$key does not exist: create it (README: API key): openssl rand -hex 32 | sudo install -m 0440 -o 10000 -g \"\$(id -g)\" /dev/stdin $key"
elif [ ! -f "$key" ]; then
    refuse "API_KEY_FILE=$key is not a regular file: point API_KEY_FILE at the file holding the key"
elif [ ! -s "$key" ]; then
    refuse "API_KEY_FILE=$key is empty: write a key into it (README: API key)"
else
    read -r owner group mode < <(stat -L -c '%u %g %a' "$key")
    mode=$((8#$mode))
    if ! { [ "$owner" = 10000 ] && ((mode & 8#400)); } \
        && ! { [ "$group" = 10000 ] && ((mode & 8#040)); } && ! ((mode & 8#004)); then
        refuse "API_KEY_FILE=$key is not readable by UID 10000 (owner $owner, group $group, mode $(printf '%o' "$mode")): sudo chown 10000 $key && sudo chmod 0440 $key"
    fi
fi
token=$(setting HF_TOKEN_FILE /dev/null)
if [ ! -r "$token" ]; then
    refuse "HF_TOKEN_FILE=$token cannot be read: point it at the file holding the token, or /dev/null for none"
fi

if [ "$failed" -ne 0 ]; then
    exit 2
fi
echo "preflight: the settings of $env_file are usable"
