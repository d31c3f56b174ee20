# The shim's end of runc's --console-socket in the OCI runtime tests:
# listens on argv[1], receives one terminal master (SCM_RIGHTS) and prints
# "name NAME"; once the file argv[2] exists it writes argv[3] to the
# terminal, then copies what the terminal says to stdout until it closes
# (EIO: nobody holds its other end any more) or 120 s have passed. Python,
# because node cannot receive file descriptors.
import os, select, socket, sys, time

path, go_file, text = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(1)
print("listening", flush=True)
conn, _ = s.accept()
msg, fds, _, _ = socket.recv_fds(conn, 1024, 1)
master = fds[0]
print("name", msg.decode(), flush=True)
sent = False
end = time.time() + 120
while time.time() < end:
    if not sent and os.path.exists(go_file):
        os.write(master, text.encode())
        sent = True
    r, _, _ = select.select([master], [], [], 0.2)
    if r:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        sys.stdout.write(data.decode(errors="replace"))
        sys.stdout.flush()
print("\nclosed", flush=True)
