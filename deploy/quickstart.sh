#!/usr/bin/env bash
# The quickstart: install what vmstore needs, start a whole cluster on this
# machine (master + 3 chunkservers on loopback, data under DIR, mounted at
# DIR/mnt), put guest images on it with qemu-img, check them, show where
# their replicas live and the cluster's health; then boot a tiny guest with
# its disk on vmstore and live-migrate it between two hosts made of network
# namespaces (deploy/demo_migration.py; skipped, saying why, where QEMU or
# libvirt cannot run).
#
# Usage: sudo deploy/quickstart.sh [DIR]     (default DIR: /var/tmp/vmstore-quickstart)
# The cluster keeps running; stop it with: vmstore local down --dir DIR
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-/var/tmp/vmstore-quickstart}"
PYTHON="${PYTHON:-python3}"
vmstore() { "$PYTHON" -m vmstore.cli.main "$@"; }

bash "$REPO/deploy/install-deps.sh"

echo "==> quickstart: starting a local cluster in $DIR (master, 3 chunkservers, FUSE mount)"
vmstore local down --dir "$DIR" >/dev/null 2>&1 || true
vmstore local up --dir "$DIR" --chunkservers 3
export VMSTORE_CONFIG="$DIR/vmstore.toml"
MNT="$DIR/mnt"

echo "==> quickstart: a 256 MiB raw guest image on local disk (64 MiB of data, the rest zeros)"
source_image="$DIR/guest-source.img"
rm -f "$source_image"
qemu-img create -q -f raw "$source_image" 256M
head -c 64M /dev/urandom | dd of="$source_image" bs=1M seek=16 conv=notrunc status=none
echo "==> quickstart: qemu-img convert onto the mount, as qcow2 and raw"
mkdir -p "$MNT/images"
qemu-img convert -O qcow2 "$source_image" "$MNT/images/guest.qcow2"
qemu-img convert -O raw "$source_image" "$MNT/images/guest.img"
qemu-img compare -q "$source_image" "$MNT/images/guest.qcow2" && echo "    qcow2 copy identical"
qemu-img compare -q "$source_image" "$MNT/images/guest.img" && echo "    raw copy identical"
qemu-img create -q -f raw "$MNT/images/big-sparse.img" 100G
ls -ls "$MNT/images"
echo "==> quickstart: where the raw image's chunks live (2 replicas on distinct hosts)"
vmstore fileinfo "$MNT/images/guest.img"
echo "==> quickstart: cluster health"
vmstore status || true
echo "==> quickstart: live migration of a running guest whose disk is on vmstore"
"$PYTHON" "$REPO/deploy/demo_migration.py" "$DIR/demo"
cat <<DONE

The cluster is still running, mounted at $MNT. Try:
  export VMSTORE_CONFIG=$DIR/vmstore.toml
  vmstore status --json
  vmstore local down --dir $DIR      # unmount and stop it
DONE
