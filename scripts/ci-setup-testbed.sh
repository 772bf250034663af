#!/usr/bin/env bash
#: CI: build the real test hosts (base cached under TESTBED_DIR when the CI cache restores it) and boot the
#: shared hosts tb1..tb5, so that the testbed integration tests run instead of skipping (CI=true).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
started=$SECONDS
"$here/testbed.sh" setup "${TESTBED_HOSTS:-5}"
"$here/testbed.sh" status
echo "testbed ready in $((SECONDS - started))s" >&2
