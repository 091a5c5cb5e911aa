#!/bin/bash
# x86_64 guests: q35 under TCG, Debian bookworm's 6.1 kernel by default.
# Usage: tests/e2e/run-x86.sh [identity] [apple] [module]   (see run.sh)
E2E_ARCH=amd64 exec "$(dirname "$0")/run.sh" "$@"
