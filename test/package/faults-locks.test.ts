/**
 * Fault 6, the package manager held by another program, on the rpm family: the built
 * AADSSHLoginForLinux zip chrooted in a test VM (vm.ts, the `rpm` kind: Debian 12 with dnf, zypper
 * and rpm set up as on RHEL and SUSE), while a real dnf or zypper of the VM holds its locks:
 *
 * - dnf in the middle of a transaction (a package whose pre-install script runs for an hour): it
 *   holds rpm's kernel lock on /var/lib/rpm/.rpm.lock and its own /var/lib/dnf/rpmdb_lock.pid;
 * - `zypper shell` left open: libzypp has written its pid into /run/zypp.pid, and any other zypper
 *   exits at once with 7 ("System management is locked").
 *
 * Held past the wait, `enable` fails with its own code (26), naming the holder, well before the
 * agent's 300 s; released during the wait, the install goes on and succeeds. The dpkg case is in
 * linux-packages.test.ts. The tests are independent VMs, run side by side (each held case waits
 * about 150 s). Assumes `npm run package` ran.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { osReleaseFixture } from '../fixtures.js';
import {
  AGENT_PATH,
  AGENT_TIMEOUT_SECONDS,
  assertExit,
  type CommandRun,
  extensionVersionOf,
  type HandlerInstance,
  LINUX_HANDLER_NAME,
  type LogLine,
  requireZip,
  runTool,
  stopChild,
} from './agent-driver.js';
import { NEW_VERSION, rpmToolEnv } from './repos.js';
import { type LinuxVm, unpackHandler, withLinuxVm } from './vm.js';
import { RPM_KEY, YUM_REPO, ZYPP_REPO } from './vm-files.js';

const version = extensionVersionOf();
let zip = '';
let slowRpm = '';

before(async () => {
  zip = await requireZip(LINUX_HANDLER_NAME);
  slowRpm = await buildSlowRpm();
});

/** The handler's own deadline for enable (src/lifecycle/operations.ts): 300 s less 10 %. */
const ENABLE_DEADLINE_MS = 270_000;

/**
 * `slow-update`, a noarch rpm whose pre-install script (Lua, run inside rpm itself, so it needs
 * no shell) sleeps for an hour: whoever installs it stays in the rpm transaction, holding the
 * transaction's locks, until it is killed.
 */
async function buildSlowRpm(): Promise<string> {
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'aad-slow-rpm-'));
  const spec = [
    'Name: slow-update',
    'Version: 1',
    'Release: 1',
    'Summary: a transaction that takes an hour',
    'License: MIT',
    'BuildArch: noarch',
    'AutoReqProv: no',
    '%description',
    'Its pre-install script sleeps for an hour.',
    '%pre -p <lua>',
    'posix.sleep(3600)',
    '%files',
    '',
  ].join('\n');
  await fs.writeFile(path.join(work, 'slow-update.spec'), spec);
  const built = await runTool(
    'rpmbuild',
    [
      '-bb',
      '--define',
      `_topdir ${path.join(work, 'top')}`,
      '--define',
      `_rpmdir ${work}`,
      '--define',
      '_build_name_fmt %%{NAME}.rpm',
      path.join(work, 'slow-update.spec'),
    ],
    { env: await rpmToolEnv() },
  );
  assert.equal(built.exitCode, 0, `rpmbuild: ${built.stderr}`);
  return path.join(work, 'slow-update.rpm');
}

/** A program of the VM holding its package manager's locks until `release()`. */
interface Holder {
  pid: number;
  release(): Promise<void>;
}

/**
 * Starts `argv` inside the VM (chrooted, in its world) as a program of the VM, and resolves once
 * `holds()` says it holds its locks. Its pid is the program's own: nsenter, chroot and env exec.
 */
async function startHolder(
  vm: LinuxVm,
  argv: readonly string[],
  holds: (pid: number) => Promise<boolean>,
  options: { stdin?: 'pipe' } = {},
): Promise<Holder & { child: ChildProcess }> {
  const [file, ...args] = vm.world.wrap(argv, '/');
  const child = spawn(file ?? 'nsenter', args, {
    env: { PATH: AGENT_PATH, LANG: 'C', HOME: '/root' },
    stdio: [options.stdin ?? 'ignore', 'ignore', 'pipe'],
  });
  const stderr: Buffer[] = [];
  child.stderr?.on('data', (chunk: Buffer) => stderr.push(chunk));
  const pid = child.pid ?? 0;
  const release = () => stopChild(child);
  try {
    for (let i = 0; ; i++) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(
          `${argv.join(' ')} exited (${child.exitCode ?? child.signalCode}) before it held its locks: ${Buffer.concat(stderr).toString()}`,
        );
      }
      if (await holds(pid)) break;
      if (i >= 1200) throw new Error(`${argv.join(' ')} did not take its locks in 120 s`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(
      (await fs.readFile(`/proc/${pid}/comm`, 'utf8')).trim(),
      argv[0],
      'the holder is the program itself',
    );
  } catch (error) {
    await release();
    throw error;
  }
  return { pid, child, release };
}

/** Whether `pid` holds a kernel lock (/proc/locks) on `file` of the VM. */
async function holdsKernelLock(vm: LinuxVm, file: string, pid: number): Promise<boolean> {
  const stat = await fs.stat(vm.root.path(file)).catch(() => undefined);
  if (!stat) return false;
  const locks = await fs.readFile('/proc/locks', 'utf8');
  return locks
    .split('\n')
    .some(
      (line) =>
        !line.includes('->') &&
        new RegExp(
          `^\\d+:\\s+\\S+\\s+\\S+\\s+WRITE\\s+${pid}\\s+[0-9a-f]+:[0-9a-f]+:${stat.ino}\\s`,
        ).test(line),
    );
}

/** A real dnf of the VM in the middle of a transaction that lasts an hour. */
async function dnfInTransaction(vm: LinuxVm): Promise<Holder> {
  await vm.root.writeFile('/tmp/slow-update.rpm', await fs.readFile(slowRpm));
  return startHolder(
    vm,
    ['dnf', '-y', '-q', '--nogpgcheck', '--disablerepo=*', 'install', '/tmp/slow-update.rpm'],
    async (pid) =>
      (await vm.root.readFile('/var/lib/dnf/rpmdb_lock.pid'))?.trim() === String(pid) &&
      (await holdsKernelLock(vm, '/var/lib/rpm/.rpm.lock', pid)),
  );
}

/** A real `zypper shell` of the VM, waiting for commands: libzypp's lock is its. */
async function zypperShell(vm: LinuxVm): Promise<Holder> {
  return startHolder(
    vm,
    ['zypper', 'shell'],
    async (pid) => (await vm.root.readFile('/run/zypp.pid'))?.trim() === String(pid),
    { stdin: 'pipe' },
  );
}

/** Unpacks the zip into the VM's agent folder with settings for sequence number 0. */
function handlerIn(vm: LinuxVm): Promise<HandlerInstance> {
  return unpackHandler(vm, zip, version);
}

async function linesOf(vm: LinuxVm, operation: string): Promise<LogLine[]> {
  return (await vm.sandbox.readLog()).filter(
    (line) => line.operation === operation && line.version === version,
  );
}

/** The VM's files that configuring the packages would change, and the rpm keys. */
async function snapshot(vm: LinuxVm): Promise<Record<string, string | undefined>> {
  const files = [YUM_REPO, ZYPP_REPO, RPM_KEY, '/etc/nsswitch.conf', '/etc/ssh/sshd_config'];
  const entries = await Promise.all(
    files.map(async (file) => [file, await vm.root.readFile(file)] as const),
  );
  const keys = await vm.world.exec(['rpm', '-q', 'gpg-pubkey']);
  return { ...Object.fromEntries(entries), 'rpm -q gpg-pubkey': keys.stdout };
}

async function installedVersion(vm: LinuxVm, name: string): Promise<string | undefined> {
  const result = await vm.world.exec(['rpm', '-q', '--qf', '%{VERSION}', name]);
  return result.exitCode === 0 ? result.stdout.trim() : undefined;
}

/**
 * What every held case must show: exit 26 with the holder named in the message the agent
 * reports, the wait said once in the log, the command ended by itself well before the agent's
 * timeout (and before its own deadline, which would be 63), and nothing on the VM changed.
 */
async function assertGaveUpInTime(
  vm: LinuxVm,
  handler: HandlerInstance,
  enable: CommandRun,
  holders: readonly RegExp[],
  before: Record<string, string | undefined>,
): Promise<number> {
  assertExit(enable, 26);
  for (const holder of holders) assert.match(enable.stdout, holder, enable.stdout);
  assert.ok(
    enable.durationMs < ENABLE_DEADLINE_MS,
    `enable ended after ${enable.durationMs} ms: within its own deadline, so well before the agent's ${AGENT_TIMEOUT_SECONDS.enable} s`,
  );
  const waited = Number(/stayed busy for (\d+) s/.exec(enable.stdout)?.[1]);
  assert.ok(waited >= 60, `it waited for the holder (${waited} s) before giving up`);

  const status = await handler.agentStatus(0);
  assert.equal(status.status, 'error');
  assert.equal(status.code, 26);
  for (const holder of holders) assert.match(status.message, holder);
  assert.match(status.message, /Wait for the named program to finish/);

  const waits = (await linesOf(vm, 'enable')).filter((line) =>
    line.message?.startsWith('Waiting for the package manager: '),
  );
  assert.equal(waits.length, 1, 'the holders are named once in the log, not at every poll');
  for (const holder of holders) assert.match(waits[0]?.message ?? '', holder);

  assert.deepEqual(await snapshot(vm), before, 'nothing on the VM changed');
  assert.equal(await installedVersion(vm, 'aadsshlogin'), undefined);
  // A failed command records nothing: no state file, or one without a journal.
  assert.deepEqual((await vm.sandbox.readState())?.journal ?? [], []);
  return waited;
}

describe(
  'AADSSHLoginForLinux with the rpm family package managers held by another program',
  {
    concurrency: true,
  },
  () => {
    test('RHEL 9.4, dnf in a transaction past the wait: enable exits 26 naming dnf and both its locks, before the agent would kill it', async (t) => {
      await withLinuxVm(
        {
          kind: 'rpm',
          label: 'dnf-held',
          osRelease: await osReleaseFixture('rhel-9.4'),
        },
        async (vm) => {
          const before = await snapshot(vm);
          const dnf = await dnfInTransaction(vm);
          try {
            const handler = await handlerIn(vm);
            const enable = await handler.run('enable', { seq: 0 });
            const waited = await assertGaveUpInTime(
              vm,
              handler,
              enable,
              [
                new RegExp(`dnf \\(pid ${dnf.pid}\\) holds /var/lib/rpm/\\.rpm\\.lock`),
                new RegExp(`dnf \\(pid ${dnf.pid}\\) holds /var/lib/dnf/rpmdb_lock\\.pid`),
              ],
              before,
            );
            t.diagnostic(
              `enable waited ${waited} s for dnf and exited 26 after ${(enable.durationMs / 1000).toFixed(1)} s`,
            );
          } finally {
            await dnf.release();
          }
        },
      );
    });

    test('SLES 15.5, zypper holding zypp.pid past the wait: enable exits 26 naming zypper once, before the agent would kill it', async (t) => {
      await withLinuxVm(
        {
          kind: 'rpm',
          label: 'zypp-held',
          osRelease: await osReleaseFixture('sles-15.5'),
        },
        async (vm) => {
          const before = await snapshot(vm);
          const zypper = await zypperShell(vm);
          try {
            // What the handler must not do: run zypper into the lock, which fails at once.
            const locked = await vm.world.exec(['zypper', '-n', 'refresh']);
            assert.equal(locked.exitCode, 7, `${locked.stdout}${locked.stderr}`);
            const handler = await handlerIn(vm);
            const enable = await handler.run('enable', { seq: 0 });
            const waited = await assertGaveUpInTime(
              vm,
              handler,
              enable,
              [new RegExp(`zypper \\(pid ${zypper.pid}\\) holds /run/zypp\\.pid`)],
              before,
            );
            // /var/run/zypp.pid is the same file (/var/run → /run): one holder, named once.
            assert.doesNotMatch(enable.stdout, /\/var\/run\/zypp\.pid/);
            t.diagnostic(
              `enable waited ${waited} s for zypper and exited 26 after ${(enable.durationMs / 1000).toFixed(1)} s`,
            );
          } finally {
            await zypper.release();
          }
        },
      );
    });

    test('SLES 15.6, zypper holding zypp.pid for a while: install waits, names it, and succeeds once it lets go', async () => {
      await withLinuxVm(
        {
          kind: 'rpm',
          label: 'zypp-wait',
          osRelease: await osReleaseFixture('sles-15.6'),
        },
        async (vm) => {
          const zypper = await zypperShell(vm);
          try {
            const handler = await handlerIn(vm);
            const running = handler.run('install', { seq: 0 });
            // Let go once the handler has said whom it waits for.
            for (let i = 0; i < 1200; i++) {
              const lines = await linesOf(vm, 'install');
              if (lines.some((line) => /Waiting for the package manager/.test(line.message ?? '')))
                break;
              await new Promise((resolve) => setTimeout(resolve, 100));
            }
            await zypper.release();
            const install = await running;
            assertExit(install, 0);
            const lines = await linesOf(vm, 'install');
            const waited = lines.find((line) =>
              /Waiting for the package manager/.test(line.message ?? ''),
            );
            assert.match(
              waited?.message ?? '',
              new RegExp(`zypper \\(pid ${zypper.pid}\\) holds /run/zypp\\.pid$`),
            );
            assert.ok(
              lines.some((line) => line.message?.startsWith('The package manager is free')),
              'the log says when the package manager became free',
            );
            assert.equal(await installedVersion(vm, 'aadsshlogin'), NEW_VERSION);
            assert.equal((await handler.agentStatus(0)).status, 'success');
          } finally {
            await zypper.release();
          }
        },
      );
    });
  },
);
