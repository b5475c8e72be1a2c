"""The build host: the one subprocess wrapper, its requirements, doctor, user namespaces, work on a rootfs."""
