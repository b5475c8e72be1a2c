#!/bin/sh
# what a host script sees of the builder's environment
env > env.txt
