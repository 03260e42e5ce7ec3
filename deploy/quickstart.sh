#!/usr/bin/env bash
# The quickstart: install what vmstore needs, start a whole cluster on this
# machine (master + 3 chunkservers on loopback, data under DIR), store a disk
# image on it with 2 replicas, read it back, and show the cluster's health.
#
# Usage: sudo deploy/quickstart.sh [DIR]     (default DIR: /var/tmp/vmstore-quickstart)
# The cluster keeps running; stop it with: vmstore local down --dir DIR
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-/var/tmp/vmstore-quickstart}"
PYTHON="${PYTHON:-python3}"
vmstore() { "$PYTHON" -m vmstore.cli.main "$@"; }

bash "$REPO/deploy/install-deps.sh"

echo "==> quickstart: starting a local cluster in $DIR"
vmstore local down --dir "$DIR" >/dev/null 2>&1 || true
vmstore local up --dir "$DIR" --chunkservers 3
export VMSTORE_CONFIG="$DIR/vmstore.toml"

echo "==> quickstart: making a 256 MiB raw guest image (data and zeros) with qemu-img"
image="$DIR/guest.img"
rm -f "$image"
qemu-img create -q -f raw "$image" 256M
head -c 64M /dev/urandom | dd of="$image" bs=1M seek=16 conv=notrunc status=none
echo "==> quickstart: storing it in the cluster (acknowledged = on both replicas, fsynced)"
vmstore put "$image" /images/guest.img
echo "==> quickstart: reading it back and comparing"
vmstore get /images/guest.img "$DIR/guest.readback.img"
cmp "$image" "$DIR/guest.readback.img" && echo "    identical: $(sha256sum < "$image" | cut -c1-16)…"
echo "==> quickstart: cluster health"
vmstore status || true
cat <<DONE

The cluster is still running. Try:
  export VMSTORE_CONFIG=$DIR/vmstore.toml
  vmstore status --json
  vmstore local down --dir $DIR      # stop it
DONE
