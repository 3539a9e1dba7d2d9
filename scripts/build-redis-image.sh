#!/usr/bin/env bash
# Builds the Redis image the tests and the demo use, without any registry:
# Debian's redis-server and redis-cli, their shared libraries, nothing else,
# imported as a root filesystem.
#
#   scripts/build-redis-image.sh            build unless the image exists
#   scripts/build-redis-image.sh --force    rebuild
set -euo pipefail

IMAGE="${TEST_REDIS_IMAGE:-claude-relay-redis:local}"

if [[ "${1:-}" != "--force" ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "image $IMAGE already present"
  exit 0
fi

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  echo "installing redis-server and redis-tools from Debian's packages"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    redis-server redis-tools >/dev/null
fi

ROOTFS=$(mktemp -d)
trap 'rm -rf "$ROOTFS"' EXIT
mkdir -p "$ROOTFS/usr/bin" "$ROOTFS/tmp" "$ROOTFS/data" "$ROOTFS/etc"
chmod 1777 "$ROOTFS/tmp"

# redis-server is a symlink to redis-check-rdb: copy the file it points at.
cp -L "$(command -v redis-server)" "$ROOTFS/usr/bin/redis-server"
cp -L "$(command -v redis-cli)" "$ROOTFS/usr/bin/redis-cli"
for lib in $( (ldd "$(command -v redis-server)"; ldd "$(command -v redis-cli)") | grep -oE '/[^ ]+' | sort -u); do
  mkdir -p "$ROOTFS$(dirname "$lib")"
  cp -L "$lib" "$ROOTFS$lib"
done

tar -C "$ROOTFS" -c . | docker import \
  --change 'CMD ["/usr/bin/redis-server","--bind","0.0.0.0","--port","6379","--protected-mode","no","--save","","--appendonly","no","--dir","/data"]' \
  --change 'EXPOSE 6379' \
  --change 'WORKDIR /data' \
  - "$IMAGE" >/dev/null

echo "built $IMAGE ($(docker image inspect "$IMAGE" --format '{{.Size}}') bytes)"
