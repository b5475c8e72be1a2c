#!/bin/sh
set -eu
echo "host script for $IMAGESMITH_NAME ($IMAGESMITH_DEVICE, $IMAGESMITH_ARCH)" > "$ROOTFS/etc/host-script"
