#!/bin/sh
# Builds the static binaries and the go-kvdb image, with no registry:
#
#   ./deploy/build.sh                  # tags go-kvdb:dev
#   IMAGE=go-kvdb:v1 ./deploy/build.sh
set -eu
cd "$(dirname "$0")/.."
image=${IMAGE:-go-kvdb:dev}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/bin" "$ctx/data"
CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w" -o "$ctx/bin/" ./cmd/router ./cmd/storaged
docker build -q -t "$image" -f deploy/Dockerfile "$ctx"
echo "built $image"
