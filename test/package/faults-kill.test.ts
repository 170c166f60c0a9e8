/**
 * Fault 1: the handler SIGKILLed at every phase, as the guest agent kills it on timeout
 * (`os.killpg(pgid, SIGKILL)` on the process group the command was started in, so the handler and
 * every program it runs die with it, except the dpkg that apt-get starts in a session of its own;
 * agent-protocol.md §1.2). Each test runs the built
 * AADSSHLoginForLinux zip chrooted in a throwaway VM (vm.ts) with real apt and dpkg (Debian 12) or
 * real dnf and rpm (RHEL 9.4), holds the handler at one phase deterministically (a delayed
 * repository, a maintainer script that waits for a gate file, a program the handler runs that
 * waits), kills the whole group there, and then runs the command the agent runs next. The killed
 * command must never have reported success; the next one must converge to the right end state:
 * exit 0 with status success, the packages fully installed (never half-installed or
 * half-configured) or completely gone, exactly our repository and key files or none, the handler's
 * journal empty, and no lock left behind. Assumes `npm run package` ran.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import {
  AGENT_PATH,
  assertExit,
  type CommandRun,
  extensionVersionOf,
  type HandlerInstance,
  LINUX_HANDLER_NAME,
  type Operation,
  requireZip,
} from './agent-driver.js';
import { buildDeb, NEW_VERSION, type StandInPackage } from './repos.js';
import { type LinuxVm, unpackHandler, withLinuxVm, withSelinuxPolicy } from './vm.js';
import { KEYRING, LIST, RPM_KEY, YUM_REPO } from './vm-files.js';

const version = extensionVersionOf();
let zip = '';

before(async () => {
  zip = await requireZip(LINUX_HANDLER_NAME);
});

/** Gate files in the VM (see StandInPackage.installGate): `<gate>.reached` says "waiting". */
const INSTALL_GATE = '/tmp/aad-test-install-gate';
const REMOVE_GATE = '/tmp/aad-test-remove-gate';
const SEMODULE_GATE = '/tmp/aad-test-semodule-gate';

/** Unpacks the zip into the VM's agent folder with settings for sequence number 0. */
function handlerIn(vm: LinuxVm): Promise<HandlerInstance> {
  return unpackHandler(vm, zip, version);
}

/**
 * Waits up to `ms` for `condition` (polled every 50 ms); fails naming `what`, at once when
 * `running` ends first.
 */
async function waitFor(
  what: string,
  condition: () => Promise<boolean>,
  running?: Promise<CommandRun>,
  ms = 120_000,
): Promise<void> {
  let finished: CommandRun | undefined;
  void running?.then((run) => {
    finished = run;
  });
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (finished) {
      throw new Error(
        `the command ended (exit ${finished.exitCode}) before ${what}\nstdout: ${finished.stdout}\nstderr: ${finished.stderr}`,
      );
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms / 1000} s waiting: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Starts a handler command as the agent does; `kill()` is the agent's timeout: SIGKILL to the
 * command's process group, then the command's end.
 */
function startCommand(
  handler: HandlerInstance,
  operation: Operation,
  seq: number,
): { running: Promise<CommandRun>; kill(): Promise<CommandRun> } {
  let pgid: number | undefined;
  const running = handler.run(operation, {
    seq,
    onStart: (pid) => {
      pgid = pid;
    },
  });
  return {
    running,
    async kill() {
      assert.ok(pgid, 'the command was started');
      process.kill(-pgid, 'SIGKILL');
      const run = await running;
      assert.equal(run.signal, 'SIGKILL', `${operation} was killed: exit ${run.exitCode}`);
      const left = await processesInGroup(pgid);
      assert.deepEqual(left, [], `processes of the killed group still run: ${left.join('; ')}`);
      return run;
    },
  };
}

/**
 * `pid cmdline` of the package managers' processes in the VM (the world's mount namespace):
 * apt, dpkg and the maintainer scripts it runs, dnf, rpm, semodule, and the handler itself.
 */
async function packageManagerProcesses(vm: LinuxVm): Promise<string[]> {
  const namespace = await fs.readlink(`/proc/${vm.world.pid}/ns/mnt`);
  const found: string[] = [];
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === vm.world.pid) continue;
    const link = await fs.readlink(`/proc/${entry}/ns/mnt`).catch(() => undefined);
    if (link !== namespace) continue;
    const cmdline = (await fs.readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => ''))
      .replaceAll('\0', ' ')
      .trim();
    // The program, or the script an interpreter runs (dnf is Python).
    const programs = cmdline
      .split(' ')
      .slice(0, 2)
      .map((word) => path.basename(word));
    if (
      programs.some((program) => /^(apt-get|apt|dpkg|dnf|rpm|semodule)$/.test(program)) ||
      cmdline.includes('/var/lib/dpkg/info/') ||
      cmdline.includes('aadsshlogin-handler')
    ) {
      found.push(`${entry} ${cmdline}`);
    }
  }
  return found;
}

/** `pid cmdline` of every process whose process group is `pgid` (zombies are dead already). */
async function processesInGroup(pgid: number): Promise<string[]> {
  const found: string[] = [];
  for (let round = 0; round < 100; round++) {
    found.length = 0;
    for (const entry of await fs.readdir('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const stat = await fs.readFile(`/proc/${entry}/stat`, 'utf8').catch(() => undefined);
      if (stat === undefined) continue;
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // Fields after the name: state (3), ppid (4), pgrp (5).
      if (fields[0] === 'Z' || Number(fields[2]) !== pgid) continue;
      const cmdline = await fs.readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
      found.push(`${entry} ${cmdline.replaceAll('\0', ' ').trim()}`);
    }
    if (found.length === 0) return [];
    // SIGKILL is delivered at once, but the kernel takes a moment to finish each process.
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return found;
}

/** `status.status` and `status.operation` of `status/<seq>.status`, as written. */
async function writtenStatus(
  handler: HandlerInstance,
  seq: number,
): Promise<{ status: string; operation: string } | undefined> {
  const text = await handler.readStatusText(seq);
  if (text === undefined) return undefined;
  const [entry] = JSON.parse(text) as [{ status: { status: string; operation: string } }];
  return { status: entry.status.status, operation: entry.status.operation };
}

/**
 * What a killed install or enable leaves for the agent to read: `transitioning` (its progress
 * report), never `success`; and no terminal result recorded in the handler's state.
 */
async function assertKilledReportedNothing(
  vm: LinuxVm,
  handler: HandlerInstance,
  killed: CommandRun,
  appliedBefore: number,
): Promise<void> {
  const status = await writtenStatus(handler, 0);
  assert.equal(status?.status, 'transitioning', `${killed.operation}: ${JSON.stringify(status)}`);
  const state = await vm.sandbox.readState();
  assert.equal(state?.applied.length ?? 0, appliedBefore, 'no result recorded for the killed run');
  assert.ok(
    (state?.journal.length ?? 0) > 0,
    `the killed run left its journal for the next command: ${JSON.stringify(state)}`,
  );
  // The killed holder's lock file stays behind (the next command takes it over).
  assert.ok(await exists(path.join(vm.sandbox.stateFolder(), 'lock')), 'the lock was left behind');
}

async function exists(file: string): Promise<boolean> {
  return fs.stat(file).then(
    () => true,
    () => false,
  );
}

/** `name → ${Status}` of every package dpkg knows in the VM (`install ok half-configured`, …). */
async function dpkgStates(vm: LinuxVm): Promise<Map<string, string>> {
  const result = await vm.world.exec([
    'dpkg-query',
    '-W',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's format syntax
    '-f=${Package}\\t${Status}\\n',
  ]);
  const states = new Map<string, string>();
  for (const line of result.stdout.split('\n')) {
    const [name, status] = line.split('\t');
    if (name && status) states.set(name, status);
  }
  return states;
}

/** Our packages' dpkg status lines, e.g. `{ aadsshlogin: 'install ok half-configured' }`. */
async function ourDpkgStates(vm: LinuxVm): Promise<Record<string, string>> {
  const states = await dpkgStates(vm);
  return Object.fromEntries(
    ['aadsshlogin', 'aadsshlogin-selinux']
      .filter((name) => states.has(name))
      .map((name) => [name, states.get(name) ?? '']),
  );
}

/** dpkg's own audit: nothing half-installed, half-configured or unpacked, nothing interrupted. */
async function assertDpkgConsistent(vm: LinuxVm): Promise<void> {
  const audit = await vm.world.exec(['dpkg', '--audit']);
  assert.equal(audit.stdout.trim(), '', `dpkg --audit: ${audit.stdout}${audit.stderr}`);
  const updates = (await fs.readdir(vm.root.path('/var/lib/dpkg/updates'))).filter((name) =>
    /^\d+$/.test(name),
  );
  assert.deepEqual(updates, [], 'no interrupted dpkg run is pending');
  const check = await vm.world.exec(['apt-get', 'check', '-q']);
  assert.equal(check.exitCode, 0, `apt-get check: ${check.stdout}${check.stderr}`);
}

/** The handler's own state after a command that succeeded: empty journal, no lock left. */
async function assertHandlerSettled(vm: LinuxVm): Promise<void> {
  const state = await vm.sandbox.readState();
  assert.deepEqual(state?.journal, [], `journal: ${JSON.stringify(state?.journal)}`);
  const folder = vm.sandbox.stateFolder();
  assert.equal(await exists(path.join(folder, 'lock')), false, 'no lock left');
  assert.equal(await exists(path.join(folder, 'lock.break')), false, 'no lock breaker left');
}

/** What the agent makes of the status of sequence number 0: success. */
async function assertSuccess(handler: HandlerInstance, run: CommandRun): Promise<void> {
  assertExit(run, 0);
  const status = await handler.agentStatus(0);
  assert.equal(status.status, 'success', status.message);
}

/** The files in the VM's apt source folder and keyring folder (to see stray ones). */
async function aptFiles(vm: LinuxVm): Promise<string[]> {
  const list = async (folder: string) =>
    (await fs.readdir(vm.root.path(folder)).catch(() => [] as string[])).map(
      (name) => `${folder}/${name}`,
    );
  return [
    ...(await list('/etc/apt/sources.list.d')),
    ...(await list('/usr/share/keyrings')),
  ].sort();
}

/**
 * Debian, converged: aadsshlogin (and the `also` packages) `install ok installed`, nothing of
 * dpkg pending, exactly our source file and keyring besides what was there before, the
 * installation record naming them, and the handler settled.
 */
async function assertInstalledOnDebian(
  vm: LinuxVm,
  filesBefore: readonly string[],
  also: readonly string[] = [],
): Promise<void> {
  const expected = Object.fromEntries(
    [...also, 'aadsshlogin'].map((name) => [name, 'install ok installed']),
  );
  assert.deepEqual(await ourDpkgStates(vm), expected);
  await assertDpkgConsistent(vm);
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's format syntax
  const installed = await vm.world.exec(['dpkg-query', '-W', '-f=${Version}', 'aadsshlogin']);
  assert.equal(installed.stdout, NEW_VERSION);
  assert.deepEqual(await aptFiles(vm), [...filesBefore, LIST, KEYRING].sort());
  assert.match((await vm.root.readFile(LIST)) ?? '', /^# Written by the AADSSHLoginForLinux/);
  assert.match((await vm.root.readFile('/etc/nsswitch.conf')) ?? '', /passwd:.*\baad\b/);
  await assertHandlerSettled(vm);
  const record = (await vm.sandbox.readState())?.installed as {
    files?: { path: string }[];
    packages?: string[];
  };
  assert.deepEqual(record.files?.map((file) => file.path).sort(), [KEYRING, LIST].sort());
  assert.deepEqual([...(record.packages ?? [])].sort(), [...also, 'aadsshlogin'].sort());
}

/** Debian, removed: dpkg no longer knows our packages, none of our files, the handler settled. */
async function assertRemovedFromDebian(vm: LinuxVm, filesBefore: readonly string[]) {
  assert.deepEqual(await ourDpkgStates(vm), {}, 'purged: dpkg no longer knows them');
  await assertDpkgConsistent(vm);
  assert.deepEqual(await aptFiles(vm), [...filesBefore].sort());
  assert.doesNotMatch((await vm.root.readFile('/etc/nsswitch.conf')) ?? '', /\baad\b/);
  assert.equal(await vm.root.readFile('/usr/sbin/aad_certhandler'), undefined);
  await assertHandlerSettled(vm);
  const installed = (await vm.sandbox.readState())?.installed as {
    files?: unknown[];
    packages?: unknown[];
  };
  assert.deepEqual(installed.files ?? [], []);
  assert.deepEqual(installed.packages ?? [], []);
}

/** The handler's log messages of one operation. */
async function logOf(vm: LinuxVm, operation: Operation): Promise<string[]> {
  return (await vm.sandbox.readLog())
    .filter((line) => line.operation === operation)
    .map((line) => line.message ?? '');
}

/** Opens a gate the package's script (or a program) waits at. */
async function open(vm: LinuxVm, gate: string): Promise<void> {
  await vm.root.writeFile(gate, '');
}

const reached = (vm: LinuxVm, gate: string) => async () =>
  (await vm.root.readFile(`${gate}.reached`)) !== undefined;

/** The stand-in aadsshlogin in its newest version only, with the given gates. */
function gatedPackages(gates: Pick<StandInPackage, 'installGate' | 'removeGate'>) {
  return [{ name: 'aadsshlogin', version: NEW_VERSION, ...gates }];
}

describe('AADSSHLoginForLinux SIGKILLed at every phase on Debian 12 (apt, dpkg)', () => {
  test('killed after the source file is written, while apt-get update waits: install again converges', async () => {
    // The repository's indexes answer after a minute: apt-get update is held after our files
    // are written (the keys are fetched before, from /keys/, undelayed).
    await withLinuxVm(
      { kind: 'debian', label: 'kill-list', faults: [{ prefix: '/repos/', delayMs: 60_000 }] },
      async (vm) => {
        const filesBefore = await aptFiles(vm);
        const handler = await handlerIn(vm);
        const install = startCommand(handler, 'install', 0);
        await waitFor(
          'apt-get update asks the repository for its indexes',
          async () =>
            (await vm.root.readFile(LIST)) !== undefined &&
            (await packageManagerProcesses(vm)).some((line) =>
              / apt-get update /.test(` ${line} `),
            ),
          install.running,
        );
        assert.ok(await vm.root.readFile(KEYRING), 'the keyring was written before the list');
        const killed = await install.kill();
        await assertKilledReportedNothing(vm, handler, killed, 0);
        assert.equal((await dpkgStates(vm)).has('aadsshlogin'), false);
        assert.deepEqual(await packageManagerProcesses(vm), [], 'apt-get update died with it');

        await vm.server.setFaults([]);
        const again = await handler.run('install', { seq: 0 });
        await assertSuccess(handler, again);
        await assertInstalledOnDebian(vm, filesBefore);
        const log = (await vm.sandbox.readLog()).map((line) => line.message ?? '');
        assert.ok(
          log.some((line) => /An earlier command stopped halfway/.test(line)),
          'the killed run was noticed and undone first',
        );
        const enable = await handler.run('enable', { seq: 0 });
        await assertSuccess(handler, enable);
        assert.match((await handler.agentStatus(0)).message, /nothing needed changing/);
      },
    );
  });

  test('killed while dpkg configures aadsshlogin: enable again waits for the orphaned dpkg, purges the half-configured package and installs it', async () => {
    await withLinuxVm(
      {
        kind: 'debian',
        label: 'kill-dpkg',
        repository: { packages: gatedPackages({ installGate: INSTALL_GATE }) },
      },
      async (vm) => {
        const filesBefore = await aptFiles(vm);
        const handler = await handlerIn(vm);
        const enable = startCommand(handler, 'enable', 0);
        await waitFor("aadsshlogin's postinst runs", reached(vm, INSTALL_GATE), enable.running);
        const killed = await enable.kill();
        await assertKilledReportedNothing(vm, handler, killed, 0);
        // apt-get runs dpkg in a session of its own (on its pseudo-terminal, with SIGHUP
        // ignored), so dpkg and the maintainer script survive the agent's killpg as orphans,
        // holding dpkg's lock, with the package half-configured.
        const orphans = await packageManagerProcesses(vm);
        assert.ok(
          orphans.some((line) => /\/dpkg .*--configure/.test(line)),
          `dpkg goes on after the kill: ${orphans.join('; ')}`,
        );
        assert.deepEqual(await ourDpkgStates(vm), { aadsshlogin: 'install ok half-configured' });

        // The agent runs enable again while the orphan still works: enable waits for its lock.
        const again = handler.run('enable', { seq: 0 });
        await waitFor(
          'enable waits for the orphaned dpkg',
          async () =>
            (await logOf(vm, 'enable')).some((line) =>
              /Waiting for the package manager: dpkg \(pid \d+\) holds \/var\/lib\/dpkg\/lock/.test(
                line,
              ),
            ),
          again,
        );
        // The orphan finishes the script, then dies telling the dead apt-get: dpkg is left
        // interrupted (apt refuses to run until `dpkg --configure -a`), the package half-configured.
        await open(vm, INSTALL_GATE);
        await assertSuccess(handler, await again);
        await assertInstalledOnDebian(vm, filesBefore);
        const log = await logOf(vm, 'enable');
        assert.ok(log.some((line) => /An earlier command stopped halfway/.test(line)));
        assert.ok(
          log.some((line) => line === 'Undone: the installation of aadsshlogin'),
          'the half-configured package of the killed run was purged before installing again',
        );
      },
    );
  });

  test('dpkg left interrupted by a kill before the handler runs: install finishes it with dpkg --configure -a, then installs', async () => {
    await withLinuxVm({ kind: 'debian', label: 'kill-interrupted' }, async (vm) => {
      // Another installer (not apt: no pseudo-terminal, so its dpkg is in its process group)
      // killed by a timeout while a package's postinst ran.
      const other = await buildDeb({
        name: 'aad-test-other',
        version: '1.0',
        installGate: INSTALL_GATE,
      });
      await vm.root.writeFile('/tmp/aad-test-other.deb', await readFile(other));
      const [file, ...args] = vm.world.wrap(['dpkg', '-i', '/tmp/aad-test-other.deb'], '/');
      const child = spawn(file ?? 'nsenter', args, {
        detached: true,
        stdio: 'ignore',
        env: { PATH: AGENT_PATH, LANG: 'C' },
      });
      const exited = new Promise((resolve) => child.once('exit', resolve));
      await waitFor("aad-test-other's postinst runs", reached(vm, INSTALL_GATE));
      process.kill(-(child.pid ?? 0), 'SIGKILL');
      await exited;
      assert.deepEqual(await processesInGroup(child.pid ?? 0), []);
      assert.equal((await dpkgStates(vm)).get('aad-test-other'), 'install ok half-configured');
      const refused = await vm.world.exec(['apt-get', 'check', '-q']);
      assert.match(
        refused.stderr,
        /dpkg was interrupted, you must manually run 'dpkg --configure -a'/,
      );

      await open(vm, INSTALL_GATE);
      const filesBefore = await aptFiles(vm);
      const handler = await handlerIn(vm);
      await assertSuccess(handler, await handler.run('install', { seq: 0 }));
      await assertInstalledOnDebian(vm, filesBefore);
      assert.equal((await dpkgStates(vm)).get('aad-test-other'), 'install ok installed');
      const log = await logOf(vm, 'install');
      assert.ok(
        log.some((line) =>
          /^The package manager was interrupted halfway .*; finishing that first: dpkg --force-confold --force-confdef --configure -a$/.test(
            line,
          ),
        ),
        log.join('\n'),
      );
    });
  });

  test('killed after the packages are installed, before the status is written: install again reports success honestly', async () => {
    await withLinuxVm({ kind: 'debian', label: 'kill-verify' }, async (vm) => {
      // A VM with an SELinux policy: after installing, the handler asks `semodule -l` whether
      // aad_permissions is loaded. This semodule waits at a gate before it answers.
      await withSelinuxPolicy(
        vm,
        [
          '#!/bin/sh',
          `: > ${SEMODULE_GATE}.reached`,
          `while [ ! -e ${SEMODULE_GATE} ]; do sleep 0.1; done`,
          'for f in /usr/share/selinux/packages/*.pp; do [ -e "$f" ] && basename "$f" .pp; done',
          'exit 0',
          '',
        ].join('\n'),
      );
      const filesBefore = await aptFiles(vm);
      const handler = await handlerIn(vm);
      const install = startCommand(handler, 'install', 0);
      await waitFor(
        'the handler verifies the registrations',
        reached(vm, SEMODULE_GATE),
        install.running,
      );
      // The work is done on the VM, but not reported.
      assert.deepEqual(await ourDpkgStates(vm), {
        'aadsshlogin-selinux': 'install ok installed',
        aadsshlogin: 'install ok installed',
      });
      const killed = await install.kill();
      await assertKilledReportedNothing(vm, handler, killed, 0);
      assert.deepEqual(await packageManagerProcesses(vm), [], 'semodule died with it');

      await open(vm, SEMODULE_GATE);
      const again = await handler.run('install', { seq: 0 });
      await assertSuccess(handler, again);
      await assertInstalledOnDebian(vm, filesBefore, ['aadsshlogin-selinux']);
      const registrations = (await handler.agentStatus(0)).substatus.find(
        (entry) => entry.name === 'SelinuxRegistration',
      );
      assert.match(registrations?.message ?? '', /aad_permissions/);
    });
  });

  test('killed while uninstall purges aadsshlogin: uninstall again removes everything of ours', async () => {
    await withLinuxVm(
      {
        kind: 'debian',
        label: 'kill-purge',
        repository: { packages: gatedPackages({ removeGate: REMOVE_GATE }) },
      },
      async (vm) => {
        const filesBefore = await aptFiles(vm);
        const handler = await handlerIn(vm);
        await assertSuccess(handler, await handler.run('install', { seq: 0 }));
        await assertSuccess(handler, await handler.run('enable', { seq: 0 }));
        await assertSuccess(handler, await handler.run('disable', { seq: 0 }));
        const applied = (await vm.sandbox.readState())?.applied.length ?? 0;

        const uninstall = startCommand(handler, 'uninstall', 0);
        await waitFor("aadsshlogin's prerm runs", reached(vm, REMOVE_GATE), uninstall.running);
        await uninstall.kill();
        // dpkg --purge is the handler's own child: it died with the group.
        assert.deepEqual(await packageManagerProcesses(vm), []);
        // Uninstall reports only its result: the status file still holds disable's.
        assert.equal((await writtenStatus(handler, 0))?.operation, 'Disable');
        const state = await vm.sandbox.readState();
        assert.equal(state?.applied.length, applied, 'no result recorded for the killed uninstall');
        assert.notDeepEqual(await ourDpkgStates(vm), {}, 'the package was not removed yet');

        await open(vm, REMOVE_GATE);
        const again = await handler.run('uninstall', { seq: 0 });
        assertExit(again, 0);
        assert.equal((await writtenStatus(handler, 0))?.status, 'success');
        await assertRemovedFromDebian(vm, filesBefore);
      },
    );
  });
});

describe('AADSSHLoginForLinux SIGKILLed during the package install on RHEL 9.4 (dnf, rpm)', () => {
  test("killed while rpm runs aadsshlogin's %post: install again converges", async () => {
    await withLinuxVm(
      {
        kind: 'rpm',
        label: 'kill-rpm',
        repository: {
          rpm: ['rhel/9/prod'],
          packages: gatedPackages({ installGate: INSTALL_GATE }),
        },
      },
      async (vm) => {
        const handler = await handlerIn(vm);
        const install = startCommand(handler, 'install', 0);
        await waitFor("aadsshlogin's %post runs", reached(vm, INSTALL_GATE), install.running);
        const killed = await install.kill();
        await assertKilledReportedNothing(vm, handler, killed, 0);
        // dnf runs rpm in its own process, and rpm the scriptlet: all died with the group.
        assert.deepEqual(await packageManagerProcesses(vm), []);
        // rpm records the package before its %post: installed, with the script never finished.
        const halfway = await vm.world.exec(['rpm', '-q', 'aadsshlogin']);
        assert.equal(halfway.exitCode, 0, `${halfway.stdout}${halfway.stderr}`);

        await open(vm, INSTALL_GATE);
        const again = await handler.run('install', { seq: 0 });
        await assertSuccess(handler, again);
        assert.ok(
          (await logOf(vm, 'install')).includes('Undone: the installation of aadsshlogin'),
          "the killed run's package was removed before installing it again, %post and all",
        );
        const installed = await vm.world.exec([
          'rpm',
          '-q',
          '--qf',
          '%{NAME} %{VERSION}\\n',
          'aadsshlogin',
        ]);
        assert.equal(installed.stdout, `aadsshlogin ${NEW_VERSION}\n`, 'installed exactly once');
        const verify = await vm.world.exec(['rpm', '-V', 'aadsshlogin']);
        assert.equal(verify.exitCode, 0, `rpm -V: ${verify.stdout}${verify.stderr}`);
        assert.match((await vm.root.readFile(YUM_REPO)) ?? '', /^# Written by the AADSSHLogin/);
        assert.ok(await vm.root.readFile(RPM_KEY));
        const repos = await fs.readdir(vm.root.path('/etc/yum.repos.d'));
        assert.deepEqual(repos, ['microsoft-prod.repo']);
        await assertHandlerSettled(vm);

        assertExit(await handler.run('uninstall', { seq: 0 }), 0);
        const gone = await vm.world.exec(['rpm', '-q', 'aadsshlogin']);
        assert.notEqual(gone.exitCode, 0, gone.stdout);
        assert.equal(await vm.root.readFile(YUM_REPO), undefined);
        assert.equal(await vm.root.readFile(RPM_KEY), undefined);
        await assertHandlerSettled(vm);
      },
    );
  });
});
