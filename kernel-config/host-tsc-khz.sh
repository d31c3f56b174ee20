#!/bin/bash
# Print the host TSC rate in kHz (an integer) on stdout.
#
# qemu's tcg guests read the host TSC, so passing this value as
# tsc_early_khz=<kHz> on the guest kernel command line lets the guest skip
# its early TSC/delay calibration, which hangs about 3% of tcg boots.
#
# Sources, most exact first:
#   $RKT_KVM_HOST_TSC_KHZ                       explicit override
#   /sys/devices/system/cpu/cpu0/tsc_freq_khz  (kernels that export it)
#   the kernel log: "tsc: Refined TSC clocksource calibration: N MHz", else
#     "tsc: Detected N MHz processor" (dmesg, then journalctl -k -b)
#   /proc/cpuinfo "cpu MHz"  (equals the TSC rate on VMs and on CPUs without
#     frequency scaling; only an approximation elsewhere, noted on stderr)
# Exits 1 with a message if no source gives a plausible value.
set -euo pipefail

plausible() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 100000 ] && [ "$1" -le 20000000 ]; }

# "2596.122" (MHz) -> "2596122" (kHz), without floating point.
mhz_to_khz() {
  local int=${1%%.*} frac=
  [[ "$1" == *.* ]] && frac=${1#*.}
  frac=${frac}000
  frac=${frac:0:3}
  echo $(( 10#$int * 1000 + 10#$frac ))
}

from_kernel_log() {
  local log mhz
  log=$( { dmesg 2>/dev/null || true; } | grep -E 'tsc: (Refined TSC clocksource calibration:|Detected) [0-9.]+ MHz' || true)
  if [ -z "$log" ] && command -v journalctl >/dev/null; then
    log=$( { journalctl -k -b -q --no-pager 2>/dev/null || true; } \
           | grep -E 'tsc: (Refined TSC clocksource calibration:|Detected) [0-9.]+ MHz' || true)
  fi
  [ -n "$log" ] || return 1
  mhz=$(grep -oE 'Refined TSC clocksource calibration: [0-9.]+' <<<"$log" | tail -n1 | grep -oE '[0-9.]+$' || true)
  [ -n "$mhz" ] || mhz=$(grep -oE 'Detected [0-9.]+ MHz' <<<"$log" | tail -n1 | grep -oE '[0-9.]+' || true)
  [ -n "$mhz" ] || return 1
  mhz_to_khz "$mhz"
}

khz=${RKT_KVM_HOST_TSC_KHZ:-}
if [ -n "$khz" ]; then
  plausible "$khz" || { echo "host-tsc-khz.sh: RKT_KVM_HOST_TSC_KHZ=$khz is not a TSC rate in kHz" >&2; exit 1; }
  echo "$khz"; exit 0
fi

if [ -r /sys/devices/system/cpu/cpu0/tsc_freq_khz ]; then
  khz=$(tr -dc '0-9' </sys/devices/system/cpu/cpu0/tsc_freq_khz)
  if plausible "$khz"; then echo "$khz"; exit 0; fi
fi

if grep -qw tsc /proc/cpuinfo 2>/dev/null; then
  khz=$(from_kernel_log || true)
  if plausible "${khz:-}"; then echo "$khz"; exit 0; fi

  mhz=$(awk -F: '/^cpu MHz/ { gsub(/ /, "", $2); print $2; exit }' /proc/cpuinfo)
  if [ -n "$mhz" ]; then
    khz=$(mhz_to_khz "$mhz")
    if plausible "$khz"; then
      grep -qw constant_tsc /proc/cpuinfo && grep -qw hypervisor /proc/cpuinfo \
        || echo "host-tsc-khz.sh: warning: using /proc/cpuinfo 'cpu MHz' ($mhz), which may differ from the TSC rate on this host" >&2
      echo "$khz"; exit 0
    fi
  fi
fi

echo "host-tsc-khz.sh: cannot determine the host TSC rate (set RKT_KVM_HOST_TSC_KHZ)" >&2
exit 1
