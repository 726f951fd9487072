#!/usr/bin/env bash
# Which container engine to use, and the flags this machine needs to run containers with it.
#
#   scripts/container_engine.sh            prints: ENGINE<TAB>GLOBAL_FLAGS<TAB>RUN_FLAGS
#
# podman, else docker (CONTAINER_ENGINE overrides). Some sandboxes cannot give a container
# podman's default limits (setrlimit refused) or use crun on hybrid cgroups: when a trivial
# container fails with the defaults, runc and modest file and process limits are tried, and
# printed if they work. Other machines get empty flags. IMAGE (default: the built image,
# localhost/msnewlesions:latest) is the image tried.
set -euo pipefail
ENGINE="${CONTAINER_ENGINE:-$(command -v podman || command -v docker || true)}"
if [ -z "$ENGINE" ]; then
  echo "no container engine: install podman (make container-deps) or docker" >&2
  exit 1
fi
IMAGE="${1:-localhost/msnewlesions:latest}"
if "$ENGINE" run --rm --network none --entrypoint true "$IMAGE" >/dev/null 2>&1; then
  printf '%s\t%s\t%s\n' "$ENGINE" "" ""
  exit 0
fi
GLOBAL="--runtime runc"
RUN="--ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
# shellcheck disable=SC2086
if [ "$(basename "$ENGINE")" = podman ] && command -v runc >/dev/null \
  && "$ENGINE" $GLOBAL run --rm --network none $RUN --entrypoint true "$IMAGE" >/dev/null 2>&1; then
  printf '%s\t%s\t%s\n' "$ENGINE" "$GLOBAL" "$RUN"
  exit 0
fi
echo "$ENGINE cannot run a container here, not even $IMAGE with runc and low limits" >&2
exit 1
