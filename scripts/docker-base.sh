#!/usr/bin/env bash
# Makes the debian:bookworm base image locally when it is missing. This machine
# (and CI) cannot pull from any image registry, so the image the Dockerfile
# starts FROM is built from Debian's own archive: `debootstrap --variant=minbase
# bookworm` into a temp dir, then `docker import`. Idempotent: an existing image
# is left alone, so the second run costs one `docker image inspect`.
#
#   scripts/docker-base.sh [IMAGE]      (default debian:bookworm)
#   DEBIAN_MIRROR=http://host/debian scripts/docker-base.sh
#
# The mirror defaults to the one apt is configured with on this host.
#
# Exit 0 the image exists (made now or before); 3 it cannot be made on this
# machine: not root, no debootstrap and apt cannot install it, or the Debian
# mirror is unreachable (the image test turns this into a SKIP, with the last
# line on stderr as the reason); 1 any other failure.
set -euo pipefail

image=${1:-debian:bookworm}
docker=${DOCKER:-docker}

if $docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi
cannot() { echo "docker-base: cannot make $image here: $*" >&2; exit 3; }
if [[ $(id -u) -ne 0 ]]; then
  cannot "debootstrap needs root (run: sudo $0 $image)"
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  echo "docker-base: installing debootstrap" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null 2>&1; } ||
    cannot "debootstrap is not installed and apt-get could not install it (no Debian mirror reachable?)"
fi

# The archive apt already uses for bookworm (deb822 .sources or one-line .list).
mirror=${DEBIAN_MIRROR:-}
if [[ -z "$mirror" ]]; then
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    mirror=$(awk '
      /^URIs:/ { uri = $2 } /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") ok = 1 }
      /^$/ { if (ok && uri !~ /security/) { print uri; exit } uri = ""; ok = 0 }
      END { if (ok && uri !~ /security/) print uri }' "$f" | head -1)
    [[ -n "$mirror" ]] && break
  done
fi
if [[ -z "$mirror" && -f /etc/apt/sources.list ]]; then
  mirror=$(awk '$1 == "deb" && $3 == "bookworm" && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list)
fi
mirror=${mirror:-http://deb.debian.org/debian}

# Fail fast, and say why, when the mirror cannot be reached (debootstrap would
# retry and then fail with a less obvious message).
if [[ "$mirror" =~ ^https?:// ]] && command -v curl >/dev/null 2>&1; then
  if ! err=$(curl -fsS -o /dev/null --max-time 20 "$mirror/dists/bookworm/Release" 2>&1); then
    cannot "the Debian mirror $mirror is unreachable (${err:-no answer}); set DEBIAN_MIRROR to one that is"
  fi
fi

root=$(mktemp -d /tmp/canaryd-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "docker-base: debootstrap --variant=minbase bookworm from $mirror (a few minutes)" >&2
if ! debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1; then
  tail -20 "$root.log" >&2
  # A download failure is the mirror, not us.
  if grep -qE "Failed getting release file|Couldn't download|Could not resolve|Temporary failure|Connection (refused|timed out)" "$root.log"; then
    rm -f "$root.log"
    cannot "debootstrap could not download from $mirror (see above)"
  fi
  rm -f "$root.log"; exit 1
fi
rm -f "$root.log"

# What the official image carries: the three bookworm suites, no cached lists.
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian}/debian-security bookworm-security main
SOURCES
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
: >"$root/etc/hostname"

tar -C "$root" --numeric-owner -c . |
  $docker import --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$image" >/dev/null
echo "docker-base: made $image ($($docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))" >&2
