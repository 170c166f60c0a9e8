#!/usr/bin/env bash
# `npm test`: everything CI runs, on a fresh Debian 12 machine as root. Installs from Debian's
# packages what the tests need, checks formatting and types, builds the zips, and runs the unit
# tests and the tests of the built zips.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: openssl (protected settings), binutils (objdump: glibc symbol
# versions), file, python3 (unzips like the agent does), python3-distro + python3-distutils (the
# real agent's code, from `apt-get download waagent`, imports them to judge status files),
# util-linux (unshare, nsenter, mount namespaces), iproute2 (`ip`: the IMDS address in the test
# worlds' network namespaces), qemu-user-static + libc6-arm64-cross (run the arm64 executable),
# gpg + gpgv (test keys, and checking that the keyrings we write verify signatures), and for the
# real package managers (test/package/repos.ts, roots.ts): debootstrap (the Debian root), dnf,
# zypper, rpm (rpmbuild, rpmsign), createrepo-c, apt-utils (apt-ftparchive), dpkg-dev, gpg-agent
# (gpg signs through it); git (the build and release tests clone HEAD) and xz-utils (the release
# looks into .xz executables).
packages=(openssl binutils file python3 python3-distro python3-distutils util-linux iproute2
  qemu-user-static libc6-arm64-cross gpg gpgv debootstrap dnf zypper rpm createrepo-c apt-utils
  dpkg-dev gpg-agent git xz-utils)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "missing Debian packages (run as root to install them): ${missing[*]}" >&2
    exit 1
  fi
fi

[ -d node_modules ] || npm ci
npm run lint
npm run package
# A test that runs longer than 15 minutes fails instead of holding CI until its limit.
node_modules/.bin/tsx --test --test-reporter=spec --test-concurrency=2 --test-timeout=900000 \
  test/unit/*.test.ts test/package/*.test.ts
