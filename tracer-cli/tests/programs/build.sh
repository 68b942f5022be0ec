#!/bin/sh
# Builds the stack tests' programs into the directory $1: lockstack-c (gcc, frame pointers, symbols
# kept) and lockstack-go (Go, static, stripped with -s -w). Used by tests/kernel/stacks.rs on the
# host and by `cargo xtask vm-test`, which packs the results into the guests.
set -eu
out=$(realpath "$1")
src=$(dirname "$(realpath "$0")")
gcc -O1 -g -fno-omit-frame-pointer -fno-optimize-sibling-calls \
    -o "$out/lockstack-c" "$src/lockstack.c"
# Go wants a cache and a home; CI machines may have neither set.
export GOCACHE="$out/.go-cache" GOPATH="$out/.go-path" HOME="${HOME:-$out}" CGO_ENABLED=0 GOFLAGS=
cd "$src"
go build -ldflags='-s -w' -o "$out/lockstack-go" lockstack.go
