#!/usr/bin/env bash
# Install what the tests need, then run pytest from the repository root.
# Usage: sudo tests/run.sh [pytest args...]   (CI runs it as root, without sudo)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/deploy/install-deps.sh"
cd "$REPO"
if (($# == 0)); then
    set -- tests
fi
exec "${PYTHON:-python3}" -m pytest -q -p no:cacheprovider "$@"
