/**
 * The built AADSSHLoginForLinux zip on full disks (issue 7, fault 3): the status folder, the log
 * folder, apt's folders (/var/cache, /var/lib/apt/lists, /var/lib/dpkg), the repository file's
 * folder and the handler's state folder, each on a tiny file system that is full (or read-only).
 * The handler must still exit with its documented code and say why, leave no partial file and
 * change nothing half-way; a log it cannot write never fails the operation by itself.
 *
 * A full disk is a size-limited tmpfs mounted over the folder in the world's mount namespace only
 * ({@link fullDisk}: never on this machine), holding a copy of what the folder held, then filled
 * by one file to the last page. Taking it away again puts what is on it back into the folder, so
 * the test reads there (with the real agent's code for status files) what the handler left.
 * Commands that only check run in a plain world on this machine's files; those that install run
 * in a Debian 12 test VM (vm.ts). Assumes `npm run package` ran.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  AgentSandbox,
  assertExit,
  type CommandRun,
  ensureWaagent,
  extensionVersionOf,
  type HandlerInstance,
  LINUX_HANDLER_NAME,
  LINUX_LOG_FILE,
  requireZip,
  runTool,
} from './agent-driver.js';
import { type LinuxVm, linuxVm } from './vm.js';
import { KEYRING, LIST } from './vm-files.js';
import { azureVm, resolveInRoot, TOKEN_PATH, type World } from './world.js';

const version = extensionVersionOf();
let zip = '';

before(async () => {
  zip = await requireZip(LINUX_HANDLER_NAME);
  await ensureWaagent();
});

// ---------------------------------------------------------------------------------------------
// Full disks
// ---------------------------------------------------------------------------------------------

const FILLER = '.aad-test-filler';
const PAGE = 4096;

interface FullDisk {
  /**
   * Unmounts it. A disk that started as a copy of the folder has its files (the filler excepted)
   * put back into the folder below, so the test reads there what the handler left; a blank one
   * is taken away with what is on it.
   */
  unplug(): Promise<void>;
}

/** Runs a shell script in the world's namespaces, outside its root; throws unless it exits 0. */
async function inWorld(world: World, script: string, args: readonly string[]): Promise<void> {
  const [file, ...rest] = world.wrapOutside(['/bin/sh', '-c', script, 'full-disk', ...args], '/');
  const result = await runTool(file ?? 'nsenter', rest);
  if (result.exitCode !== 0) {
    throw new Error(`${script}\n(${args.join(' ')}) failed: ${result.stderr}${result.stdout}`);
  }
}

const MOUNT_FULL = `
set -eu
target=$1 size=$2 room=$3 copy=$4 readonly=$5
saved=$(mktemp -d /tmp/aad-full-disk.XXXXXX)
trap 'rm -rf "$saved"' EXIT
[ "$copy" = no ] || cp -a "$target"/. "$saved"/
mount -t tmpfs -o "size=$size,mode=$(stat -c %a "$target"),uid=$(stat -c %u "$target"),gid=$(stat -c %g "$target")" aad-full-disk "$target"
cp -a "$saved"/. "$target"/
available=$(df --output=avail -B1 "$target" | tail -n 1)
[ "$available" -le "$room" ] || fallocate -l $((available - room)) "$target/${FILLER}"
[ "$readonly" = no ] || mount -o remount,ro "$target"
`;

const UNPLUG = `
set -eu
target=$1 copy=$2
if [ "$copy" = no ]; then umount "$target"; exit 0; fi
saved=$(mktemp -d /tmp/aad-full-disk.XXXXXX)
trap 'rm -rf "$saved"' EXIT
cp -a "$target"/. "$saved"/
rm -f "$saved/${FILLER}"
umount "$target"
find "$target" -mindepth 1 -delete
cp -a "$saved"/. "$target"/
`;

/**
 * Mounts a full file system of `size` over `folder` of the world (the path the handler sees:
 * inside the root for a VM), holding a copy of the folder's files unless `copy` is false, filled
 * until `room` bytes are left (whole pages: a tmpfs gives out memory by the page), and read-only
 * with `readOnly`. Mounted in the world's mount namespace only.
 */
async function fullDisk(
  world: World,
  folder: string,
  options: { size?: string; room?: number; copy?: boolean; readOnly?: boolean } = {},
): Promise<FullDisk> {
  const mountPoint = world.root === undefined ? folder : await resolveInRoot(world.root, folder);
  await inWorld(world, MOUNT_FULL, [
    mountPoint,
    options.size ?? '16m',
    String(options.room ?? 0),
    options.copy === false ? 'no' : 'yes',
    options.readOnly ? 'yes' : 'no',
  ]);
  let plugged = true;
  return {
    async unplug() {
      if (!plugged) return;
      plugged = false;
      await inWorld(world, UNPLUG, [mountPoint, options.copy === false ? 'no' : 'yes']);
    },
  };
}

/** Runs `body` with a full disk over `folder`, and always takes it away again. */
async function withFullDisk<T>(
  world: World,
  folder: string,
  options: Parameters<typeof fullDisk>[2],
  body: (disk: FullDisk) => Promise<T>,
): Promise<T> {
  const disk = await fullDisk(world, folder, options);
  try {
    return await body(disk);
  } finally {
    await disk.unplug();
  }
}

// ---------------------------------------------------------------------------------------------
// What the tests look at
// ---------------------------------------------------------------------------------------------

/** The VM files the package lifecycle may touch, to compare before and after a failure. */
async function snapshot(vm: LinuxVm): Promise<Record<string, string | undefined>> {
  const files = [
    LIST,
    KEYRING,
    '/etc/nsswitch.conf',
    '/etc/ssh/sshd_config',
    '/etc/pam.d/common-auth',
  ];
  const entries = await Promise.all(
    files.map(async (file) => [file, await vm.root.readFile(file)] as const),
  );
  return Object.fromEntries(entries);
}

/** dpkg's view of aadsshlogin in the VM ('' when it knows nothing of it). */
async function aadsshloginStatus(vm: LinuxVm): Promise<string> {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's format syntax
  const result = await vm.world.exec(['dpkg-query', '-W', '-f=${Status}', 'aadsshlogin']);
  return result.exitCode === 0 ? result.stdout : '';
}

/** Packages dpkg reports as half-installed, half-configured or otherwise broken ('' when none). */
async function dpkgAudit(vm: LinuxVm): Promise<string> {
  const result = await vm.world.exec(['dpkg', '--audit']);
  return `${result.stdout}${result.stderr}`.trim();
}

/** Asserts the exit code and that `message` is on the given stream, showing both streams. */
function assertSays(
  run: CommandRun,
  code: number,
  stream: 'stdout' | 'stderr',
  message: RegExp,
): void {
  assertExit(run, code);
  assert.match(run[stream], message, `stdout: ${run.stdout}\nstderr: ${run.stderr}`);
}

/** The ENOSPC translation the handler gives for a folder, as a pattern. */
function fullFileSystem(folder: string): RegExp {
  return new RegExp(
    `the file system holding ${literally(folder)} is full \\(ENOSPC: no space left on device\\); free space or inodes there`,
  );
}

function literally(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The files a folder holds, sorted. */
async function listing(folder: string): Promise<string[]> {
  return (await fs.readdir(folder).catch(() => [] as string[])).sort();
}

// ---------------------------------------------------------------------------------------------
// 1. The status folder
// ---------------------------------------------------------------------------------------------

describe('the status folder on a full disk (commands that only check, on this machine)', () => {
  let world: Awaited<ReturnType<typeof azureVm>>;
  let sandbox: AgentSandbox;
  let handler: HandlerInstance;
  let before0 = '';
  before(async () => {
    world = await azureVm();
    sandbox = await AgentSandbox.create('disk-status', { launcher: world.launcher });
    handler = await sandbox.unpack(zip, version);
    await handler.writeSettings(0, { publicSettings: {} });
    await handler.writeSettings(1, { publicSettings: {} });
    // A terminal status for sequence number 0, from when the disk had room.
    assertExit(await handler.run('disable', { seq: 0 }), 0);
    before0 = (await handler.readStatusText(0)) ?? '';
    assert.match(before0, /"status":"success"/);
  });
  after(async () => {
    await sandbox?.cleanup();
    await world?.close();
  });

  test('update for a new sequence number exits 64 before its checks, naming the status file and "no space left" on stderr and stdout; no status and no temporary file left', async () => {
    const asked = (await world.imdsRequests(TOKEN_PATH)).length;
    await withFullDisk(world, handler.statusFolder, {}, async () => {
      const run = await handler.run('update', { seq: 1, updatingFromVersion: '0.9.0.0' });
      const named = new RegExp(
        `Cannot write the status file ${literally(path.join(handler.statusFolder, '1.status'))}: ${fullFileSystem(handler.statusFolder).source}`,
      );
      assertSays(run, 64, 'stderr', named);
      assert.equal(run.stderr.trim().split('\n').length, 1, `said once: ${run.stderr}`);
      assert.match(run.stdout, /^Update failed: Cannot write the status file /);
      assert.match(run.stdout, /The command stopped before changing anything\./);
      assert.match(
        run.stdout,
        /Free space \(and inodes\) on the file system holding the named folder \(usually \/var\/lib\/waagent\), or make it writable again, then apply the extension again\.\n$/,
      );
    });
    assert.equal((await world.imdsRequests(TOKEN_PATH)).length, asked, 'the checks never ran');
    assert.deepEqual(await listing(handler.statusFolder), ['0.status']);
    assert.equal(await handler.readStatusText(0), before0, 'the old status is untouched');
    const log = await sandbox.readLog();
    assert.ok(
      log.some((line) => line.level === 'ERROR' && /Cannot write the status file/.test(line.raw)),
      'the log says it too',
    );
  });

  test('disable (which reports only its result) succeeds but exits 64, saying so; the previous status stays intact, byte for byte', async () => {
    await withFullDisk(world, handler.statusFolder, {}, async () => {
      const run = await handler.run('disable', { seq: 0 });
      assertSays(run, 64, 'stderr', fullFileSystem(handler.statusFolder));
      assert.match(
        run.stdout,
        /^Cannot write the status file .*\/0\.status: .* Disable succeeded: nothing to do: Entra ID login stays configured, but its status could not be written\. Free space/,
      );
    });
    assert.deepEqual(await listing(handler.statusFolder), ['0.status']);
    assert.equal(await handler.readStatusText(0), before0);
    assert.equal((await handler.agentStatus(0)).status, 'success');
  });

  test('a status folder with room for one status file only: the result replaces the progress report whole, and the agent accepts it', async () => {
    // Room for one page: the transitioning status takes it, and an atomic replacement needs two.
    await withFullDisk(world, handler.statusFolder, { room: PAGE }, async () => {
      assertExit(await handler.run('update', { seq: 1, updatingFromVersion: '0.9.0.0' }), 0);
    });
    assert.deepEqual(await listing(handler.statusFolder), ['0.status', '1.status']);
    const status = await handler.agentStatus(1);
    assert.equal(status.status, 'success');
    assert.equal(status.operation, 'Update');
  });
});

// ---------------------------------------------------------------------------------------------
// 2. The log folder: a log that cannot be written never fails the operation
// ---------------------------------------------------------------------------------------------

describe('the log folder full, read-only or taken: enable of an installed VM still succeeds', () => {
  let vm: LinuxVm;
  let handler: HandlerInstance;
  let logFile = '';
  before(async () => {
    vm = await linuxVm({ kind: 'debian', label: 'disk-log' });
    handler = await vm.sandbox.unpack(zip, version);
    await handler.writeSettings(0, { publicSettings: vm.publicSettings });
    assertExit(await handler.run('install', { seq: 0 }), 0);
    assertExit(await handler.run('enable', { seq: 0 }), 0);
    logFile = path.join(handler.logFolder, LINUX_LOG_FILE);
  });
  after(async () => vm?.close());

  /** Runs enable and checks it succeeded in every way but the log; returns its stderr. */
  async function enableSucceeds(): Promise<string> {
    const before = (await vm.sandbox.readState())?.applied.length ?? 0;
    const run = await handler.run('enable', { seq: 0 });
    assertExit(run, 0);
    assert.match(run.stdout, /^Enable succeeded: /);
    const status = await handler.agentStatus(0);
    assert.equal(status.status, 'success');
    assert.equal(status.operation, 'Enable');
    assert.equal((await vm.sandbox.readState())?.applied.length, before + 1, 'state recorded');
    assert.match(await aadsshloginStatus(vm), /install ok installed/);
    return run.stderr;
  }

  /** stderr holds one line: the log problem, naming the log file and `why`. */
  function assertReported(stderr: string, why: RegExp): void {
    const lines = stderr.trim().split('\n');
    assert.equal(lines.length, 1, `reported once: ${stderr}`);
    assert.match(
      lines[0] ?? '',
      new RegExp(`^The handler log ${literally(logFile)} cannot be written: `),
    );
    assert.match(lines[0] ?? '', why);
    assert.match(lines[0] ?? '', /The command goes on without its log\.$/);
  }

  test('a full log folder: exit 0 and a success status; stderr says the log cannot be written and why', async () => {
    // A fresh disk (the log file not yet on it): its first line needs a page there is not.
    await withFullDisk(vm.world, handler.logFolder, { copy: false }, async () => {
      assertReported(await enableSucceeds(), fullFileSystem(handler.logFolder));
    });
  });

  test('a read-only log folder: exit 0 and a success status; stderr says it is read-only', async () => {
    await withFullDisk(vm.world, handler.logFolder, { readOnly: true, room: 1 << 20 }, async () => {
      assertReported(
        await enableSucceeds(),
        new RegExp(
          `the file system holding ${literally(handler.logFolder)} is read-only \\(EROFS\\)`,
        ),
      );
    });
  });

  for (const [what, plant, named] of [
    ['a folder', (file: string) => fs.mkdir(file), /a folder is in its place/],
    [
      'a FIFO nobody reads',
      async (file: string) => {
        const made = await runTool('mkfifo', [file]);
        assert.equal(made.exitCode, 0, made.stderr);
      },
      /a FIFO is in its place/,
    ],
  ] as const) {
    test(`the log file replaced by ${what}: exit 0 at once and a success status; stderr names the log file and what is in its place`, async () => {
      const aside = `${logFile}.aside`;
      await fs.rename(logFile, aside);
      try {
        await plant(logFile);
        assertReported(await enableSucceeds(), named);
      } finally {
        await fs.rm(logFile, { recursive: true, force: true });
        await fs.rename(aside, logFile);
      }
    });
  }

  test('with room again, the log is written again and stderr is empty', async () => {
    const lines = (await vm.sandbox.readLog()).length;
    assert.equal(await enableSucceeds(), '');
    assert.ok((await vm.sandbox.readLog()).length > lines);
  });
});

// ---------------------------------------------------------------------------------------------
// 3. apt's folders, and the folder of the repository file
// ---------------------------------------------------------------------------------------------

describe("apt's folders and the repository file's folder on a full disk: install fails with 28, says so, and changes nothing", () => {
  let vm: LinuxVm;
  let handler: HandlerInstance;
  let pristine: Record<string, string | undefined>;
  before(async () => {
    vm = await linuxVm({ kind: 'debian', label: 'disk-apt' });
    handler = await vm.sandbox.unpack(zip, version);
    await handler.writeSettings(0, { publicSettings: vm.publicSettings });
    pristine = await snapshot(vm);
  });
  after(async () => vm?.close());

  /** Everything this install did is undone, and the status says what happened. */
  async function assertNothingChanged(message: RegExp): Promise<void> {
    assert.deepEqual(await snapshot(vm), pristine);
    assert.equal(await aadsshloginStatus(vm), '', 'aadsshlogin is not installed, not even half');
    assert.equal(await dpkgAudit(vm), '', 'dpkg knows of no half-installed package');
    const state = await vm.sandbox.readState();
    assert.deepEqual(state?.journal, []);
    assert.equal(state?.owner ?? null, null);
    const status = await handler.agentStatus(0);
    assert.equal(status.status, 'error');
    assert.equal(status.code, 28);
    assert.match(status.message, message);
    assert.match(status.message, /The VM was returned to how it was before this run\./);
    assert.match(status.message, /then apply the extension again\.$/, 'the remedy is kept');
  }

  const DISK_FULL =
    /^Install failed: The VM's disk is full: free space \(and inodes\) on the file systems holding \/var\/cache\/apt, \/var\/lib\/apt\/lists and \/var\/lib\/dpkg \(df -h and df -i show which one; apt-get clean empties the package cache\)\. "apt-get /;

  for (const [folder, size, step, says] of [
    [
      '/var/cache/apt/archives',
      '64k',
      'apt-get install',
      /Error writing to file - write \(28: No space left on device\)/,
    ],
    // apt's caches: the refresh fails, or the install once the lists are there already.
    ['/var/cache', '16m', 'apt-get (update|install)', /No space left on device/],
    [
      '/var/lib/apt/lists',
      '64k',
      'apt-get update',
      /Error writing to file - write \(28: No space left on device\)/,
    ],
    ['/var/lib/dpkg', '16m', 'apt-get install', /\/var\/lib\/dpkg\/.*No space left on device/],
  ] as const) {
    test(`${folder} full: ${step.replace('(update|install)', 'update or install')} fails, and the message says the disk is full, which folders to free and apt's own words`, async () => {
      await withFullDisk(vm.world, folder, { size }, async () => {
        const run = await handler.run('install', { seq: 0 });
        assertSays(run, 28, 'stdout', DISK_FULL);
        assert.match(run.stdout, new RegExp(`"${step} -q `));
        assert.match(run.stdout, says);
      });
      await assertNothingChanged(/The VM's disk is full: free space/);
    });
  }

  test('/etc/apt/sources.list.d full: the repository file cannot be written, the message names it and the full file system, the keyring is removed again', async () => {
    await withFullDisk(vm.world, '/etc/apt/sources.list.d', {}, async () => {
      const run = await handler.run('install', { seq: 0 });
      assertSays(
        run,
        28,
        'stdout',
        new RegExp(
          `^Install failed: Cannot write ${literally(LIST)}: ${fullFileSystem('/etc/apt/sources.list.d').source}`,
        ),
      );
    });
    await assertNothingChanged(/Cannot write \/etc\/apt\/sources\.list\.d\/microsoft-prod\.list/);
  });

  test('with the space freed, the same install succeeds', async () => {
    assertExit(await handler.run('install', { seq: 0 }), 0);
    assert.match(await aadsshloginStatus(vm), /install ok installed/);
    assert.equal((await handler.agentStatus(0)).status, 'success');
  });
});

// ---------------------------------------------------------------------------------------------
// 4. The handler's state folder
// ---------------------------------------------------------------------------------------------

describe("the handler's state folder on a full disk: 64, nothing half-changed", () => {
  let vm: LinuxVm;
  let handler: HandlerInstance;
  let stateFolder = '';
  let pristine: Record<string, string | undefined>;
  before(async () => {
    vm = await linuxVm({ kind: 'debian', label: 'disk-state' });
    handler = await vm.sandbox.unpack(zip, version);
    await handler.writeSettings(0, { publicSettings: vm.publicSettings });
    stateFolder = vm.sandbox.stateFolder();
    await fs.mkdir(stateFolder, { recursive: true, mode: 0o700 });
    pristine = await snapshot(vm);
  });
  after(async () => vm?.close());

  async function assertError64(message: RegExp): Promise<void> {
    const status = await handler.agentStatus(0);
    assert.equal(status.status, 'error');
    assert.equal(status.code, 64);
    assert.match(status.message, message);
    assert.match(status.message, /or make it writable again, then apply the extension again\.$/);
  }

  test('no room at all: install exits 64 naming the lock file and the full file system; nothing installed, and no empty lock left to trip the next command', async () => {
    await withFullDisk(vm.world, stateFolder, {}, async () => {
      const run = await handler.run('install', { seq: 0 });
      assertSays(
        run,
        64,
        'stdout',
        new RegExp(
          `^Install failed: Cannot write the lock file ${literally(path.join(stateFolder, 'lock'))}: ${fullFileSystem(stateFolder).source}`,
        ),
      );
    });
    assert.deepEqual(await listing(stateFolder), []);
    assert.deepEqual(await snapshot(vm), pristine);
    assert.equal(await aadsshloginStatus(vm), '');
    await assertError64(/Cannot write the lock file/);
  });

  test('room for the lock only: install exits 64 naming state.json before changing anything; the lock is released', async () => {
    await withFullDisk(vm.world, stateFolder, { room: PAGE }, async () => {
      const run = await handler.run('install', { seq: 0 });
      assertSays(
        run,
        64,
        'stdout',
        new RegExp(
          `^Install failed: Cannot write the handler state ${literally(path.join(stateFolder, 'state.json'))}: ${fullFileSystem(stateFolder).source}`,
        ),
      );
    });
    assert.deepEqual(await listing(stateFolder), []);
    assert.deepEqual(await snapshot(vm), pristine);
    assert.equal(await aadsshloginStatus(vm), '');
    await assertError64(/Cannot write the handler state/);
  });

  test('an installed VM whose state cannot be saved: enable exits 64, the packages and the state file stay as they were', async () => {
    assertExit(await handler.run('install', { seq: 0 }), 0);
    const installed = await snapshot(vm);
    const stateText = await fs.readFile(path.join(stateFolder, 'state.json'), 'utf8');
    await withFullDisk(vm.world, stateFolder, { room: PAGE }, async () => {
      const run = await handler.run('enable', { seq: 0 });
      assertSays(run, 64, 'stdout', /^Enable failed: Cannot write the handler state /);
    });
    assert.deepEqual(await listing(stateFolder), ['state.json']);
    assert.equal(await fs.readFile(path.join(stateFolder, 'state.json'), 'utf8'), stateText);
    assert.deepEqual(await snapshot(vm), installed);
    assert.match(await aadsshloginStatus(vm), /install ok installed/);
    await assertError64(/Cannot write the handler state/);

    assertExit(await handler.run('enable', { seq: 0 }), 0);
    assert.equal((await handler.agentStatus(0)).status, 'success');
  });
});
