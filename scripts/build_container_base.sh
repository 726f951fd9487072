#!/usr/bin/env bash
# A Debian base image for the container, built from Debian's packages, for machines that reach no
# container registry (only Debian's and PyPI's): debootstrap a minimal bookworm with Python 3.11,
# then `podman import` it (or `docker import`).
#
#   scripts/build_container_base.sh [TAG]      (TAG defaults to localhost/msnewlesions-base:bookworm)
#
# Needs root (debootstrap) and the debootstrap package (`make container-deps` installs it). Elsewhere
# the Containerfile's default base, the official python:3.11-slim-bookworm, needs none of this.
set -euo pipefail
TAG="${1:-localhost/msnewlesions-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ENGINE="${CONTAINER_ENGINE:-$(command -v podman || command -v docker)}"
ROOTFS="$(mktemp -d)"
trap 'rm -rf "$ROOTFS"' EXIT
# python3-venv for the virtual environment, libgomp1 for torch's and SimpleITK's threads,
# ca-certificates for pip over HTTPS, passwd for the non-root user.
debootstrap --variant=minbase --include=python3,python3-venv,libgomp1,ca-certificates,passwd \
  bookworm "$ROOTFS" "$MIRROR" >&2
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar -C "$ROOTFS" -c . | "$ENGINE" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' - "$TAG" >&2
echo "$TAG"
