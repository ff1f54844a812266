#!/usr/bin/env bash
# The API and metrics tokens of a deployment: made here, never shipped in the repository.
#
#   scripts/tokens.sh env FILE            add IMAGEBLUR_API_TOKEN and IMAGEBLUR_METRICS_TOKEN
#                                         to FILE (compose's .env; mode 0600), each a fresh
#                                         random token unless FILE already sets it
#   scripts/tokens.sh k8s NAMESPACE       check that the Secret imageblur-tokens holds both
#                                         keys; fail with the command that makes it if not
#   scripts/tokens.sh k8s NAMESPACE --generate
#                                         the same, but make the Secret with fresh tokens when
#                                         it is missing (the dev overlay: `make deploy`)
#
# Environment: KUBECTL (default kubectl). Tokens are 64 hex digits from /dev/urandom: no
# whitespace, longer than the 16 characters the application asks for, and never on a
# command line (they go through files of mode 0600).
set -euo pipefail

KEYS=(IMAGEBLUR_API_TOKEN IMAGEBLUR_METRICS_TOKEN)
SECRET=imageblur-tokens
KUBECTL=${KUBECTL:-kubectl}

die() { printf 'tokens: %s\n' "$*" >&2; exit 1; }

new_token() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# Keys to write: each one FILE does not set yet, with a fresh token.
env_file() {
    local file=$1 key added=0
    umask 077
    [ -e "$file" ] || : >"$file"
    for key in "${KEYS[@]}"; do
        if grep -qE "^[[:space:]]*${key}=" "$file"; then
            grep -qE "^[[:space:]]*${key}=.*CHANGE_ME" "$file" \
                && die "$key in $file is a placeholder (CHANGE_ME): put a real token there or delete the line"
            continue
        fi
        # a file that does not end in a newline would glue the new line onto its last one
        if [ -s "$file" ] && [ -n "$(tail -c 1 "$file")" ]; then echo >>"$file"; fi
        printf '%s=%s\n' "$key" "$(new_token)" >>"$file"
        added=$((added + 1))
    done
    chmod 600 "$file"
    printf 'tokens: %s sets %s (%d new)\n' "$file" "${KEYS[*]}" "$added" >&2
}

k8s_secret() {
    local namespace=$1 generate=${2:-} key value missing=() error
    if error=$("$KUBECTL" -n "$namespace" get secret "$SECRET" -o name 2>&1 >/dev/null); then
        for key in "${KEYS[@]}"; do
            value=$("$KUBECTL" -n "$namespace" get secret "$SECRET" -o "jsonpath={.data.$key}")
            [ -n "$value" ] || missing+=("$key")
        done
        [ "${#missing[@]}" -eq 0 ] || die "the Secret $SECRET in $namespace lacks ${missing[*]}"
        printf 'tokens: the Secret %s in %s holds %s\n' "$SECRET" "$namespace" "${KEYS[*]}" >&2
        return
    fi
    # only a Secret that is not there is made; any other error (no cluster, no rights) stops
    case "$error" in
        *NotFound* | *"not found"*) ;;
        *) die "kubectl cannot read the Secret $SECRET: ${error##*$'\n'}" ;;
    esac
    if [ "$generate" != --generate ]; then
        die "no Secret $SECRET in namespace $namespace: API and workers would not start. Make it
(docs/operations.md, \"In Kubernetes and compose\"), for instance:
  $KUBECTL -n $namespace create secret generic $SECRET \\
    --from-literal=IMAGEBLUR_API_TOKEN=\"\$(openssl rand -hex 32)\" \\
    --from-literal=IMAGEBLUR_METRICS_TOKEN=\"\$(openssl rand -hex 32)\""
    fi
    local dir
    dir=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '$dir'" RETURN
    umask 077
    for key in "${KEYS[@]}"; do printf '%s=%s\n' "$key" "$(new_token)" >>"$dir/tokens.env"; done
    "$KUBECTL" -n "$namespace" create secret generic "$SECRET" \
        --from-env-file="$dir/tokens.env" >/dev/null
    printf 'tokens: made the Secret %s in %s with fresh tokens; read the API token with\n' \
        "$SECRET" "$namespace" >&2
    printf "  %s -n %s get secret %s -o jsonpath='{.data.IMAGEBLUR_API_TOKEN}' | base64 -d\n" \
        "$KUBECTL" "$namespace" "$SECRET" >&2
}

case "${1:-}" in
    env) [ $# -eq 2 ] || die "usage: $0 env FILE"; env_file "$2" ;;
    k8s)
        [ $# -ge 2 ] && [ $# -le 3 ] || die "usage: $0 k8s NAMESPACE [--generate]"
        k8s_secret "$2" "${3:-}"
        ;;
    *) echo "usage: $0 env FILE | k8s NAMESPACE [--generate]" >&2; exit 2 ;;
esac
