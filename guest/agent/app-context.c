/*
 * The context an `rkt enter` command runs in: the app's own, as far as the
 * agent can take it from a running process of the app.
 *
 * Why more than a chroot: the agent runs with every capability, in its own
 * cgroup, with the guest's whole /dev. systemd gave the app's unit less: a
 * mount namespace with the app's /proc, /sys and a private /dev
 * (PrivateDevices=), a cgroup whose device policy lets it open only the
 * usual pseudo-devices, a capability bounding set without CAP_MKNOD and
 * CAP_SYS_RAWIO, and perhaps no_new_privs. A command entered with the
 * agent's context would hold what the app does not (CAP_MKNOD and an
 * unrestricted cgroup are enough to make and open the device node of the
 * agent's own port), and it runs the app's binaries, which a hostile app
 * may have replaced. So the child joins the app's cgroup and namespaces and
 * takes its bounding set and no_new_privs. What it does not take: the
 * unit's seccomp filter (PrivateDevices= adds one for @raw-io; a filter
 * cannot be copied from another process) and ambient capabilities.
 */
#define _GNU_SOURCE
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define CGROUP_ROOT "/sys/fs/cgroup"

/* Where systemd puts the processes of the app's unit, <app>.service. */
#define APP_CGROUP_FMT CGROUP_ROOT "/system.slice/%s.service/cgroup.procs"

/*
 * A /proc/<pid> directory of a process of the app: one in its unit's
 * cgroup, whose root is the app's rootfs, in a mount namespace other than
 * ours (the unit's ExecStartPost/ExecStopPost hooks run in ours). The
 * descriptor pins that process: if it exits, reads through it fail rather
 * than reach a process that reused its pid. -1 if there is none.
 *
 * The root is compared by inode number only: over virtio-fs, each mount
 * namespace gets its own superblock for a submount of the share (the app's
 * rootfs is an overlay mount on the host), so the app's root and the
 * agent's view of the same directory differ in st_dev.
 */
static int find_app_process(const char *app, const char *root)
{
	struct stat want, self, st;
	char path[512], pids[65536], *p, *end;
	int fd, dfd = -1;
	ssize_t n, total = 0;

	if (stat(root, &want) < 0 || stat("/proc/self/ns/mnt", &self) < 0) return -1;
	snprintf(path, sizeof path, APP_CGROUP_FMT, app);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) return -1;
	/* the first pids are enough: any process of the app will do */
	while ((size_t)total < sizeof pids - 1 && (n = read(fd, pids + total, sizeof pids - 1 - total)) > 0) total += n;
	close(fd);
	pids[total] = 0;
	for (p = pids; dfd < 0 && *p; p = end) {
		long pid = strtol(p, &end, 10);
		if (end == p || (*end && *end != '\n')) break; /* a cut-off last line, or not a pid list */
		if (*end) end++;
		snprintf(path, sizeof path, "/proc/%ld", pid);
		if (pid <= 0 || (dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) continue;
		if (fstatat(dfd, "root/", &st, 0) < 0 || !S_ISDIR(st.st_mode) || st.st_ino != want.st_ino ||
		    fstatat(dfd, "ns/mnt", &st, 0) < 0 || st.st_ino == self.st_ino) {
			close(dfd);
			dfd = -1;
		}
	}
	return dfd;
}

/* Reads a small file below /proc/<pid> into buf (NUL-terminated). */
static int read_proc_file(int dfd, const char *name, char *buf, size_t size)
{
	int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
	ssize_t n, total = 0;
	if (fd < 0) return -1;
	while ((size_t)total < size - 1 && (n = read(fd, buf + total, size - 1 - total)) > 0) total += n;
	close(fd);
	buf[total] = 0;
	return total > 0 ? 0 : (errno = ENODATA, -1);
}

/* Moves the caller into the cgroup (v2) of the process. */
static int join_cgroup(int dfd)
{
	char line[4096], path[4200];
	char *p, *nl;
	int fd, rc;
	if (read_proc_file(dfd, "cgroup", line, sizeof line) < 0) return -1;
	/* unified hierarchy only: "0::/system.slice/<app>.service" */
	if (strncmp(line, "0::/", 4) != 0 || !(nl = strchr(line, '\n'))) return errno = EPROTO, -1;
	*nl = 0;
	p = line + 3;
	if (strstr(p, "/..") || strlen(p) > sizeof path - sizeof CGROUP_ROOT "/cgroup.procs") return errno = EPROTO, -1;
	snprintf(path, sizeof path, CGROUP_ROOT "%s/cgroup.procs", p);
	if ((fd = open(path, O_WRONLY | O_CLOEXEC)) < 0) return -1;
	rc = write(fd, "0", 1) == 1 ? 0 : -1; /* "0": the writing process */
	close(fd);
	return rc;
}

/* The process's bounding set and no_new_privs, from its status file. */
static int read_limits(int dfd, unsigned long long *bnd, int *nnp)
{
	char status[8192], *p;
	if (read_proc_file(dfd, "status", status, sizeof status) < 0) return -1;
	if (!(p = strstr(status, "\nCapBnd:")) || sscanf(p + 8, "%llx", bnd) != 1) return errno = EPROTO, -1;
	*nnp = (p = strstr(status, "\nNoNewPrivs:")) && atoi(p + 12) == 1;
	return 0;
}

/* Joins the process's namespaces where they differ from ours; mnt last, since it changes /proc. */
static int join_namespaces(int dfd)
{
	static const char *const kinds[] = { "ipc", "uts", "net", "mnt" };
	for (int i = 0; i < 4; i++) {
		char mine[32], theirs[16];
		struct stat st, own;
		int fd, rc;
		snprintf(mine, sizeof mine, "/proc/self/ns/%s", kinds[i]);
		snprintf(theirs, sizeof theirs, "ns/%s", kinds[i]);
		if ((fd = openat(dfd, theirs, O_RDONLY | O_CLOEXEC)) < 0) return -1;
		/* setns() to one's own is harmless but useless */
		rc = fstat(fd, &st) == 0 && stat(mine, &own) == 0 && st.st_ino == own.st_ino ? 0 : setns(fd, 0);
		close(fd);
		if (rc < 0) return -1;
	}
	return 0;
}

/*
 * Keeps only the capabilities in bnd for what the command executes: an exec
 * as root gets the bounding set as its permitted set (with an empty
 * inheritable set, which is cleared here); setuid() to another user drops
 * them all anyway. The capabilities held now are kept until the exec: the
 * steps before it (setgroups, setgid, setuid) need them.
 */
static int limit_capabilities(unsigned long long bnd)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct data[2];
	for (int cap = 0; cap < 64; cap++) {
		if (bnd & (1ULL << cap)) continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
			if (errno == EINVAL) break; /* past the kernel's last capability */
			return -1;
		}
	}
	if (syscall(SYS_capget, &h, data) < 0) return -1;
	data[0].inheritable = data[1].inheritable = 0;
	return syscall(SYS_capset, &h, data) < 0 ? -1 : 0;
}

int enter_app_context(const char *app, const char *root, int *step)
{
	unsigned long long bnd;
	int nnp = 0, dfd = find_app_process(app, root);

	if (dfd < 0) {
		/* No running process of the app: a plain chroot, held to what a
		 * unit with PrivateDevices= may never hold either. */
		*step = STEP_CHROOT;
		if (chroot(root) < 0) return -1;
		*step = STEP_CAPS;
		return limit_capabilities(~((1ULL << CAP_MKNOD) | (1ULL << CAP_SYS_RAWIO)));
	}
	/* Read everything first: once in the app's mount namespace, this
	 * /proc/<pid> is still the same process, but fail early. */
	*step = STEP_CAPS;
	if (read_limits(dfd, &bnd, &nnp) < 0) goto fail;
	*step = STEP_CGROUP;
	if (join_cgroup(dfd) < 0) goto fail;
	*step = STEP_NAMESPACES;
	if (join_namespaces(dfd) < 0) goto fail;
	*step = STEP_CAPS;
	if (limit_capabilities(bnd) < 0) goto fail;
	if (nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) goto fail;
	close(dfd);
	return 0;
fail:
	{
		int err = errno;
		close(dfd);
		errno = err;
	}
	return -1;
}
