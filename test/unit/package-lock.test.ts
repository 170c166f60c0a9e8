import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { HandlerFailure } from '../../src/failures.js';
import {
  findLockHolders,
  type LockProbe,
  parseProcLocks,
  waitForPackageManager,
} from '../../src/linux/package-lock.js';
import { systemLockProbe } from '../../src/linux/package-lock-probe.js';
import { fakeClock, memoryLog, temporaryFolder } from '../fakes.js';

/** Starts `argv`, which takes a lock on `file` and says "locked" on stdout once it holds it. */
async function holdLock(argv: string[]): Promise<ChildProcess> {
  const child = spawn(argv[0] ?? '', argv.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('locked')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`${argv[0]} exited ${code} before locking`)));
  });
  return child;
}

describe('package-manager lock holders', () => {
  test('/proc/locks lines are read; waiters are skipped', () => {
    const locks = parseProcLocks(
      '1: POSIX  ADVISORY  WRITE 1719 08:01:393283 0 EOF\n1: -> POSIX  ADVISORY  WRITE 2001 08:01:393283 0 EOF\n2: FLOCK  ADVISORY  WRITE 88 fd:00:12 0 EOF\n',
    );
    assert.deepEqual(locks, [
      { pid: 1719, major: 8, minor: 1, inode: 393283n },
      { pid: 88, major: 253, minor: 0, inode: 12n },
    ]);
  });

  test('a real fcntl lock (as dpkg and rpm take) and a real flock are found with pid and name', async () => {
    const { dir, cleanup } = await temporaryFolder();
    const children: ChildProcess[] = [];
    try {
      const dpkgLock = path.join(dir, 'lock-frontend');
      const tdnfLock = path.join(dir, '.tdnf-instance-lockfile');
      await writeFile(dpkgLock, '');
      await writeFile(tdnfLock, '');
      children.push(
        await holdLock([
          'python3',
          '-c',
          `import fcntl,sys,time\nf=open(${JSON.stringify(dpkgLock)},'w')\nfcntl.lockf(f,fcntl.LOCK_EX)\nprint('locked',flush=True)\ntime.sleep(60)`,
        ]),
      );
      children.push(await holdLock(['flock', tdnfLock, 'sh', '-c', 'echo locked; sleep 60']));
      const holders = await findLockHolders(
        [dpkgLock, tdnfLock, path.join(dir, 'absent')],
        systemLockProbe,
      );
      assert.deepEqual(
        holders.map((holder) => [path.basename(holder.file), holder.pid, holder.command]),
        [
          ['lock-frontend', children[0]?.pid, 'python3'],
          ['.tdnf-instance-lockfile', children[1]?.pid, 'flock'],
        ],
      );
    } finally {
      for (const child of children) child.kill('SIGKILL');
      await cleanup();
    }
  });

  test("zypper's pid file names its holder while that process lives", async () => {
    const { dir, cleanup } = await temporaryFolder();
    const zypper = await holdLock(['sh', '-c', 'echo locked; exec sleep 60']);
    try {
      const pidFile = path.join(dir, 'zypp.pid');
      await writeFile(pidFile, `${zypper.pid}\n`);
      assert.deepEqual(await findLockHolders([pidFile], systemLockProbe), [
        { file: pidFile, pid: zypper.pid, command: 'sleep' },
      ]);
      await writeFile(pidFile, '999999\n');
      assert.deepEqual(await findLockHolders([pidFile], systemLockProbe), []);
      // This process is never its own holder (it would wait for itself).
      await writeFile(pidFile, `${process.pid}\n`);
      assert.deepEqual(await findLockHolders([pidFile], systemLockProbe), []);
    } finally {
      zypper.kill('SIGKILL');
      await cleanup();
    }
  });

  test('two names of one lock file (/var/run → /run) name its holder once', async () => {
    const { dir, cleanup } = await temporaryFolder();
    const holder = await holdLock(['sh', '-c', 'echo locked; exec sleep 60']);
    try {
      await mkdir(path.join(dir, 'run'));
      await symlink(path.join(dir, 'run'), path.join(dir, 'var-run'));
      await writeFile(path.join(dir, 'run', 'zypp.pid'), `${holder.pid}\n`);
      const holders = await findLockHolders(
        [path.join(dir, 'run', 'zypp.pid'), path.join(dir, 'var-run', 'zypp.pid')],
        systemLockProbe,
      );
      assert.deepEqual(
        holders.map((found) => [found.file, found.pid]),
        [[path.join(dir, 'run', 'zypp.pid'), holder.pid]],
      );
    } finally {
      holder.kill('SIGKILL');
      await cleanup();
    }
  });

  const probeHeldFor = (polls: number): LockProbe & { polls: number } => {
    const probe = {
      polls: 0,
      readText: async (file: string) => {
        if (file === '/proc/locks') {
          probe.polls++;
          return probe.polls <= polls ? '1: POSIX  ADVISORY  WRITE 1719 08:01:42 0 EOF\n' : '';
        }
        return file === '/proc/1719/comm' ? 'unattended-upgr\n' : undefined;
      },
      identity: async () => ({ major: 8, minor: 1, inode: 42n }),
    };
    return probe;
  };

  test('a holder that lets go within the budget is waited for, and named once in the log', async () => {
    const log = memoryLog();
    await waitForPackageManager({
      lockFiles: ['/var/lib/dpkg/lock-frontend'],
      probe: probeHeldFor(5),
      clock: fakeClock(),
      log,
      budgetMs: 60_000,
    });
    const warnings = log.lines.filter((line) => line.level === 'warn');
    assert.equal(warnings.length, 1);
    assert.match(
      warnings[0]?.message ?? '',
      /unattended-upgr \(pid 1719\) holds \/var\/lib\/dpkg\/lock-frontend/,
    );
  });

  test('a holder past the budget fails with 26, naming it and how long', async () => {
    await assert.rejects(
      waitForPackageManager({
        lockFiles: ['/var/lib/dpkg/lock-frontend'],
        probe: probeHeldFor(Number.POSITIVE_INFINITY),
        clock: fakeClock(),
        log: memoryLog(),
        budgetMs: 240_000,
      }),
      (error) => {
        assert.ok(error instanceof HandlerFailure);
        assert.equal(error.code, 26);
        assert.match(
          error.detail,
          /busy for 240 s: unattended-upgr \(pid 1719\) holds \/var\/lib\/dpkg\/lock-frontend/,
        );
        return true;
      },
    );
  });
});
