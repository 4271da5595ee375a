#!/usr/bin/env bash
# Set up this Debian 12 host as the Redis server of a roulette cluster. Idempotent: run it
# again after changing redis.conf, or to upgrade; the password is kept.
#
#   deploy/redis/setup.sh [--bind IP] [--no-start] [--print-url] [--cli REDIS-CLI-ARGS...]
#
#   --bind IP    the private address the roulette nodes reach this host on (default:
#                $REDIS_BIND_IP, else the address in an existing roulette-local.conf, else
#                this host's one private IPv4 address: 10/8, 172.16/12, 192.168/16,
#                100.64/10; refuses to guess if there are none or several)
#   --no-start   write the files only; no sysctl, no systemctl
#   --print-url  print the nodes' ROULETTE_CLUSTER URL (it contains the password) and exit
#   --cli ...    run redis-cli against the local Redis with the password (not on the command
#                line), e.g. `setup.sh --cli PUBSUB CHANNELS`; the rest are its arguments
#   DESTDIR=DIR  write under DIR instead of / (CI, packaging); implies --no-start and no
#                apt-get. REDIS_HOST_ADDRS="A B ..." replaces the host's addresses for the
#                auto-detection (tests).
#
# Does, as root:
#   1. apt-get install redis-server redis-tools, if redis-server is missing
#   2. /etc/redis/redis.conf            = redis.conf beside this script, byte for byte
#                                         (Debian's original is kept once as
#                                         redis.conf.debian-orig)
#   3. /etc/redis/roulette-local.conf   `bind IP 127.0.0.1 -::1` and `requirepass` with a
#                                         random 64-hex-digit password made on the first run
#                                         (0640 root:redis)
#   4. /etc/sysctl.d/60-roulette-redis.conf  vm.overcommit_memory=1, net.core.somaxconn;
#                                         applied with sysctl
#   5. systemctl enable redis-server, restart it if a file changed, and PING it with the
#      password. Then prints how to get the nodes' ROULETTE_CLUSTER URL.
# The firewall is left alone: allow TCP 6379 from the roulette nodes only (cloud security
# group, or e.g. nftables: `tcp dport 6379 ip saddr { 10.0.0.11, 10.0.0.12, 10.0.0.13 }
# accept` before a drop).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
conf_src=$here/redis.conf

bind_ip=${REDIS_BIND_IP:-}
no_start=0
print_url=0
cli=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bind) [ $# -ge 2 ] || { echo "setup.sh: --bind needs an address" >&2; exit 2; }; bind_ip=$2; shift ;;
    --bind=*) bind_ip=${1#--bind=} ;;
    --no-start) no_start=1 ;;
    --print-url) print_url=1 ;;
    --cli) shift; cli=1; break ;;
    -h|--help) sed -n '2,33p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
[ -z "$DESTDIR" ] || no_start=1

conf_dst=$DESTDIR/etc/redis/redis.conf
local_dst=$DESTDIR/etc/redis/roulette-local.conf
sysctl_dst=$DESTDIR/etc/sysctl.d/60-roulette-redis.conf

say() { printf 'redis setup: %s\n' "$*"; }
die() { printf 'redis setup: %s\n' "$*" >&2; exit 1; }

port=$(sed -n 's/^port \([0-9]*\)$/\1/p' "$conf_src" | tail -1)
[ -n "$port" ] || die "no 'port' line in $conf_src"
local_value() { # KEY: its value in the existing roulette-local.conf
  [ -f "$local_dst" ] && sed -n "s/^$1 //p" "$local_dst" | tail -1
  return 0
}

if [ "$print_url" = 1 ]; then
  pw=$(local_value requirepass); ip=$(local_value bind); ip=${ip%% *}
  if [ -z "$pw" ] || [ -z "$ip" ]; then die "no password/address in $local_dst: run setup first"; fi
  echo "redis://:$pw@$ip:$port"
  exit 0
fi
if [ "$cli" = 1 ]; then
  pw=$(local_value requirepass)
  [ -n "$pw" ] || die "no password in $local_dst: run setup first"
  REDISCLI_AUTH=$pw exec redis-cli -h 127.0.0.1 -p "$port" "$@"
fi

[ -f "$conf_src" ] || die "missing $conf_src"
grep -qx 'include /etc/redis/roulette-local.conf' "$conf_src" || die "$conf_src does not include /etc/redis/roulette-local.conf"
[ -n "$DESTDIR" ] || [ "$(id -u)" = 0 ] || die "run as root (or set DESTDIR)"

# --- 1. packages ----------------------------------------------------------------------
if [ -z "$DESTDIR" ] && ! command -v redis-server >/dev/null; then
  say "installing redis-server redis-tools"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools
fi

# --- the address to bind ----------------------------------------------------------------
is_ipv4() {
  local IFS=. o n=0
  [[ $1 =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || return 1
  for o in $1; do [ "$o" -le 255 ] || return 1; n=$((n + 1)); done
  [ $n = 4 ]
}
is_private() { # RFC 1918 and the RFC 6598 shared range some clouds use
  local a b
  IFS=. read -r a b _ _ <<<"$1"
  [ "$a" = 10 ] || { [ "$a" = 172 ] && [ "$b" -ge 16 ] && [ "$b" -le 31 ]; } ||
    { [ "$a" = 192 ] && [ "$b" = 168 ]; } || { [ "$a" = 100 ] && [ "$b" -ge 64 ] && [ "$b" -le 127 ]; }
}
[ -n "$bind_ip" ] || { bind_ip=$(local_value bind); bind_ip=${bind_ip%% *}; }
if [ -z "$bind_ip" ]; then
  if [ -n "${REDIS_HOST_ADDRS:-}" ]; then addrs=$REDIS_HOST_ADDRS; else
    addrs=$(ip -4 -o addr show scope global 2>/dev/null | awk '{sub(/\/.*/, "", $4); print $4}'); fi
  private=()
  for a in $addrs; do is_ipv4 "$a" && is_private "$a" && private+=("$a"); done
  [ ${#private[@]} = 1 ] || die "cannot choose the private address to listen on (host addresses: $(printf '%s' "$addrs" | tr '\n' ' '); private: ${private[*]:-none}); pass --bind IP"
  bind_ip=${private[0]}
  say "listening on this host's private address $bind_ip"
fi
is_ipv4 "$bind_ip" || die "--bind $bind_ip is not an IPv4 address"
case "$bind_ip" in 127.0.0.1|0.0.0.0) die "--bind $bind_ip: give the private address (loopback is always bound)" ;; esac
is_private "$bind_ip" || [[ $bind_ip == 127.* ]] || say "warning: $bind_ip is not a private address; make sure only the nodes can reach port $port"

# --- 2.-4. files ----------------------------------------------------------------------
changed=0
# put MODE GROUP CONTENT_FILE DST: replace DST atomically if its content or mode differ.
put() {
  local mode=$1 group=$2 src=$3 dst=$4
  if [ -f "$dst" ] && cmp -s "$src" "$dst" && [ "$(stat -c %a "$dst")" = "${mode#0}" ]; then
    say "unchanged $dst"; return 0
  fi
  install -d -m 0755 "$(dirname "$dst")"
  install -m "$mode" "$src" "$dst.new.$$"
  if [ -z "$DESTDIR" ]; then chown "root:$group" "$dst.new.$$"; fi
  mv -f "$dst.new.$$" "$dst"
  say "wrote $dst"
  changed=1
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ -f "$conf_dst" ] && [ ! -e "$conf_dst.debian-orig" ] && ! grep -q 'roulette-local.conf' "$conf_dst"; then
  cp -p "$conf_dst" "$conf_dst.debian-orig"
  say "kept Debian's original as $conf_dst.debian-orig"
fi
redis_group=redis
[ -n "$DESTDIR" ] || getent group redis >/dev/null || die "no 'redis' group: is redis-server installed?"
put 0640 "$redis_group" "$conf_src" "$conf_dst"

pw=$(local_value requirepass)
if [ -z "$pw" ]; then
  pw=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  say "generated a new password"
fi
[[ $pw =~ ^[A-Za-z0-9._~-]+$ ]] || die "the password in $local_dst has characters that need %-escaping in a URL; use hex"
cat >"$tmp/local.conf" <<EOF
# /etc/redis/roulette-local.conf: this host's part of the Redis configuration, included at
# the end of /etc/redis/redis.conf. Written by deploy/redis/setup.sh; a re-run keeps the
# password and the address (pass --bind to change it). Secret: 0640 root:redis.
bind $bind_ip 127.0.0.1 -::1
requirepass $pw
EOF
put 0640 "$redis_group" "$tmp/local.conf" "$local_dst"

cat >"$tmp/sysctl.conf" <<'EOF'
# /etc/sysctl.d/60-roulette-redis.conf: kernel settings for the roulette cluster's Redis host
# (written by deploy/redis/setup.sh).
# Redis asks for it at every start ("WARNING Memory overcommit must be enabled"): without it
# a fork (a manual BGSAVE; persistence is off) can fail, and jemalloc can misbehave even
# without memory pressure.
vm.overcommit_memory = 1
# Accept queue ceiling: Redis's tcp-backlog (511) is capped by it; 4096 takes all nodes
# reconnecting at once after a Redis restart.
net.core.somaxconn = 4096
EOF
put 0644 root "$tmp/sysctl.conf" "$sysctl_dst"

if [ "$no_start" = 1 ]; then
  if [ -n "$DESTDIR" ]; then why="DESTDIR is set"; else why="--no-start"; fi
  say "files written; skipping sysctl and systemctl ($why)"
  exit 0
fi

# --- 4./5. activate -------------------------------------------------------------------
sysctl -q -p "$sysctl_dst" || say "warning: sysctl reported errors (read-only keys in a container?)"
if [ ! -d /run/systemd/system ]; then
  say "systemd is not running as PID 1 here: start Redis by hand: redis-server $conf_dst"
  exit 0
fi
systemctl enable --quiet redis-server.service
if [ "$changed" = 1 ] || ! systemctl is-active --quiet redis-server.service; then
  say "restarting redis-server (the nodes reconnect and re-queue their waiting strangers)"
  systemctl restart redis-server.service
fi
ok=0
for _ in $(seq 50); do
  if [ "$(REDISCLI_AUTH=$pw redis-cli -h 127.0.0.1 -p "$port" PING 2>/dev/null)" = PONG ]; then ok=1; break; fi
  sleep 0.2
done
[ "$ok" = 1 ] || die "redis-server does not answer PING on 127.0.0.1:$port: journalctl -u redis-server"
say "redis-server is up on $bind_ip:$port and 127.0.0.1:$port (persistence off, noeviction)"
say "on each roulette node set ROULETTE_CLUSTER to the output of: sudo $here/setup.sh --print-url"
say "redis-cli with the password: sudo $here/setup.sh --cli [ARGS...]"
say "firewall: allow TCP $port from the roulette nodes only"
