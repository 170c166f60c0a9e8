import { HandlerFailure } from '../failures.js';
import type { Clock } from '../io/clock.js';
import type { Log } from '../io/log.js';

/**
 * Who holds the package manager's locks: dpkg, rpm and tdnf take kernel file locks, which
 * /proc/locks lists with the holder's pid and the file's device and inode; zypper (zypp.pid), yum
 * and dnf (`*.pid`) write the holder's pid into a pid file, which counts while that process lives.
 * The lock files exist whether or not anyone holds them, so existence means nothing. Two names of
 * one file (/var/run is a link to /run, /var/lib/rpm one to /usr/lib/sysimage/rpm) name its
 * holder once.
 */
export interface LockHolder {
  file: string;
  pid: number;
  /** The holder's name from /proc/<pid>/comm, e.g. `unattended-upgr`. */
  command: string;
}

/** What the search reads of the VM. */
export interface LockProbe {
  readText(file: string): Promise<string | undefined>;
  /** Device (major, minor) and inode of a file, or `undefined` when it does not exist. */
  identity(file: string): Promise<{ major: number; minor: number; inode: bigint } | undefined>;
}

interface KernelLock {
  pid: number;
  major: number;
  minor: number;
  inode: bigint;
}

/** The granted locks of /proc/locks (`1: POSIX ADVISORY WRITE 1234 08:01:5678 0 EOF`); waiters (`->`) are skipped. */
export function parseProcLocks(text: string): KernelLock[] {
  const locks: KernelLock[] = [];
  for (const line of text.split('\n')) {
    if (line.includes('->')) continue;
    const match = /^\d+:\s+\S+\s+\S+\s+\S+\s+(-?\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s/i.exec(line);
    if (!match?.[1] || !match[2] || !match[3] || !match[4]) continue;
    const pid = Number(match[1]);
    if (pid <= 0) continue;
    locks.push({
      pid,
      major: Number.parseInt(match[2], 16),
      minor: Number.parseInt(match[3], 16),
      inode: BigInt(match[4]),
    });
  }
  return locks;
}

export async function findLockHolders(
  files: readonly string[],
  probe: LockProbe,
): Promise<LockHolder[]> {
  const kernelLocks = parseProcLocks((await probe.readText('/proc/locks')) ?? '');
  const holders: LockHolder[] = [];
  const named = new Set<string>();
  const command = async (pid: number) => (await probe.readText(`/proc/${pid}/comm`))?.trim();
  const add = async (file: string, pid: number, where: string) => {
    if (pid === process.pid || named.has(`${pid} ${where}`)) return;
    const name = await command(pid);
    if (name === undefined) return;
    named.add(`${pid} ${where}`);
    holders.push({ file, pid, command: name });
  };
  for (const file of files) {
    const identity = await probe.identity(file);
    if (!identity) continue;
    const where = `${identity.major}:${identity.minor}:${identity.inode}`;
    if (file.endsWith('.pid')) {
      const pid = Number((await probe.readText(file))?.trim());
      if (Number.isInteger(pid) && pid > 0) await add(file, pid, where);
      continue;
    }
    for (const lock of kernelLocks) {
      if (
        lock.inode === identity.inode &&
        lock.major === identity.major &&
        lock.minor === identity.minor
      )
        await add(file, lock.pid, where);
    }
  }
  return holders;
}

export function describeHolders(holders: readonly LockHolder[]): string {
  return holders
    .map((holder) => `${holder.command} (pid ${holder.pid}) holds ${holder.file}`)
    .join('; ');
}

/**
 * Waits until nobody holds the package manager's locks, within `budgetMs`, saying once in the log
 * who holds them. Past the budget it fails with `packageManagerBusy`, naming the holders and for
 * how long they held on.
 */
export async function waitForPackageManager(options: {
  lockFiles: readonly string[];
  probe: LockProbe;
  clock: Clock;
  log: Log;
  budgetMs: number;
  pollMs?: number;
  signal?: AbortSignal;
}): Promise<void> {
  const { clock, log } = options;
  const started = clock.now().getTime();
  let said = '';
  for (;;) {
    const holders = await findLockHolders(options.lockFiles, options.probe);
    if (holders.length === 0) {
      if (said)
        log.info('The package manager is free', {
          waitedSeconds: Math.round((clock.now().getTime() - started) / 1000),
        });
      return;
    }
    const description = describeHolders(holders);
    if (description !== said) {
      log.warn(`Waiting for the package manager: ${description}`);
      said = description;
    }
    const waited = clock.now().getTime() - started;
    if (waited >= options.budgetMs) {
      throw new HandlerFailure(
        'packageManagerBusy',
        `The package manager stayed busy for ${Math.round(waited / 1000)} s: ${description}.`,
      );
    }
    await clock.sleep(Math.min(options.pollMs ?? 2000, options.budgetMs - waited), options.signal);
  }
}
