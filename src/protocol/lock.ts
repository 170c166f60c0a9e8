import { closeSync, constants, promises as fs, fsyncSync, openSync, writeSync } from 'node:fs';
import path from 'node:path';
import { HandlerFailure } from '../failures.js';
import type { Clock } from '../io/clock.js';
import { readTextIfExists, writeProblem } from '../io/files.js';
import { z } from '../io/zod.js';

/**
 * An exclusive lock between all commands of this handler on the VM, old and new versions alike
 * (during an update the agent runs the old `disable` and `uninstall` next to the new `update`).
 *
 * The lock is a file created with O_EXCL that names its holder: pid, the process's start time
 * (so a recycled pid is not mistaken for the holder), operation and version. A holder killed with
 * SIGKILL leaves the file behind; the next command sees the holder is gone and takes the lock
 * over. Taking over is itself guarded by a short-lived second file so that two waiters cannot both
 * break the same stale lock.
 */

const holderSchema = z.object({
  pid: z.number().int(),
  startTime: z.string().nullable(),
  operation: z.string(),
  version: z.string(),
  acquiredAt: z.string(),
});

export type LockHolder = z.infer<typeof holderSchema>;

/** Whether a process still runs; `startTime` tells a recycled pid apart. */
export interface ProcessTable {
  startTimeOf(pid: number): Promise<string | null | undefined>;
}

/** Linux: field 22 of `/proc/<pid>/stat`; elsewhere: only whether the pid exists. */
export const systemProcessTable: ProcessTable = {
  async startTimeOf(pid) {
    if (process.platform === 'linux') {
      const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
      if (stat === undefined) return undefined;
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return fields[19] ?? null;
    }
    try {
      process.kill(pid, 0);
      return null;
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === 'EPERM' ? null : undefined;
    }
  },
};

export interface LockOptions {
  file: string;
  operation: string;
  version: string;
  clock: Clock;
  processes?: ProcessTable;
  /** How long to wait for another command to finish before failing with `handlerBusy`. */
  waitMs: number;
  pollMs?: number;
  /** Called once when the lock is busy, naming the holder (for the log). */
  onWait?: (holder: LockHolder | undefined) => void;
  signal?: AbortSignal;
}

export interface HeldLock {
  release(): Promise<void>;
}

export async function acquireLock(options: LockOptions): Promise<HeldLock> {
  const table = options.processes ?? systemProcessTable;
  const me: LockHolder = {
    pid: process.pid,
    startTime: (await table.startTimeOf(process.pid)) ?? null,
    operation: options.operation,
    version: options.version,
    acquiredAt: options.clock.now().toISOString(),
  };
  const folder = path.dirname(options.file);
  await fs.mkdir(folder, { recursive: true, mode: 0o700 }).catch((error: unknown) => {
    throw new HandlerFailure(
      'cannotWriteHandlerFiles',
      `Cannot create the handler's folder ${folder}: ${writeProblem(error, path.dirname(folder))}.`,
      { cause: error },
    );
  });
  const started = options.clock.now().getTime();
  let warned = false;
  for (;;) {
    if (await tryCreate(options.file, me)) {
      return { release: () => releaseIfMine(options.file, me) };
    }
    const holder = await readHolder(options.file);
    if (holder === 'missing') continue;
    if (holder === 'unreadable' || !(await isAlive(holder, table))) {
      await breakStaleLock(options.file, holder, table, options.clock);
      continue;
    }
    if (!warned) {
      warned = true;
      options.onWait?.(holder);
    }
    const waited = options.clock.now().getTime() - started;
    if (waited >= options.waitMs) {
      throw new HandlerFailure(
        'handlerBusy',
        `Another command of this extension (${holder.operation}, version ${holder.version}, pid ${holder.pid}, since ${holder.acquiredAt}) still held ${options.file} after ${Math.round(waited / 1000)} s.`,
      );
    }
    await options.clock.sleep(
      Math.min(options.pollMs ?? 250, options.waitMs - waited),
      options.signal,
    );
  }
}

async function tryCreate(file: string, holder: LockHolder): Promise<boolean> {
  // Synchronous calls, like writeFileAtomic (io/files.ts): every command takes this lock.
  let fd: number;
  try {
    fd = openSync(
      file,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | (constants.O_NOFOLLOW ?? 0),
      0o600,
    );
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw new HandlerFailure(
      'cannotWriteHandlerFiles',
      `Cannot create the lock file ${file}: ${writeProblem(error, path.dirname(file))}.`,
      { cause: error },
    );
  }
  try {
    const bytes = Buffer.from(JSON.stringify(holder));
    for (let written = 0; written < bytes.length; ) written += writeSync(fd, bytes, written);
    fsyncSync(fd);
  } catch (error) {
    // A full disk takes the empty file but not its content: remove it, or the next command
    // would find an unreadable lock and wait for it to grow old before breaking it.
    closeSync(fd);
    await fs.rm(file, { force: true });
    throw new HandlerFailure(
      'cannotWriteHandlerFiles',
      `Cannot write the lock file ${file}: ${writeProblem(error, path.dirname(file))}.`,
      { cause: error },
    );
  }
  closeSync(fd);
  return true;
}

async function readHolder(file: string): Promise<LockHolder | 'missing' | 'unreadable'> {
  let text: string | undefined;
  try {
    text = await readTextIfExists(file);
  } catch {
    return 'unreadable';
  }
  if (text === undefined) return 'missing';
  try {
    const parsed = holderSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : 'unreadable';
  } catch {
    return 'unreadable';
  }
}

async function isAlive(holder: LockHolder, table: ProcessTable): Promise<boolean> {
  const startTime = await table.startTimeOf(holder.pid);
  if (startTime === undefined) return false;
  return holder.startTime === null || startTime === null || startTime === holder.startTime;
}

const BREAKER_STALE_MS = 10_000;

/**
 * Removes a lock whose holder is gone. Only the waiter that owns `<file>.break` may do it, and it
 * checks again that the lock still holds the same stale content, so a fresh lock taken by a third
 * process in between is never removed. An unreadable lock file (being written this instant, or
 * corrupt) is removed only once it is older than a few seconds.
 */
async function breakStaleLock(
  file: string,
  seen: LockHolder | 'unreadable',
  table: ProcessTable,
  clock: Clock,
): Promise<void> {
  const breaker = `${file}.break`;
  const breakerHolder: LockHolder = {
    pid: process.pid,
    startTime: null,
    operation: 'break-stale-lock',
    version: '',
    acquiredAt: clock.now().toISOString(),
  };
  if (!(await tryCreate(breaker, breakerHolder))) {
    const stat = await fs.stat(breaker).catch(() => undefined);
    if (stat && clock.now().getTime() - stat.mtimeMs > BREAKER_STALE_MS) {
      await fs.rm(breaker, { force: true });
    } else {
      await clock.sleep(50);
    }
    return;
  }
  try {
    const current = await readHolder(file);
    if (current === 'missing') return;
    if (seen === 'unreadable' || current === 'unreadable') {
      const stat = await fs.stat(file).catch(() => undefined);
      if (stat && clock.now().getTime() - stat.mtimeMs > 2_000) await fs.rm(file, { force: true });
      else await clock.sleep(50);
      return;
    }
    if (JSON.stringify(current) === JSON.stringify(seen) && !(await isAlive(current, table))) {
      await fs.rm(file, { force: true });
    }
  } finally {
    await fs.rm(breaker, { force: true });
  }
}

async function releaseIfMine(file: string, me: LockHolder): Promise<void> {
  const current = await readHolder(file);
  if (typeof current === 'object' && JSON.stringify(current) === JSON.stringify(me)) {
    await fs.rm(file, { force: true });
  }
}
