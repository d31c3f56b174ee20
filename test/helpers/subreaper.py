# Stands in for containerd's runc shim in the OCI runtime tests: a child
# subreaper that runs one runtime command (argv[4:]) with its output to the
# file argv[2] (the container's stdout and stderr, as the shim's pipes) and
# its input from the file argv[3] ("-": /dev/null, no stdin), then reaps every orphan
# that lands on it and prints "PID STATUS" for each, until the process named
# in the pid file (argv[1]) has been reaped. Python, because node cannot set
# PR_SET_CHILD_SUBREAPER.
import ctypes, os, subprocess, sys

PR_SET_CHILD_SUBREAPER = 36
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
pid_file, out_file, in_file, argv = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
with open(out_file, "ab") as out, open(os.devnull if in_file == "-" else in_file, "rb") as inp:
    rc = subprocess.call(argv, stdin=inp, stdout=out, stderr=out)
print("create", rc, flush=True)
if rc != 0:
    sys.exit(0)
with open(pid_file) as f:
    want = int(f.read().strip())
print("pid", want, flush=True)
while True:
    pid, status = os.waitpid(-1, 0)
    code = os.waitstatus_to_exitcode(status)
    print("reaped", pid, code, flush=True)
    if pid == want:
        break
