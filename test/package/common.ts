/**
 * Small things the package tests (vm.test.ts, repos.test.ts) share that belong to none of the test
 * beds (agent-driver.ts, repos.ts, roots.ts, world.ts): timing a step, and a real distribution's
 * file for the stand-in packages to edit.
 */

/** What {@link timed} reports to: node:test's test context `t`. */
export type Diagnostic = { diagnostic(message: string): void };

/** Runs `fn`, reports how long it took, and returns its result. */
export async function timed<T>(t: Diagnostic, label: string, fn: () => Promise<T>): Promise<T> {
  const start = performance.now();
  try {
    return await fn();
  } finally {
    t.diagnostic(`${label}: ${((performance.now() - start) / 1000).toFixed(2)} s`);
  }
}

/**
 * Debian 12's /etc/ssh/sshd_config (trimmed to the lines that matter), so that the stand-ins are
 * seen editing a real file and their removal is seen restoring it byte for byte.
 */
export const DEBIAN_SSHD_CONFIG = `
# This is the sshd server system-wide configuration file.  See
# sshd_config(5) for more information.

Include /etc/ssh/sshd_config.d/*.conf

#PermitRootLogin prohibit-password
KbdInteractiveAuthentication no
UsePAM yes
X11Forwarding yes
PrintMotd no

# Allow client to pass locale environment variables
AcceptEnv LANG LC_*

# override default of no subsystems
Subsystem	sftp	/usr/lib/openssh/sftp-server
`.trimStart();
