#!/usr/bin/env bash
# Build the container image from the repository's Dockerfile, unchanged, with
# Debian's podman, and without any registry but Debian's and PyPI.
#
# The Dockerfile's base (python:3.11-slim-bookworm) is not pulled: a stand-in
# is made from Debian bookworm packages with mmdebstrap (python3 3.11, pip,
# ca-certificates) and tagged with the base's exact name in a podman store of
# its own, so nothing else on the machine sees that tag.  docs/deploy.md says
# how the stand-in differs from the real base.
#
#   tests/image/build.sh [--fresh|--cached]
#
# --fresh (the default with CI=true) makes the base and every layer anew;
# --cached (the default otherwise) reuses the stand-in base, and podman's
# layer cache, from an earlier run.  Installs nothing: it needs root and the
# Debian packages podman, runc and mmdebstrap.  Prints the image's size and
# build time and writes them to $PROBER_IMAGE_STATE/build.json.
#
# Environment: PROBER_IMAGE (default localhost/prober:test), PROBER_IMAGE_STATE
# (default /var/tmp/prober-image: the podman store, its containers.conf, the
# cached base).  tests/image/ runs the image with the same store.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
IMAGE=${PROBER_IMAGE:-localhost/prober:test}
STATE=${PROBER_IMAGE_STATE:-/var/tmp/prober-image}
STANDIN_LABEL=org.prober.stand-in-for
MODE=cached
[ "${CI:-}" = true ] && MODE=fresh
case "${1:-}" in
  --fresh) MODE=fresh ;;
  --cached) MODE=cached ;;
  "") ;;
  *) echo "usage: $0 [--fresh|--cached]" >&2; exit 2 ;;
esac

die() { echo "tests/image/build.sh: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap makes the base as root, podman runs rootful)"
for tool in podman:podman runc:runc mmdebstrap:mmdebstrap; do
  command -v "${tool%%:*}" >/dev/null || die "${tool%%:*} is not installed: apt-get install ${tool#*:}"
done

# The base image the Dockerfile names (every stage uses the same one), fully qualified
# as podman resolves a short name from Docker Hub.
BASE=$(awk 'toupper($1) == "FROM" { print $2; exit }' "$ROOT/Dockerfile")
case "$BASE" in
  */*/*) QUALIFIED=$BASE ;;
  */*) QUALIFIED=docker.io/$BASE ;;
  *) QUALIFIED=docker.io/library/$BASE ;;
esac
SUITE=${BASE##*-}  # python:3.11-slim-bookworm -> bookworm

mkdir -p "$STATE"
# podman's default limits on open files and processes (1048576 and more) are
# above what this kind of VM lets a container ask for: give the systemd unit's
# LimitNOFILE (16384) and 4096 processes, or less where the machine's hard
# limits are lower.  Debian's crun refuses the hybrid cgroup layout found
# here; runc runs it.
limit() { local n; n=$(ulimit -H "$1"); [ "$n" != unlimited ] && [ "$n" -lt "$2" ] && echo "$n" || echo "$2"; }
cat > "$STATE/containers.conf" <<EOF
# Written by tests/image/build.sh.
[containers]
default_ulimits = ["nofile=$(limit -n 16384):$(limit -n 16384)", "nproc=$(limit -u 4096):$(limit -u 4096)"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF="$STATE/containers.conf"
pm() { podman --root "$STATE/storage" --runroot "$STATE/run" "$@"; }

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

if [ "$MODE" = fresh ]; then
  pm rmi --all --force >/dev/null 2>&1 || true
  rm -f "$STATE/base.tar"
fi

base_seconds=0
if [ "$(pm image inspect --format "{{index .Labels \"$STANDIN_LABEL\"}}" "$QUALIFIED" 2>/dev/null)" = "$BASE" ]; then
  echo "stand-in base: reusing $QUALIFIED from $STATE (--fresh makes it anew)"
else
  started=$(now)
  echo "stand-in base: mmdebstrap $SUITE (python3, python3-pip, ca-certificates) ..."
  # As the official slim images do: no recommends, no docs or man pages, no
  # apt lists.  No EXTERNALLY-MANAGED marker: the official image's Python is
  # not Debian's and has none, and the Dockerfile pip-installs into it.
  mmdebstrap --quiet --variant=minbase --mode=root \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --include=python3,python3-pip,python-is-python3,ca-certificates \
    --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
    "$SUITE" "$STATE/base.tar"
  pm import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "LABEL $STANDIN_LABEL=$BASE" \
    --change 'CMD ["python3"]' \
    --quiet "$STATE/base.tar" "$QUALIFIED" >/dev/null
  rm -f "$STATE/base.tar"
  base_seconds=$(elapsed "$started")
  echo "stand-in base: $QUALIFIED made in ${base_seconds}s"
fi

# The real Dockerfile, unchanged.  --format docker keeps HEALTHCHECK (the OCI
# format has no such field); --pull=never keeps the stand-in; the RUN steps
# use the host's network (no CNI bridge, so no iptables needed) and pip in the
# builder stage trusts the host's CA bundle, mounted read-only for the build.
# The build's inputs, hashed as tests/image/test_image.py hashes them, so the
# tests can tell an image built from an older checkout.
source_digest=$(cd "$ROOT" && find Dockerfile .dockerignore pyproject.toml README.md prober -type f \
  ! -path '*/__pycache__/*' ! -name '*.py[cod]' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)
started=$(now)
cache=()
[ "$MODE" = fresh ] && cache=(--no-cache)
pm build --quiet --pull=never --format docker --network=host "${cache[@]}" \
  --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
  --label "org.prober.source-digest=$source_digest" \
  --tag "$IMAGE" --file "$ROOT/Dockerfile" "$ROOT" >/dev/null
build_seconds=$(elapsed "$started")
size=$(pm image inspect --format '{{.Size}}' "$IMAGE")
pm image prune --force --filter until=24h >/dev/null  # old builder stages; the cache keeps recent ones

printf '{"image": "%s", "base": "%s", "size_bytes": %s, "build_seconds": %s, "base_seconds": %s, "mode": "%s"}\n' \
  "$IMAGE" "$BASE" "$size" "$build_seconds" "$base_seconds" "$MODE" > "$STATE/build.json"
awk -v s="$size" -v i="$IMAGE" -v t="$build_seconds" -v m="$MODE" \
  'BEGIN { printf "image %s: %.0f MB, built in %ss (%s)\n", i, s / 1e6, t, m }'
