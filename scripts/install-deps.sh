#!/usr/bin/env bash
# Installs the system packages Terroir's tests need when they are missing:
# redis-server (tests talk to a real Redis), Node.js with npm (the
# official openai npm package runs against the stack), and chromium,
# libnss3-tools and openssl (the review console's browser tests drive a
# headless Chromium that presents a reviewer's client certificate from an
# NSS database). Uses apt-get as root, or sudo.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
{ command -v certutil >/dev/null 2>&1 && command -v pk12util >/dev/null 2>&1; } || missing+=(libnss3-tools)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
	echo "install-deps: missing ${missing[*]} and cannot install it (not root, no sudo)" >&2
	exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "install-deps: missing ${missing[*]}; install it with your package manager" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian package starts a system Redis on 6379; tests start their own.
for c in redis-server node npm chromium certutil pk12util openssl; do
	command -v "$c" >/dev/null 2>&1 || { echo "install-deps: $c is still missing" >&2; exit 1; }
done
