# Sourced by guest/boot-test.sh (uses its boot/finish/make_pod/fail/log):
# `rkt enter`-style sessions through the guest agent while a long-running
# app is up, then an orderly stop through the ACPI power button.

# wait_for FILE TEXT SECONDS: until a line of FILE (timestamp first) has TEXT.
wait_for() {
  local i
  for i in $(seq $(($3 * 20))); do
    grep -qF -- "$2" "$1" 2>/dev/null && return 0
    kill -0 "$qemu_pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# session DESC WANT_RC WANT_STDOUT CLIENT-ARGS...: one session; stdin from
# $session_stdin (default /dev/null). Compares exit status and stdout.
session() {
  local desc=$1 want_rc=$2 want_out=$3 rc=0 out
  shift 3
  timeout -k 5 60 node "$client" "$run/agent.sock" "$@" <"${session_stdin:-/dev/null}" >"$run/s.out" 2>"$run/s.err" || rc=$?
  out=$(tr -d '\r' <"$run/s.out")
  if [ "$rc" = "$want_rc" ] && [ "$out" = "$want_out" ]; then
    log "ok   $mode enter: $desc"
  else
    fail "$mode enter: $desc: status $rc (want $want_rc), stdout '$out' (want '$want_out'), stderr '$(cat "$run/s.err")'"
  fi
}

# qmp COMMAND: one QMP command on the pod's monitor socket.
qmp() {
  python3 - "$run/qmp.sock" "$1" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile('rw')
f.readline()  # greeting
for cmd in ('qmp_capabilities', sys.argv[2]):
    f.write(json.dumps({'execute': cmd}) + '\n'); f.flush()
    while 'return' not in (r := json.loads(f.readline())):
        if 'error' in r: sys.exit(r['error']['desc'])
EOF
}

enter_test() {
  local mode=$1 run=$work/$1-enter pod=$work/$1-pod-enter t rc pid st
  make_pod "$pod" hello sleeper
  boot "$run" "$mode" "$pod"
  if ! wait_for "$run/stdout.log" "sleeper up" 60; then
    fail "$mode enter: the long-running app did not start (console: $run/console.log)"
    kill -9 "$qemu_pid" 2>/dev/null || true
    finish "$run" 5
    return
  fi
  # hello has exited (status 3) but sleeper runs: the VM must stay up
  sleep 0.3
  kill -0 "$qemu_pid" 2>/dev/null || fail "$mode enter: the VM powered off with an app still running"

  t=$EPOCHREALTIME
  session "/bin/echo in the app rootfs" 0 "hello from enter" sleeper -- /bin/echo hello from enter
  log "     first session took $(elapsed "$t" "$EPOCHREALTIME")s (node start included)"
  printf 'line1\nline2\n' > "$run/in.txt"
  session_stdin=$run/in.txt session "stdin passed through" 0 "$(printf 'line1\nline2')" sleeper -- /bin/cat
  session "exit status" 7 "" sleeper -- /bin/sh -c 'exit 7'
  session "killed by a signal: 128 + 15" 143 "" sleeper -- /bin/sh -c 'kill -TERM $$'
  session "command not found: 127" 127 "" sleeper -- /bin/nope
  grep -q 'No such file' "$run/s.err" || fail "$mode enter: no message for a missing command: $(cat "$run/s.err")"
  session "no such app: 125" 125 "" nosuchapp -- /bin/true
  session "uid, gid, groups, cwd" 0 "$(printf '1000 1000 1000 10 20\n/tmp')" \
    sleeper --uid 1000 --gid 1000 --groups 10,20 --cwd /tmp -- /bin/sh -c 'echo $(id -u) $(id -g) $(id -G); pwd'
  session "environment and PATH search" 0 "bar" sleeper --env FOO=bar -- sh -c 'echo $FOO'
  session "stderr kept apart" 0 "" sleeper -- /bin/sh -c 'echo to-err >&2'
  grep -qx 'to-err' "$run/s.err" || fail "$mode enter: stderr not passed through: '$(cat "$run/s.err")'"
  session "inside the app's mount namespace (/proc, /dev)" 0 "yes" sleeper -- /bin/sh -c '[ -e /proc/self/stat ] && [ -c /dev/null ] && echo yes'
  session "tty" 0 "$(printf '/dev/pts/0\nyes')" sleeper --tty -- /bin/sh -c 'tty; [ -t 0 ] && echo yes'
  head -c 300000 /dev/urandom > "$run/big.in"
  timeout -k 5 60 node "$client" "$run/agent.sock" sleeper -- /bin/cat <"$run/big.in" >"$run/big.out" 2>"$run/s.err" || true
  if cmp -s "$run/big.in" "$run/big.out"; then log "ok   $mode enter: 300 KB through stdin and back"
  else fail "$mode enter: 300 KB round trip: got $(stat -c %s "$run/big.out") bytes"; fi

  # A client that dies mid-session: the agent must kill the command and be
  # ready for the next session.
  node "$client" "$run/agent.sock" sleeper -- /bin/sh -c 'echo started; sleep 3; touch /tmp/survived' >"$run/bg.out" 2>&1 &
  pid=$!
  for _ in $(seq 200); do grep -q started "$run/bg.out" && break; sleep 0.05; done
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
  t=$EPOCHREALTIME
  session "next session after a client was killed mid-session" 0 "after" sleeper -- /bin/echo after
  log "     ... answered $(elapsed "$t" "$EPOCHREALTIME")s after the kill"
  sleep 3.5
  [ ! -e "$pod/opt/stage2/sleeper/rootfs/tmp/survived" ] && log "ok   $mode enter: the abandoned command was killed" \
    || fail "$mode enter: the abandoned command survived its client"

  # Orderly stop: QMP system_powerdown -> ACPI power button -> agent ->
  # systemd poweroff.target -> sleeper gets SIGTERM, its ExecStopPost records
  # 143 and powers off.
  t=$EPOCHREALTIME
  qmp system_powerdown || fail "$mode: QMP system_powerdown failed"
  finish "$run" 30
  st="$(cat "$pod/rkt/status/hello" 2>/dev/null)/$(cat "$pod/rkt/status/sleeper" 2>/dev/null)"
  if [ "$qemu_rc" = 0 ] && [ "$st" = 3/143 ]; then
    log "ok   $mode: orderly stop (system_powerdown) in $(elapsed "$t" "$t_exit")s; statuses hello=3 sleeper=143"
  else
    fail "$mode: orderly stop: qemu status $qemu_rc, statuses hello/sleeper '$st' (console: $run/console.log)"
  fi
  grep -q 'sleeper stderr' "$run/stderr.log" && grep -q 'hi from app' "$run/stdout.log" \
    && log "ok   $mode: output of both apps arrived (rkt.stdout and rkt.stderr)" \
    || fail "$mode: app output missing: stdout '$(cut -d' ' -f2- "$run/stdout.log" | tr '\n' '|')' stderr '$(cut -d' ' -f2- "$run/stderr.log" | tr '\n' '|')'"
}
