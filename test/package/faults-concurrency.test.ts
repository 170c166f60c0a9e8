/**
 * Fault 2, concurrency: commands of the built AADSSHLoginForLinux zip started at the same moment
 * on one test VM (vm.ts, the `debian` kind: real apt and dpkg in a throwaway Debian 12 root, the
 * handler chrooted in it and driven as the agent drives it, agent-driver.ts).
 *
 * The handler's own lock (src/protocol/lock.ts, in the state folder beside the versioned handler
 * folders, so old and new versions share it) lets one command work at a time; the others wait
 * within their deadline and then find the VM as the first one left it. Proven here:
 *
 * - two enables at once on a fresh VM: one installs, the other waits and finds it converged;
 * - the old version's disable overlapping the new version's update (and the old uninstall
 *   overlapping the new install), as an agent restarted in the middle of an update would run
 *   them: nothing the new version needs is removed, and its enable converges;
 * - 50 enables started within one second: all succeed before their deadline, one after another,
 *   and leave a valid status, a valid state and no lock behind.
 *
 * Assumes `npm run package` ran.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { handlerStateSchema } from '../../src/lifecycle/state.js';
import {
  assertExit,
  buildNextVersion,
  type CommandRun,
  extensionVersionOf,
  type HandlerInstance,
  LINUX_HANDLER_NAME,
  type LogLine,
  type NextBuild,
  requireZip,
} from './agent-driver.js';
import { NEW_VERSION } from './repos.js';
import { type LinuxVm, withLinuxVm } from './vm.js';
import { KEYRING } from './vm-files.js';
import { imdsToken, slow, TOKEN_PATH } from './world.js';

/** The old version: this checkout. */
const version = extensionVersionOf();
let zip = '';

/**
 * The new version: the same code built with the next revision (about 20 s, started with the file
 * and awaited by the update scenario only).
 */
let next: Promise<NextBuild>;

before(async () => {
  zip = await requireZip(LINUX_HANDLER_NAME);
  next = buildNextVersion();
  next.catch(() => undefined);
});

after(async () => {
  const built = await next?.catch(() => undefined);
  if (built) await fs.rm(built.copy, { recursive: true, force: true });
});

const SOURCE_FILE = '/etc/apt/sources.list.d/microsoft-prod.list';
const WAITING = 'Waiting for another command of this extension to finish';
/** The handler's own deadline for enable (src/lifecycle/operations.ts): 300 s less 10 %. */
const ENABLE_DEADLINE_MS = 270_000;

/** Starts the commands at the same moment and waits for all of them. */
function together(starts: readonly (() => Promise<CommandRun>)[]): Promise<CommandRun[]> {
  return Promise.all(starts.map((start) => start()));
}

/** How far apart the commands were started, in ms. */
function startSpread(runs: readonly CommandRun[]): number {
  const times = runs.map((run) => run.startedAt);
  return Math.max(...times) - Math.min(...times);
}

/** The handler's log lines of one version, grouped by the process that wrote them. */
async function linesByProcess(vm: LinuxVm, ofVersion: string): Promise<Map<number, LogLine[]>> {
  const byPid = new Map<number, LogLine[]>();
  for (const line of await vm.sandbox.readLog()) {
    if (line.version !== ofVersion || line.pid === undefined) continue;
    byPid.set(line.pid, [...(byPid.get(line.pid) ?? []), line]);
  }
  return byPid;
}

const said = (lines: readonly LogLine[], pattern: RegExp) =>
  lines.some((line) => pattern.test(line.message ?? ''));

/** The commands the handler ran (its `Ran: …` log lines), over the whole log. */
async function commandsRan(vm: LinuxVm): Promise<string[]> {
  return (await vm.sandbox.readLog())
    .map((line) => /^Ran: (.*?)(?: exitCode=\S+ durationMs=\S+)?$/.exec(line.message ?? '')?.[1])
    .filter((command): command is string => command !== undefined);
}

const isAptInstall = (command: string) => /^apt-get .*\binstall\b/.test(command);

/**
 * What dpkg did to a package, from the VM's /var/log/dpkg.log: its `install`, `upgrade`, `remove`
 * and `purge` lines (`2024-05-01 10:00:00 install aadsshlogin:all <none> 1.0.031070001`).
 */
async function dpkgActions(vm: LinuxVm, name: string): Promise<string[]> {
  const log = (await vm.root.readFile('/var/log/dpkg.log')) ?? '';
  return log
    .split('\n')
    .map((line) => line.split(' '))
    .filter(([, , , pkg]) => pkg?.split(':')[0] === name)
    .map(([, , action]) => action ?? '')
    .filter((action) => ['install', 'upgrade', 'remove', 'purge'].includes(action));
}

async function installedVersion(vm: LinuxVm, name: string): Promise<string | undefined> {
  const result = await vm.world.exec([
    'dpkg-query',
    '-W',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's format syntax
    '-f=${db:Status-Status} ${Version}',
    name,
  ]);
  const [status, installed] = result.stdout.trim().split(' ');
  return result.exitCode === 0 && status === 'installed' ? installed : undefined;
}

/** Files in `folder` of the VM whose content names the repository stand-in. */
async function filesNaming(vm: LinuxVm, folder: string, needle: string): Promise<string[]> {
  const names = await fs.readdir(vm.root.path(folder));
  const hits: string[] = [];
  for (const name of names) {
    if ((await vm.root.readFile(path.posix.join(folder, name)))?.includes(needle)) hits.push(name);
  }
  return hits;
}

/**
 * The state folder after the commands: the state file valid against the handler's own schema,
 * with no journal left, and no lock, lock breaker or temporary file behind.
 */
async function assertStateAtRest(vm: LinuxVm, owner: string) {
  const folder = vm.sandbox.stateFolder();
  assert.deepEqual((await fs.readdir(folder)).sort(), ['state.json'], 'only the state is left');
  const state = handlerStateSchema.parse(
    JSON.parse(await fs.readFile(path.join(folder, 'state.json'), 'utf8')),
  );
  assert.equal(state.owner, owner);
  assert.deepEqual(state.journal, []);
  return state;
}

/**
 * A gate inside the VM for commands spawned one after another: each command waits at it (a shell
 * that says it is there, then polls for the gate's `go` file every 5 ms, then execs the command)
 * until `open()`, so that all start at the same moment however long spawning them took.
 */
async function startGate(vm: LinuxVm) {
  // In the sandbox, which the VM sees at the same path.
  const dir = await fs.mkdtemp(path.join(vm.sandbox.root, 'gate-'));
  const script =
    'touch "$1/ready.$$"; while [ ! -e "$1/go" ]; do sleep 0.005; done; shift; exec "$@"';
  const waiting = async () =>
    (await fs.readdir(dir)).filter((name) => name.startsWith('ready.')).length;
  return {
    launcher: (argv: readonly string[], cwd: string) =>
      vm.world.wrap(['/bin/sh', '-c', script, 'gate', dir, ...argv], cwd),
    /** Resolves with how many wait at the gate once `count` do, or after 120 s. */
    async waitFor(count: number): Promise<number> {
      const until = Date.now() + 120_000;
      while ((await waiting()) < count && Date.now() < until) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      return waiting();
    },
    open: () => fs.writeFile(path.join(dir, 'go'), ''),
  };
}

/** No temporary status file left by an interrupted atomic write. */
async function assertNoTemporaryFiles(handler: HandlerInstance) {
  const leftovers = (await fs.readdir(handler.statusFolder)).filter((name) =>
    name.endsWith('.tmp'),
  );
  assert.deepEqual(leftovers, [], `temporary files in ${handler.statusFolder}`);
}

describe('AADSSHLoginForLinux commands at the same moment on one VM', () => {
  test('two enables at once on a fresh VM: one installs, the other waits and finds the VM converged', async (t) => {
    await withLinuxVm({ kind: 'debian', label: 'two-enables' }, async (vm) => {
      const handler = await vm.sandbox.unpack(zip, version);
      await handler.writeSettings(0, { publicSettings: vm.publicSettings });

      const runs = await together([
        () => handler.run('enable', { seq: 0 }),
        () => handler.run('enable', { seq: 0 }),
      ]);
      for (const run of runs) assertExit(run, 0);
      t.diagnostic(
        `started ${startSpread(runs)} ms apart; finished after ${runs.map((run) => (run.durationMs / 1000).toFixed(1)).join(' s and ')} s`,
      );

      const processes = [...(await linesByProcess(vm, version)).values()];
      assert.equal(processes.length, 2, 'two handler processes wrote the log');
      const worker = processes.find((lines) => said(lines, /^Ran: apt-get .*\binstall\b/));
      const waiter = processes.find((lines) => said(lines, new RegExp(`^${WAITING}`)));
      assert.ok(worker, 'one enable installed the packages');
      assert.ok(waiter, 'the other waited for it');
      assert.notEqual(worker, waiter);
      assert.ok(!said(worker, new RegExp(`^${WAITING}`)), 'the one that worked never waited');
      assert.ok(
        said(waiter, /^Nothing to install: the repository and the packages are in place/),
        'the one that waited found the VM converged',
      );
      assert.ok(!said(waiter, /^Ran: apt-get/), 'and ran no apt-get');
      // Every line of the waiter that follows its wait comes after the worker's last line.
      const workerEnd = worker.at(-1)?.timestamp ?? '';
      const waiterWork = waiter.filter((line) =>
        /^(Plan|Nothing to install)/.test(line.message ?? ''),
      );
      assert.ok(
        waiterWork.every((line) => (line.timestamp ?? '') >= workerEnd),
        'the waiter worked only after the worker had finished',
      );

      // Both outcomes: the status the agent reads is the last enable's, a success.
      const status = await handler.agentStatus(0);
      assert.equal(status.status, 'success');
      assert.equal(status.operation, 'Enable');
      assert.match(status.message, /is installed and registered; nothing needed changing/);
      assert.ok(runs.some((run) => /aadsshlogin was installed and is registered/.test(run.stdout)));
      assert.ok(runs.some((run) => /nothing needed changing/.test(run.stdout)));

      // The VM: installed exactly once, one source file, one keyring, nothing half-done.
      assert.deepEqual(await dpkgActions(vm, 'aadsshlogin'), ['install']);
      assert.equal(await installedVersion(vm, 'aadsshlogin'), NEW_VERSION);
      assert.deepEqual(await filesNaming(vm, '/etc/apt/sources.list.d', vm.server.url), [
        path.posix.basename(SOURCE_FILE),
      ]);
      assert.ok((await vm.root.readFile(KEYRING))?.length, 'the keyring is there');
      assert.equal((await commandsRan(vm)).filter(isAptInstall).length, 1);
      const state = await assertStateAtRest(vm, version);
      assert.deepEqual(
        state.applied.map((entry) => `${entry.operation} ${entry.status}`),
        ['enable success', 'enable success'],
      );
      await assertNoTemporaryFiles(handler);
    });
  });

  test("the old version's disable overlapping the new version's update, then its uninstall overlapping the new install: nothing the new version needs is removed, and its enable converges", async (t) => {
    // A slow identity answer keeps update (which asks IMDS) busy for a few seconds, so the two
    // started together really meet at the lock.
    await withLinuxVm(
      {
        kind: 'debian',
        label: 'update-overlap',
        imds: { [TOKEN_PATH]: [slow(2_000, imdsToken('linux-vm'))] },
      },
      async (vm) => {
        const newer = await next;
        assert.notEqual(newer.version, version);
        const old = await vm.sandbox.unpack(zip, version);
        await old.writeSettings(0, { publicSettings: vm.publicSettings });
        assertExit(await old.run('install', { seq: 0 }), 0);
        assertExit(await old.run('enable', { seq: 0 }), 0);
        const installedBefore = await installedVersion(vm, 'aadsshlogin');
        const sourceBefore = await vm.root.readFile(SOURCE_FILE);
        const keyringBefore = await vm.root.readFile(KEYRING);
        assert.equal(installedBefore, NEW_VERSION);

        // The goal state asks for the new version with sequence number 1: the agent has both
        // folders, the new one with its settings and the old one's status files.
        const fresh = await vm.sandbox.unpack(newer.zip, newer.version);
        await fresh.writeSettings(1, { publicSettings: vm.publicSettings });
        for (const name of await fs.readdir(old.statusFolder)) {
          await fs.copyFile(path.join(old.statusFolder, name), path.join(fresh.statusFolder, name));
        }

        // Old disable and new update at the same moment, again until they met at the lock (the
        // disable is quick; each round is what an agent retrying the goal state would run).
        let met = false;
        for (let round = 1; round <= 5 && !met; round++) {
          const before = (await vm.sandbox.readLog()).length;
          const [disable, update] = await together([
            () => old.run('disable', { seq: 1 }),
            () =>
              fresh.run('update', {
                seq: 1,
                updatingFromVersion: old.version,
                updatingToVersion: fresh.version,
                disableExitCode: null,
              }),
          ]);
          assert.ok(disable && update);
          assertExit(disable, 0);
          assertExit(update, 0);
          const lines = (await vm.sandbox.readLog()).slice(before);
          const waited = lines.filter((line) => line.message?.startsWith(WAITING));
          met = waited.length > 0;
          t.diagnostic(
            `round ${round}: started ${startSpread([disable, update])} ms apart; ${met ? `the ${waited[0]?.operation} (version ${waited[0]?.version}) waited` : 'they did not meet at the lock'}`,
          );
          assert.equal((await old.agentStatus(1)).operation, 'Disable');
          assert.equal((await old.agentStatus(1)).status, 'success');
          const updated = await fresh.agentStatus(1);
          assert.equal(updated.operation, 'Update');
          assert.equal(updated.status, 'success');
        }
        assert.ok(met, 'the disable and the update met at the lock in one of the rounds');
        assert.equal((await vm.sandbox.readState())?.owner, fresh.version, 'update handed over');

        // The agent's next steps, overlapping too: old uninstall and new install.
        const [uninstall, install] = await together([
          () => old.run('uninstall', { seq: 1 }),
          () => fresh.run('install', { seq: 1, uninstallExitCode: 0 }),
        ]);
        assert.ok(uninstall && install);
        assertExit(uninstall, 0);
        assertExit(install, 0);
        t.diagnostic(`uninstall and install started ${startSpread([uninstall, install])} ms apart`);
        assert.match(
          (await old.agentStatus(1)).message,
          new RegExp(
            `left the installation in place for version ${fresh.version.replaceAll('.', '\\.')}`,
          ),
        );
        assert.equal((await fresh.agentStatus(1)).status, 'success');
        await fs.rm(old.dir, { recursive: true, force: true });

        const enable = await fresh.run('enable', { seq: 1, uninstallExitCode: 0 });
        assertExit(enable, 0);
        const status = await fresh.agentStatus(1);
        assert.equal(status.operation, 'Enable');
        assert.equal(status.status, 'success');
        assert.match(status.message, /is installed and registered; nothing needed changing/);

        // Nothing the new version needs was removed, at any point.
        assert.deepEqual(await dpkgActions(vm, 'aadsshlogin'), ['install']);
        assert.equal(await installedVersion(vm, 'aadsshlogin'), installedBefore);
        assert.equal(await vm.root.readFile(SOURCE_FILE), sourceBefore);
        assert.equal(await vm.root.readFile(KEYRING), keyringBefore);
        assert.equal((await commandsRan(vm)).filter(isAptInstall).length, 1);
        const state = await assertStateAtRest(vm, fresh.version);
        assert.ok(
          (state.installed.packages as unknown[] | undefined)?.includes('aadsshlogin'),
          `the installation record still names the package: ${JSON.stringify(state.installed)}`,
        );
        await assertNoTemporaryFiles(fresh);
      },
    );
  });

  test('50 enables started within one second: all succeed before their deadline, and leave a valid status, a valid state and no lock', async (t) => {
    await withLinuxVm({ kind: 'debian', label: 'fifty-enables' }, async (vm) => {
      const handler = await vm.sandbox.unpack(zip, version);
      await handler.writeSettings(0, { publicSettings: vm.publicSettings });
      assertExit(await handler.run('install', { seq: 0 }), 0);
      const dpkgLog = await vm.root.readFile('/var/log/dpkg.log');

      // Spawning 50 commands one after another takes seconds on a busy machine: each waits at a
      // gate inside the VM, and all go through it at the same moment.
      const gate = await startGate(vm);
      const running = together(
        Array.from(
          { length: 50 },
          () => () => handler.run('enable', { seq: 0, launcher: gate.launcher }),
        ),
      );
      const atGate = await gate.waitFor(50);
      const opened = performance.now();
      await gate.open();
      const runs = await running;
      const wallMs = performance.now() - opened;
      assert.equal(atGate, 50, 'all 50 were waiting at the gate when it opened');
      const slowest = Math.max(...runs.map((run) => run.durationMs));
      const startedLines = (await vm.sandbox.readLog()).filter(
        (line) => line.operation === 'enable' && line.message?.startsWith('Enable started'),
      );
      const times = startedLines.map((line) => Date.parse(line.timestamp ?? ''));
      t.diagnostic(
        `50 enables: wall time ${(wallMs / 1000).toFixed(1)} s from the gate opening; spawned over ${startSpread(runs)} ms, released together, their first log lines within ${Math.max(...times) - Math.min(...times)} ms; the slowest command took ${(slowest / 1000).toFixed(1)} s`,
      );

      const codes = new Map<string, number>();
      for (const run of runs) {
        const key = `${run.exitCode}${run.signal ? ` ${run.signal}` : ''}`;
        codes.set(key, (codes.get(key) ?? 0) + 1);
      }
      assert.deepEqual([...codes], [['0', 50]], 'every enable exited 0');
      for (const run of runs) {
        assertExit(run, 0);
        assert.ok(run.durationMs < ENABLE_DEADLINE_MS, `an enable took ${run.durationMs} ms`);
      }

      const processes = [...(await linesByProcess(vm, version)).entries()].filter(([, lines]) =>
        lines.some((line) => line.operation === 'enable'),
      );
      assert.equal(processes.length, 50, '50 handler processes wrote the log');
      const waited = processes.filter(([, lines]) => said(lines, new RegExp(`^${WAITING}`)));
      const succeeded = processes.filter(([, lines]) => said(lines, /^Enable succeeded: /));
      t.diagnostic(`${waited.length} of 50 waited for another one`);
      assert.ok(waited.length >= 1, 'they met at the lock');
      assert.equal(succeeded.length, 50);

      const status = await handler.agentStatus(0);
      assert.equal(status.status, 'success');
      assert.equal(status.operation, 'Enable');
      await assertNoTemporaryFiles(handler);
      const state = await assertStateAtRest(vm, version);
      assert.ok(
        state.applied.every((entry) => entry.status === 'success'),
        JSON.stringify(state.applied),
      );

      // The package manager: installed once (by install), never again.
      assert.equal(await vm.root.readFile('/var/log/dpkg.log'), dpkgLog, 'dpkg did nothing');
      assert.equal((await commandsRan(vm)).filter(isAptInstall).length, 1);
      assert.deepEqual(await dpkgActions(vm, 'aadsshlogin'), ['install']);
    });
  });
});
