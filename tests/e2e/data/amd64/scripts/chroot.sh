#!/bin/sh
set -eu
# runs inside the image: its own dpkg and its own uname -m binaries
dpkg --print-architecture > /etc/chroot-script
# strips a package's documentation: its licence must still reach the SBOMs
rm -rf /usr/share/doc/jq
