#!/usr/bin/env bash
# make container: build the image msnewlesions:<version> and msnewlesions:latest.
#
# Engine: podman, else docker (CONTAINER_ENGINE overrides). Base: CONTAINER_BASE, else the
# official python:3.11-slim-bookworm; when that cannot be pulled (no registry reachable), a
# Debian base is built from Debian's packages (scripts/build_container_base.sh) and used.
# CONTAINER_WHEELS: folders of wheels (space-separated) pip may take instead of downloading;
# PIP_CERT (pip's own variable): a CA bundle for a proxy in front of PyPI. Both are mounted into
# the build only (podman), never copied into the image.
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE="${CONTAINER_ENGINE:-$(command -v podman || command -v docker || true)}"
if [ -z "$ENGINE" ]; then
  echo "make container needs podman or docker (make container-deps installs podman)" >&2
  exit 1
fi
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"
DEFAULT_BASE=docker.io/library/python:3.11-slim-bookworm
LOCAL_BASE=localhost/msnewlesions-base:bookworm
BASE="${CONTAINER_BASE:-$DEFAULT_BASE}"
if ! "$ENGINE" image inspect "$BASE" >/dev/null 2>&1 \
  && ! timeout 120 "$ENGINE" pull -q "$BASE" >/dev/null 2>&1; then
  if [ -n "${CONTAINER_BASE:-}" ]; then
    echo "the base image $BASE is neither here nor reachable" >&2
    exit 1
  fi
  echo "$DEFAULT_BASE cannot be pulled here: using a Debian base built from Debian's packages" >&2
  BASE="$LOCAL_BASE"
  "$ENGINE" image inspect "$BASE" >/dev/null 2>&1 || scripts/build_container_base.sh "$BASE" >/dev/null
fi
IFS=$'\t' read -r ENGINE GLOBAL RUN < <(scripts/container_engine.sh "$BASE")
BUILD=(--build-arg "BASE=$BASE" -t "localhost/msnewlesions:$VERSION" -t localhost/msnewlesions:latest)
if [ "$(basename "$ENGINE")" = podman ]; then
  LINKS=""
  index=0
  for folder in ${CONTAINER_WHEELS:-}; do
    BUILD+=(-v "$folder:/build-wheels/$index:ro")
    LINKS="$LINKS /build-wheels/$index"
    index=$((index + 1))
  done
  [ -z "$LINKS" ] || BUILD+=(--build-arg "PIP_FIND_LINKS=${LINKS# }")
  # The host's CA bundle, where pip here is told to use one (a proxy in front of PyPI).
  CERT="${PIP_CERT:-}"
  if [ -n "$CERT" ] && [ -f "$CERT" ]; then
    BUILD+=(-v "$CERT:/build-ca.crt:ro" --build-arg PIP_CERT=/build-ca.crt)
  fi
fi
# shellcheck disable=SC2086
"$ENGINE" $GLOBAL build $RUN "${BUILD[@]}" -f Containerfile .
"$ENGINE" image inspect localhost/msnewlesions:latest --format '{{.Size}}' \
  | awk -v v="$VERSION" '{printf "built localhost/msnewlesions:%s (and :latest), %.1f GB\n", v, $1 / 1e9}'
