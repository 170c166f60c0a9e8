#!/bin/sh
# AADSSHLoginForLinux entry point, named by HandlerManifest.json and run by the guest agent as
# `/bin/sh -c "<handler>/handler/aadsshlogin-handler.sh <command>"`.
#
# It picks the self-contained executable for this machine's architecture and runs it. When that
# executable cannot run (an architecture we do not ship, a missing file, /var mounted noexec, a C
# library too old for it), it writes an error status for the agent itself and exits 52, so the
# operator reads why instead of a bare "exit code 126". (When the whole handler folder is on a
# noexec file system, this script cannot start either: the agent then reports exit code 126 and
# adds its own warning that /var is mounted noexec.)
set -u

RUNTIME_CANNOT_START=52
# The folder above this script's (without running dirname: every enable starts here).
case "$0" in
  */*) script_folder=${0%/*} ;;
  *) script_folder=. ;;
esac
root=$(CDPATH= cd -- "$script_folder/.." && pwd -P) || exit "$RUNTIME_CANNOT_START"
verb=${1:-}
machine=$(uname -m 2>/dev/null || echo unknown)

case "$machine" in
  x86_64 | amd64) platform=linux-x64 ;;
  aarch64 | arm64) platform=linux-arm64 ;;
  *) platform= ;;
esac
executable="$root/bin/$platform/aadsshlogin-handler"

# The value of "key" in the one-line JSON the agent writes as HandlerEnvironment.json.
environment_value() {
  sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"\\([^\"]*\\)\".*/\\1/p" \
    "$root/HandlerEnvironment.json" 2>/dev/null | head -n 1
}

# The agent's sequence number, else the newest config/<n>.settings, else 0.
sequence_number() {
  case "${ConfigSequenceNumber:-}" in
    '' | *[!0-9]*) ;;
    *) echo "$ConfigSequenceNumber" && return ;;
  esac
  newest=$(ls -t "$1" 2>/dev/null | grep -E '^[0-9]+\.settings$' | head -n 1)
  echo "${newest%.settings}" | grep -E '^[0-9]+$' || echo 0
}

# Writes an error status (atomically: temporary file, then rename) and exits 52.
cannot_start() {
  reason=$1
  status_folder=$(environment_value statusFolder)
  config_folder=$(environment_value configFolder)
  log_folder=$(environment_value logFolder)
  [ -n "$status_folder" ] || status_folder="$root/status"
  [ -n "$config_folder" ] || config_folder="$root/config"
  seq=$(sequence_number "$config_folder")
  case "$verb" in
    install) operation=Install ;; enable) operation=Enable ;; disable) operation=Disable ;;
    uninstall) operation=Uninstall ;; update) operation=Update ;; *) operation=Unknown ;;
  esac
  message="$operation failed: the handler's executable cannot run on this VM: $reason Check that the VM is x86_64 or aarch64 and that /var/lib/waagent is not mounted noexec, then retry."
  message=$(printf '%s' "$message" | tr -d '\000-\037' | sed 's/\\/\\\\/g; s/"/\\"/g')
  now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  mkdir -p "$status_folder" 2>/dev/null
  temporary="$status_folder/.$seq.status.$$.tmp"
  if printf '[{"version":1.0,"timestampUTC":"%s","status":{"name":"Microsoft.Azure.ActiveDirectory.AADSSHLoginForLinux","operation":"%s","status":"error","code":%s,"formattedMessage":{"lang":"en-US","message":"%s"},"substatus":[]}}]' \
    "$now" "$operation" "$RUNTIME_CANNOT_START" "$message" >"$temporary" 2>/dev/null; then
    mv -f "$temporary" "$status_folder/$seq.status" 2>/dev/null || rm -f "$temporary"
  fi
  if [ -n "$log_folder" ] && mkdir -p "$log_folder" 2>/dev/null; then
    printf '%s ERROR [%s seq=%s v=%s pid=%s] handler/aadsshlogin-handler.sh: %s\n' "$now" "$verb" "$seq" \
      "${AZURE_GUEST_AGENT_EXTENSION_VERSION:-unknown}" "$$" "$message" \
      >>"$log_folder/aadsshlogin-handler.log" 2>/dev/null
  fi
  echo "$message"
  exit "$RUNTIME_CANNOT_START"
}

[ -n "$platform" ] || cannot_start "this handler ships executables for x86_64 and aarch64, and this machine is $machine."
[ -f "$executable" ] || cannot_start "$executable is missing."
# The agent adds the execute bit to every file it unzips; do the same when run some other way.
[ -x "$executable" ] || chmod u+x "$executable" 2>/dev/null
# test -x fails on a file system mounted noexec even when the mode allows it.
[ -x "$executable" ] || cannot_start "$executable cannot be executed (is its file system mounted noexec?)."

# JavaScriptCore runs the handler in its interpreter: a command is short and waits on files and
# programs, and the JIT compilers it would load cost ≈8 MiB and ≈8 ms per enable
# (docs/performance.md).
BUN_JSC_useJIT=0 "$executable" "$@"
code=$?
# 126 and 127 come from the system, not from the handler (whose codes are in its catalogue): the
# executable could not be started, for example because the C library is too old for it.
case "$code" in
  126 | 127) cannot_start "starting $executable failed with exit code $code (see stderr)." ;;
esac
exit "$code"
