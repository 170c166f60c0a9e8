/**
 * The test VMs themselves (vm.ts: a world chrooted into a throwaway root, roots.ts `vmRoot`):
 * what a command inside sees (the mock IMDS, the VM's own files and /proc, the agent sandbox at
 * its own path), the real apt, dnf, zypper and rpm doing there exactly what the handler will have
 * them do, and nothing of it reaching this machine. The first run builds the VM roots' caches
 * (seconds to a minute, after the debootstrap cache); later runs take seconds per VM.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { parseOsRelease } from '../../src/linux/checks/os-release.js';
import { type Command, packageManagers } from '../../src/linux/package-managers/index.js';
import { rpmKeyName, rpmKeys } from '../../src/linux/package-managers/rpm-family.js';
import { planRepository, type RepositoryPlan } from '../../src/linux/repository.js';
import { parseLinuxSettings } from '../../src/linux/settings.js';
import { unameMachine } from '../../src/linux/system.js';
import { osReleaseFixture } from '../fixtures.js';
import {
  AGENT_PATH,
  assertExit,
  ensureWaagent,
  extensionVersionOf,
  LINUX_HANDLER_NAME,
  requireZip,
  runTool,
  stopChild,
} from './agent-driver.js';
import { DEBIAN_SSHD_CONFIG, type Diagnostic, timed } from './common.js';
import {
  buildDeb,
  dearmored,
  LEGACY_VERSION,
  NEW_VERSION,
  OLD_VERSION,
  PAM_LINE,
  SSHD_BLOCK,
} from './repos.js';
import { type LinuxVm, linuxVm } from './vm.js';
import { meminfo, TOKEN_PATH } from './world.js';

/** Makes a VM, printing how long it took (the first one also builds its root's cache). */
async function startVm(options: Parameters<typeof linuxVm>[0]): Promise<LinuxVm> {
  const start = performance.now();
  const vm = await linuxVm(options);
  console.log(
    `# ${options.label ?? options.kind} VM up in ${((performance.now() - start) / 1000).toFixed(2)} s`,
  );
  vmRoots.push(vm.root.dir);
  return vm;
}

// ---------------------------------------------------------------------------------------------
// This machine, before and after: nothing of what happens in the VMs may reach it
// ---------------------------------------------------------------------------------------------

/** What the package managers and the stand-in packages would change if they ran on the machine. */
const HOST_PATHS = [
  '/etc/apt/sources.list.d',
  '/etc/yum.repos.d',
  '/etc/zypp',
  '/etc/pki/rpm-gpg',
  '/usr/share/keyrings',
  '/var/lib/rpm',
  '/var/lib/dpkg/status',
  '/etc/ssh/sshd_config',
  '/etc/nsswitch.conf',
  '/etc/pam.d',
  '/usr/sbin/aad_certhandler',
];

/** Every file below `paths` with a hash of its content ('absent' for a missing path). */
async function snapshot(paths: readonly string[]): Promise<Record<string, string>> {
  const state: Record<string, string> = {};
  const visit = async (file: string): Promise<void> => {
    const stat = await fs.lstat(file).catch(() => undefined);
    if (!stat) {
      state[file] = 'absent';
    } else if (stat.isDirectory()) {
      state[file] = 'directory';
      for (const entry of (await fs.readdir(file)).sort()) await visit(`${file}/${entry}`);
    } else if (stat.isFile()) {
      const hash = createHash('sha256').update(await fs.readFile(file));
      state[file] = `${stat.size} ${hash.digest('hex')}`;
    } else {
      state[file] =
        `${stat.mode.toString(8)} ${stat.isSymbolicLink() ? await fs.readlink(file) : ''}`;
    }
  };
  for (const file of paths) await visit(file);
  return state;
}

/** The machine's mount table (targets and sources). */
async function hostMounts(): Promise<string[]> {
  const listed = await runTool('findmnt', ['--raw', '--noheadings', '--output', 'TARGET,SOURCE']);
  assert.equal(listed.exitCode, 0, listed.stderr);
  return listed.stdout.split('\n').filter((line) => line !== '');
}

let hostBefore: Record<string, string>;
let mountsBefore: string[];
/** The VMs' roots on the machine, to check that they are gone. */
const vmRoots: string[] = [];
let zip = '';

before(async () => {
  hostBefore = await snapshot(HOST_PATHS);
  mountsBefore = await hostMounts();
  zip = await requireZip(LINUX_HANDLER_NAME);
  await ensureWaagent();
});

// ---------------------------------------------------------------------------------------------
// The handler's own commands and files, from its modules (src/linux/package-managers/*,
// src/linux/repository.ts): what runs in the VMs can never drift from what the handler runs
// ---------------------------------------------------------------------------------------------

const { apt, dnf, zypper } = packageManagers;
/** What the handler's commands get from its environment: the agent's PATH, and nothing else. */
const HANDLER_ENV = { PATH: AGENT_PATH };

/**
 * Runs a command in the VM (5 minutes at most): an argv with {@link HANDLER_ENV}, or one of the
 * handler's commands as the handler runs it, its own environment over that.
 */
async function inVm(
  vm: LinuxVm,
  command: readonly string[] | Command,
): Promise<{ stdout: string; stderr: string; exitCode: number }> {
  const { argv, env } = 'argv' in command ? command : { argv: command, env: undefined };
  return vm.world.exec(argv, { env: { ...HANDLER_ENV, ...env }, timeoutMs: 300_000 });
}

/** Like {@link inVm}, failing with the command's output unless it exits 0. */
async function okInVm(vm: LinuxVm, command: readonly string[] | Command): Promise<string> {
  const result = await inVm(vm, command);
  const argv = 'argv' in command ? command.argv : command;
  assert.equal(
    result.exitCode,
    0,
    `${argv.join(' ')} exited ${result.exitCode}:\n${result.stderr}${result.stdout}`,
  );
  return result.stdout;
}

/**
 * The handler's repository plan for `vm`: from the os-release the VM shows (the fixture it was
 * started with, or its root's own), this machine's architecture as the handler names it, and the
 * public settings that point the handler at the served stand-in and its signing key.
 */
async function handlerPlan(vm: LinuxVm): Promise<RepositoryPlan> {
  const os = parseOsRelease(await okInVm(vm, ['cat', '/etc/os-release']));
  const { settings } = parseLinuxSettings(vm.publicSettings);
  return (
    planRepository(os, unameMachine(process.arch), settings) ??
    assert.fail(`the handler has no repository for ${os.id} ${os.versionId}`)
  );
}

/**
 * Writes what the handler writes before its package manager runs: the stand-in's signing key at
 * the plan's key file (a binary keyring for apt, armored for rpm) and the plan's repository file,
 * checked to point at `repositoryPath` on the served stand-in.
 */
async function writeRepository(
  vm: LinuxVm,
  plan: RepositoryPlan,
  repositoryPath: string,
): Promise<void> {
  const key = vm.repository.signingKey;
  assert.deepEqual(plan.keys.trustedFingerprints.slice(-1), [key.fingerprint]);
  const [repository, ...fallbacks] = plan.alternatives;
  assert.equal(repository?.url, `${vm.server.url}/${repositoryPath}`);
  assert.deepEqual(fallbacks, []);
  await vm.root.writeFile(
    plan.keys.file,
    plan.keys.format === 'keyring' ? await dearmored(key) : key.armored,
  );
  await vm.root.writeFile(plan.target.file, repository.content);
}

/** The registrations a stand-in aadsshlogin writes (repos.ts), read from the VM's root. */
async function registrations(vm: LinuxVm, pamFile: string) {
  return {
    sshd: await vm.root.readFile('/etc/ssh/sshd_config'),
    nss: await vm.root.readFile('/etc/nsswitch.conf'),
    pam: await vm.root.readFile(pamFile),
  };
}

function assertRegistered(files: Awaited<ReturnType<typeof registrations>>): void {
  assert.ok(files.sshd?.endsWith(SSHD_BLOCK), `sshd_config:\n${files.sshd}`);
  assert.match(files.nss ?? '', /^passwd:.*\saad$/m);
  assert.ok(files.pam?.includes(PAM_LINE), `PAM:\n${files.pam}`);
}

// ---------------------------------------------------------------------------------------------
// Debian 12
// ---------------------------------------------------------------------------------------------

describe('a Debian 12 VM', () => {
  let vm: LinuxVm;
  before(async () => {
    vm = await startVm({ kind: 'debian', label: 'vm-debian' });
  });
  after(async () => vm?.close());

  test('inside, 169.254.169.254 is the mock IMDS, / is the VM root, and the sandbox is at its own path', async () => {
    await vm.root.writeFile('/etc/aad-vm-marker', 'the VM root\n');
    // No curl or python in a minimal VM: bash's /dev/tcp speaks HTTP/1.0 well enough.
    const script = [
      'set -e',
      'cat /etc/aad-vm-marker',
      'echo "from the VM" > "$2/written-inside"',
      'exec 3<>/dev/tcp/169.254.169.254/80',
      `printf 'GET %s HTTP/1.0\\r\\nHost: 169.254.169.254\\r\\nMetadata: true\\r\\n\\r\\n' "$1" >&3`,
      'cat <&3',
    ].join('\n');
    const tokenUrl = `${TOKEN_PATH}?api-version=2018-02-01&resource=ce6ff14a-7fdc-4685-bbe0-f6afdfcfa8e0`;
    const inside = await okInVm(vm, ['/bin/bash', '-c', script, 'bash', tokenUrl, vm.sandbox.root]);
    const [marker, statusLine] = inside.split('\n');
    assert.equal(marker, 'the VM root');
    assert.match(statusLine ?? '', /^HTTP\/1\.1 200 OK/);
    const body = inside.slice(inside.indexOf('\r\n\r\n') + 4);
    assert.match((JSON.parse(body) as { access_token: string }).access_token, /\.linux-vm$/);
    assert.equal((await vm.world.imdsRequests(TOKEN_PATH)).length, 1);
    // The marker is the VM's; the sandbox is the machine's folder.
    await assert.rejects(fs.access('/etc/aad-vm-marker'), { code: 'ENOENT' });
    assert.equal(await fs.readFile(`${vm.sandbox.root}/written-inside`, 'utf8'), 'from the VM\n');
  });

  test("/proc/locks lists a lock taken in the VM, with its holder's pid and /proc/<pid>/comm", async () => {
    const lockFile = '/var/lib/dpkg/lock-frontend';
    // nsenter, chroot and env exec each other: the holder's pid is this child's.
    const [file, ...args] = vm.world.wrap(
      ['flock', lockFile, '/bin/sh', '-c', 'echo locked; exec cat'],
      '/',
    );
    const holder = spawn(file ?? 'nsenter', args, {
      env: HANDLER_ENV,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    try {
      // Its ready signal: the line it prints once flock(1) holds the lock.
      await new Promise<void>((resolve, reject) => {
        let output = '';
        holder.stdout.setEncoding('utf8');
        holder.stdout.on('data', (chunk: string) => {
          output += chunk;
          if (output.includes('locked\n')) resolve();
        });
        holder.once('exit', (code) => reject(new Error(`the lock holder exited (${code})`)));
      });
      const seen = await okInVm(vm, [
        '/bin/sh',
        '-c',
        'stat -c "%Hd %Ld %i" "$1"; cat /proc/locks',
        'sh',
        lockFile,
      ]);
      const [identity = '', ...locks] = seen.split('\n');
      const [major, minor, inode] = identity.split(' ').map(Number);
      // The handler's reading (src/linux/package-lock.ts): `1: FLOCK ADVISORY WRITE <pid> <maj>:<min>:<inode> …`.
      const holders = locks.flatMap((line) => {
        const match = /^\d+:\s+(\S+)\s+\S+\s+\S+\s+(\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s/i.exec(
          line,
        );
        if (!match || line.includes('->')) return [];
        const same =
          Number.parseInt(match[3] ?? '', 16) === major &&
          Number.parseInt(match[4] ?? '', 16) === minor &&
          Number(match[5]) === inode;
        return same ? [{ type: match[1], pid: Number(match[2]) }] : [];
      });
      assert.deepEqual(holders, [{ type: 'FLOCK', pid: holder.pid }], seen);
      assert.equal(await okInVm(vm, ['cat', `/proc/${holder.pid}/comm`]), 'flock\n');
    } finally {
      await stopChild(holder);
    }
  });

  test("apt-get installs aadsshlogin from the served repository with the handler's own repository file, keyring and commands; the registrations land in the VM", async (t) => {
    const plan = await handlerPlan(vm);
    assert.equal(plan.manager, 'apt');
    const repo = vm.repository.aptRepos[0] ?? assert.fail('no apt repository');
    await writeRepository(vm, plan, repo.path);
    // A VM with sshd has its configuration (the stand-in makes an empty one when there is none).
    await vm.root.writeFile('/etc/ssh/sshd_config', DEBIAN_SSHD_CONFIG);
    const pamFile = '/etc/pam.d/common-auth';
    const before = await registrations(vm, pamFile);
    await timed(t, 'apt-get update', () => okInVm(vm, apt.refresh(plan.target)));
    await timed(t, 'apt-get install aadsshlogin', () =>
      okInVm(vm, apt.install([{ name: 'aadsshlogin' }], plan.target)),
    );
    const installed = await okInVm(vm, apt.queryInstalled(['aadsshlogin']));
    assert.deepEqual(apt.parseInstalled(installed), new Map([['aadsshlogin', NEW_VERSION]]));
    assertRegistered(await registrations(vm, pamFile));
    assert.ok(
      (await vm.server.requests()).some(
        (r) => r.path.endsWith(`/aadsshlogin_${NEW_VERSION}_all.deb`) && r.status === 200,
      ),
    );
    await okInVm(vm, apt.hold('aadsshlogin'));
    assert.equal(await okInVm(vm, ['apt-mark', 'showhold']), 'aadsshlogin\n');
    await okInVm(vm, apt.release('aadsshlogin'));
    assert.equal(await okInVm(vm, ['apt-mark', 'showhold']), '');
    await timed(t, 'dpkg --purge aadsshlogin', () => okInVm(vm, apt.remove(['aadsshlogin'])));
    assert.deepEqual(await registrations(vm, pamFile), before);
    assert.equal(await vm.root.readFile('/usr/sbin/aad_certhandler'), undefined);
    // The VM as it was, for the handler's turn.
    await fs.rm(vm.root.path(plan.target.file));
    await fs.rm(vm.root.path(plan.keys.file));
  });

  test("the built handler runs chrooted in the VM: it finds aadlogin in the VM's dpkg database", async (t) => {
    // In the VM only; the machine has no aadlogin.
    const deb = await buildDeb({ name: 'aadlogin', version: LEGACY_VERSION });
    await vm.root.writeFile('/tmp/aadlogin.deb', await fs.readFile(deb));
    // With the environment the handler gives dpkg (its `dpkg --purge`'s).
    await okInVm(vm, { ...apt.remove([]), argv: ['dpkg', '--install', '/tmp/aadlogin.deb'] });
    assert.notEqual((await runTool('dpkg-query', ['-W', 'aadlogin'])).exitCode, 0);
    const handler = await vm.sandbox.unpack(zip, extensionVersionOf());
    await handler.writeSettings(0, { publicSettings: vm.publicSettings });
    const install = await timed(t, 'handler install', () => handler.run('install', { seq: 0 }));
    assertExit(install, 23);
    const status = await handler.agentStatus(0);
    assert.equal(status.status, 'error');
    assert.deepEqual(
      status.substatus.slice(0, 3).map(({ name, status }) => [name, status]),
      [
        ['OperatingSystem', 'success'],
        ['Memory', 'success'],
        ['LegacyExtension', 'error'],
      ],
    );
    assert.match(status.substatus[0]?.message ?? '', /Debian GNU\/Linux 12/);
    assert.match(status.substatus[2]?.message ?? '', /aadlogin/);
    // It stopped before changing anything; its log is in the sandbox, at the path it was given.
    assert.deepEqual(await fs.readdir(vm.root.path('/etc/apt/sources.list.d')), []);
    assert.ok((await vm.sandbox.readLog()).some((line) => line.operation === 'install'));
    await okInVm(vm, apt.remove(['aadlogin']));
  });

  test("the built handler's install configures the repository and installs aadsshlogin in the VM", async (t) => {
    const handler = await vm.sandbox.unpack(zip, extensionVersionOf());
    await handler.writeSettings(1, { publicSettings: vm.publicSettings });
    const install = await timed(t, 'handler install', () => handler.run('install', { seq: 1 }));
    assertExit(install, 0);
    assert.equal((await handler.agentStatus(1)).status, 'success');
    const plan = await handlerPlan(vm);
    const list = await vm.root.readFile(plan.target.file);
    assert.ok(list?.includes(`${vm.server.url}/repos/microsoft-debian-bookworm-prod`), list);
    assert.equal(list, plan.alternatives[0]?.content);
    const installed = await okInVm(vm, apt.queryInstalled(['aadsshlogin']));
    assert.deepEqual(apt.parseInstalled(installed), new Map([['aadsshlogin', NEW_VERSION]]));
    assertRegistered(await registrations(vm, '/etc/pam.d/common-auth'));
  });
});

// ---------------------------------------------------------------------------------------------
// RHEL 9 (dnf) and SLES 15 (zypper): the rpm family's tools on Debian, with their os-release
// ---------------------------------------------------------------------------------------------

/**
 * An rpm-family VM's repository, set up as the handler sets it up before it installs: the plan
 * for the VM's os-release (checked to name `manager`), its repository file and key written, the
 * key imported into rpm and found by the name the handler looks for, and only our repository
 * refreshed, its signed metadata fetched from the stand-in's `folder`.
 */
async function rpmRepositoryInVm(
  t: Diagnostic,
  vm: LinuxVm,
  manager: 'dnf' | 'zypper',
  folder: string,
): Promise<RepositoryPlan> {
  const plan = await handlerPlan(vm);
  assert.equal(plan.manager, manager);
  await writeRepository(vm, plan, `${folder}/`);
  await okInVm(vm, rpmKeys.import(plan.keys.file));
  await okInVm(vm, rpmKeys.query(rpmKeyName(vm.repository.signingKey.fingerprint)));
  const refresh = packageManagers[manager].refresh(plan.target);
  await timed(t, refresh.argv.join(' '), () => okInVm(vm, refresh));
  const fetched = (await vm.server.requests()).map((r) => `${r.path} ${r.status}`);
  assert.ok(fetched.includes(`/${folder}/repodata/repomd.xml.asc 200`), fetched.join('\n'));
  return plan;
}

describe('a RHEL 9.4 VM', () => {
  let vm: LinuxVm;
  before(async () => {
    vm = await startVm({
      kind: 'rpm',
      label: 'vm-rhel',
      osRelease: await osReleaseFixture('rhel-9.4'),
      repository: { rpm: ['rhel/9/prod'] },
    });
  });
  after(async () => vm?.close());

  test("dnf and rpm install and remove aadsshlogin with the handler's own repository file, key and commands", async (t) => {
    assert.match(await okInVm(vm, ['cat', '/etc/os-release']), /^ID="rhel"$/m);
    const plan = await rpmRepositoryInVm(t, vm, 'dnf', 'rhel/9/prod');
    await timed(t, 'dnf install aadsshlogin', () =>
      okInVm(vm, dnf.install([{ name: 'aadsshlogin' }], plan.target)),
    );
    const query = await inVm(vm, dnf.queryInstalled(['aadsshlogin', 'aadsshlogin-selinux']));
    assert.equal(query.exitCode, 1, 'one of the two is not installed');
    assert.equal(
      query.stdout,
      `aadsshlogin\t${NEW_VERSION}-1\npackage aadsshlogin-selinux is not installed\n`,
    );
    assert.deepEqual(
      dnf.parseInstalled(query.stdout),
      new Map([['aadsshlogin', `${NEW_VERSION}-1`]]),
    );
    assertRegistered(await registrations(vm, '/etc/pam.d/sshd'));
    await timed(t, 'dnf remove aadsshlogin', () => okInVm(vm, dnf.remove(['aadsshlogin'])));
    const removed = await inVm(vm, dnf.queryInstalled(['aadsshlogin']));
    assert.notEqual(removed.exitCode, 0);
    assert.deepEqual(dnf.parseInstalled(removed.stdout), new Map());
    assert.equal(await vm.root.readFile('/usr/sbin/aad_certhandler'), undefined);
  });
});

describe('a SLES 15.5 VM', () => {
  let vm: LinuxVm;
  before(async () => {
    vm = await startVm({
      kind: 'rpm',
      label: 'vm-sles',
      osRelease: await osReleaseFixture('sles-15.5'),
      repository: { rpm: ['sles/15/prod'] },
    });
  });
  after(async () => vm?.close());

  test("zypper installs 1.0.027980001, holds it through an update and removes it, with the handler's own repository file, key and commands", async (t) => {
    assert.match(await okInVm(vm, ['cat', '/etc/os-release']), /^ID="sles"$/m);
    const plan = await rpmRepositoryInVm(t, vm, 'zypper', 'sles/15/prod');
    await timed(t, `zypper install aadsshlogin=${OLD_VERSION}`, () =>
      okInVm(vm, zypper.install([{ name: 'aadsshlogin', version: OLD_VERSION }], plan.target)),
    );
    const installed = new Map([['aadsshlogin', `${OLD_VERSION}-1`]]);
    const query = zypper.queryInstalled(['aadsshlogin']);
    assert.deepEqual(zypper.parseInstalled(await okInVm(vm, query)), installed);
    assertRegistered(await registrations(vm, '/etc/pam.d/sshd'));
    await okInVm(vm, zypper.hold('aadsshlogin'));
    assert.match((await vm.root.readFile('/etc/zypp/locks')) ?? '', /solvable_name: aadsshlogin/);
    // The repository has the newer build; the lock keeps the installed one.
    const available = await okInVm(vm, ['zypper', '-n', 'search', '-s', 'aadsshlogin']);
    assert.match(available, new RegExp(NEW_VERSION.replaceAll('.', '\\.')));
    const update = await timed(t, 'zypper update (locked)', () =>
      okInVm(vm, ['zypper', '-n', 'update']),
    );
    assert.match(update, /locked/);
    assert.deepEqual(zypper.parseInstalled(await okInVm(vm, query)), installed);
    await okInVm(vm, zypper.release('aadsshlogin'));
    assert.doesNotMatch((await vm.root.readFile('/etc/zypp/locks')) ?? '', /aadsshlogin/);
    await timed(t, 'zypper remove aadsshlogin', () => okInVm(vm, zypper.remove(['aadsshlogin'])));
    assert.notEqual((await inVm(vm, query)).exitCode, 0);
  });
});

// ---------------------------------------------------------------------------------------------
// The world's options, inside a root
// ---------------------------------------------------------------------------------------------

describe("a VM's world options", () => {
  test('apply inside its root (meminfo over its own proc, files bound, a file hidden through /bin, a folder added); what it leaves running ends with it', async () => {
    const legacy =
      '/var/lib/waagent/Microsoft.Azure.ActiveDirectory.LinuxSSH.AADLoginForLinux-1.0.1588.3';
    const ubuntu = await osReleaseFixture('ubuntu-22.04');
    const vm = await startVm({
      kind: 'debian',
      label: 'vm-options',
      osRelease: ubuntu,
      meminfo: meminfo(944_000),
      files: { '/etc/hostname': 'aad-test-vm\n' },
      // /bin is a link to usr/bin in the root: resolved inside the root, never on the machine.
      hide: ['/bin/dpkg-query'],
      dirs: [legacy],
    });
    try {
      const seen = await okInVm(vm, [
        '/bin/sh',
        '-c',
        [
          'grep MemTotal /proc/meminfo',
          'cat /etc/hostname',
          'grep ^VERSION_ID= /etc/os-release /usr/lib/os-release',
          'command -v dpkg-query || echo no dpkg-query',
          `test -d '${legacy}' && echo legacy folder`,
          'echo written > /etc/aad-written',
          'sleep 3600 > /dev/null 2>&1 &',
          'echo $!',
        ].join('\n'),
      ]);
      const [memTotal, hostname, etc, usrLib, dpkgQuery, folder, sleeper] = seen.split('\n');
      assert.deepEqual(
        [memTotal, hostname, etc, usrLib, dpkgQuery, folder],
        [
          'MemTotal:         944000 kB',
          'aad-test-vm',
          '/etc/os-release:VERSION_ID="22.04"',
          '/usr/lib/os-release:VERSION_ID="22.04"',
          'no dpkg-query',
          'legacy folder',
        ],
      );
      // The root's own files are as they were; /etc is not overlaid, so what is written there
      // lands in the root.
      assert.notEqual(await vm.root.readFile('/etc/hostname'), 'aad-test-vm\n');
      assert.match((await vm.root.readFile('/etc/os-release')) ?? '', /^ID=debian$/m);
      assert.ok((await fs.stat(vm.root.path('/usr/bin/dpkg-query'))).isFile());
      assert.equal(await vm.root.readFile('/etc/aad-written'), 'written\n');
      // The machine's own are untouched.
      assert.notEqual((await fs.readFile('/proc/meminfo', 'utf8')).split('\n')[0], memTotal);
      const pid = Number(sleeper);
      assert.ok(pid > 0, seen);
      assert.equal(await fs.readFile(`/proc/${pid}/comm`, 'utf8'), 'sleep\n');
      await vm.close();
      // Gone, or a zombie waiting for its new parent to reap it.
      const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
      assert.ok(stat === undefined || /^\d+ \(sleep\) Z /.test(stat), stat);
    } finally {
      await vm.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// After every VM is closed
// ---------------------------------------------------------------------------------------------

describe('after the VMs', () => {
  test('nothing reached the machine: its package state, its mounts and its processes are as before', async () => {
    assert.deepEqual(await snapshot(HOST_PATHS), hostBefore);
    const mounts = await hostMounts();
    assert.deepEqual(mounts, mountsBefore);
    assert.deepEqual(
      mounts.filter((line) => /aad-/.test(line)),
      [],
    );
    assert.equal(vmRoots.length, 4);
    for (const root of vmRoots) await assert.rejects(fs.access(root), { code: 'ENOENT' });
    // No process is left chrooted into a (now deleted) VM root.
    const chrooted: string[] = [];
    for (const entry of await fs.readdir('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const root = await fs.readlink(`/proc/${entry}/root`).catch(() => '');
      if (vmRoots.some((dir) => root.startsWith(dir))) chrooted.push(`${entry}: ${root}`);
    }
    assert.deepEqual(chrooted, []);
  });
});
