#!/bin/bash
# arm64 guests (what Apple Silicon runs): virt, -cpu max under TCG, Debian
# trixie's 6.12 arm64 kernel, the apple_dma module cross-built in the root.
# Usage: tests/e2e/run-arm64.sh [identity] [apple] [module]   (see run.sh)
E2E_ARCH=arm64 exec "$(dirname "$0")/run.sh" "$@"
