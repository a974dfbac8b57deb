#!/usr/bin/env bash
# A private Docker engine for machines that have none running (CI, the tests):
# dockerd with its own data root, exec root, unix socket and pidfile, all under
# STATE_DIR, and a stop that leaves the host as it found it.
#
#   docker/dockerd.sh start STATE_DIR   # prints the DOCKER_HOST to use
#   docker/dockerd.sh stop STATE_DIR    # stop by PID, remove the bridges and
#                                       # iptables rules/chains it added
#
# Needs root, dockerd (Debian: docker.io), iptables and iproute2. `start` records
# the host's bridges and iptables rules first, so `stop` removes exactly what
# this engine added. Keep STATE_DIR short: unix socket paths end at 108 bytes.
set -euo pipefail

usage() { echo "usage: $0 start|stop STATE_DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
state=$(mkdir -p "$2" && cd "$2" && pwd)
sock=$state/docker.sock
pidfile=$state/dockerd.pid
tables=(filter nat)

snapshot() {  # rules and chains of the tables docker touches, one per line
    local t
    for t in "${tables[@]}"; do
        iptables-save -t "$t" | grep -E '^(:|-A )' | sed "s/^/$t /" | sed -E 's/ \[[0-9]+:[0-9]+\]$//'
    done
}

bridges() { ip -o link show type bridge | awk -F': ' '{print $2}' | cut -d@ -f1; }

start() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "dockerd.sh: a private dockerd needs root" >&2
        exit 1
    fi
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        echo "unix://$sock"
        return
    fi
    snapshot >"$state/iptables.before"
    bridges >"$state/bridges.before"
    mkdir -p "$state/data" "$state/exec"
    dockerd \
        --data-root "$state/data" \
        --exec-root "$state/exec" \
        --host "unix://$sock" \
        --pidfile "$pidfile" \
        >"$state/dockerd.log" 2>&1 &
    local i
    for i in $(seq 1 120); do
        if [ -S "$sock" ] && DOCKER_HOST=unix://$sock docker version >/dev/null 2>&1; then
            echo "unix://$sock"
            return
        fi
        if ! kill -0 $! 2>/dev/null; then
            echo "dockerd exited; its log:" >&2
            tail -n 30 "$state/dockerd.log" >&2
            exit 1
        fi
        sleep 0.5
    done
    echo "dockerd did not answer on $sock within 60 s; its log:" >&2
    tail -n 30 "$state/dockerd.log" >&2
    exit 1
}

stop() {
    local pid i
    if [ -s "$pidfile" ]; then
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            # dockerd stops its containers (10 s each at most) and its containerd.
            for i in $(seq 1 120); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.5
            done
            if kill -0 "$pid" 2>/dev/null; then
                echo "dockerd $pid ignored SIGTERM for 60 s: SIGKILL" >&2
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
    fi
    # Left-overs of a killed engine: its containerd and shims (found by our exec root).
    local leftovers
    leftovers=$(pgrep -f -- "$state/exec" || true)
    if [ -n "$leftovers" ]; then
        # shellcheck disable=SC2086
        kill -KILL $leftovers 2>/dev/null || true
    fi
    # Mounts under the state dir (overlay layers, netns, shm) of a killed engine.
    { grep -F " $state/" /proc/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done

    [ -f "$state/bridges.before" ] || return 0
    local b
    while read -r b; do
        [ -n "$b" ] && ip link delete "$b" 2>/dev/null || true
    done < <(comm -13 <(sort "$state/bridges.before") <(bridges | sort))

    # iptables: delete the rules it added (jumps first), then its chains.
    local added t rest chain
    added=$(comm -13 <(sort "$state/iptables.before") <(snapshot | sort))
    while read -r t rest; do
        case $rest in
            "-A "*) eval "iptables -t $t -D ${rest#-A }" 2>/dev/null || true ;;
        esac
    done <<<"$added"
    # ":CHAIN -" is a chain it created; ":CHAIN POLICY" a built-in chain whose
    # policy it changed (dockerd sets FORWARD to DROP): put the old policy back.
    local policy before pass
    for pass in flush delete; do
        while read -r t rest; do
            case $rest in
                :*)
                    chain=${rest#:}
                    policy=${chain#* }
                    chain=${chain%% *}
                    if [ "$policy" != "-" ]; then
                        [ $pass = flush ] || continue
                        before=$({ grep -E "^$t :$chain " "$state/iptables.before" || true; } | cut -d' ' -f3)
                        [ -n "$before" ] && iptables -t "$t" -P "$chain" "$before"
                    elif [ $pass = flush ]; then
                        iptables -t "$t" -F "$chain" 2>/dev/null || true
                    else
                        iptables -t "$t" -X "$chain" 2>/dev/null || true
                    fi
                    ;;
            esac
        done <<<"$added"
    done
    local left
    left=$(comm -13 <(sort "$state/iptables.before") <(snapshot | sort))
    if [ -n "$left" ]; then
        echo "iptables entries left behind:" >&2
        echo "$left" >&2
        exit 1
    fi
}

case $cmd in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
