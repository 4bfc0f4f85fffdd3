#!/usr/bin/env bash
# Make sure the embedded default dataset (Fashion-MNIST, Debian package dataset-fashion-mnist) is installed.
# Installs it when the files are missing and apt is usable (root, or passwordless sudo); otherwise prints
# exactly what to run.
set -euo pipefail
DIR=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

have_all() { for f in "${FILES[@]}"; do [ -s "$DIR/$f" ] || return 1; done; }

if have_all; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi
  if [ "$SUDO" != none ]; then
    echo ">>> installing Fashion-MNIST: apt-get install dataset-fashion-mnist"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist
    have_all && exit 0
  fi
fi
echo "error: Fashion-MNIST is missing in $DIR. Run:" >&2
echo "  sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist" >&2
echo "or put the four IDX .gz files in a folder and pass data.root=/that/folder" >&2
exit 1
