/**
 * `install --dry-run` and `enable --dry-run` of the built AADSSHLoginForLinux zip, in throwaway VM
 * roots (vm.ts) with real package managers: the dry run prints the plan and changes nothing (the
 * VM's /etc, keyrings and package database, and the handler's status, state, config and log
 * folders hash the same before and after), and the real command then writes and runs exactly what
 * the dry run printed. Assumes `npm run package` ran.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { osReleaseFixture } from '../fixtures.js';
import {
  assertExit,
  type CommandRun,
  extensionVersionOf,
  type HandlerInstance,
  LINUX_HANDLER_NAME,
  requireZip,
} from './agent-driver.js';
import { type LinuxVm, unpackHandler, withLinuxVm } from './vm.js';
import { KEYRING, LIST, RPM_KEY, ZYPP_REPO } from './vm-files.js';

const version = extensionVersionOf();
let zip = '';

before(async () => {
  zip = await requireZip(LINUX_HANDLER_NAME);
});

/** Unpacks the zip into the VM's agent folder with settings for sequence number 0. */
function handlerIn(
  vm: LinuxVm,
  publicSettings: Record<string, unknown> = vm.publicSettings,
): Promise<HandlerInstance> {
  return unpackHandler(vm, zip, version, publicSettings);
}

function dryRun(handler: HandlerInstance, operation: 'install' | 'enable'): Promise<CommandRun> {
  return handler.run(operation, { seq: 0, extraArguments: ['--dry-run'] });
}

/** `relative path → sha256` (or link target) of every file under `dir`; absent: nothing. */
async function hashTree(dir: string): Promise<Record<string, string>> {
  const hashes: Record<string, string> = {};
  const walk = async (folder: string): Promise<void> => {
    const entries = await fs.readdir(folder, { withFileTypes: true }).catch(() => []);
    for (const entry of entries) {
      const file = path.join(folder, entry.name);
      const relative = path.relative(dir, file);
      if (entry.isDirectory()) {
        hashes[`${relative}/`] = 'folder';
        await walk(file);
      } else if (entry.isSymbolicLink()) {
        hashes[relative] = `-> ${await fs.readlink(file)}`;
      } else if (entry.isFile()) {
        hashes[relative] = createHash('sha256')
          .update(await fs.readFile(file))
          .digest('hex');
      }
    }
  };
  const stat = await fs.stat(dir).catch(() => undefined);
  if (stat?.isFile())
    return {
      '': createHash('sha256')
        .update(await fs.readFile(dir))
        .digest('hex'),
    };
  await walk(dir);
  return hashes;
}

/**
 * What a dry run must leave as it is: the VM's configuration, keyrings, package databases and
 * package lists, and the handler's status, config (settings, HandlerState), state (lock, journal)
 * and log folders.
 */
async function snapshot(vm: LinuxVm, handler: HandlerInstance): Promise<Record<string, unknown>> {
  const vmPaths = [
    '/etc',
    '/usr/share/keyrings',
    '/var/lib/dpkg/status',
    '/var/lib/apt/lists',
    '/var/lib/rpm',
    '/usr/lib/sysimage/rpm',
  ];
  const folders = [
    ...vmPaths.map((file) => vm.root.path(file)),
    handler.statusFolder,
    handler.configFolder,
    vm.sandbox.stateFolder(),
    handler.logFolder,
  ];
  return Object.fromEntries(
    await Promise.all(folders.map(async (folder) => [folder, await hashTree(folder)] as const)),
  );
}

/** The exact content the dry run printed for `file`, between its begin and end lines. */
function printedFile(stdout: string, file: string): string | undefined {
  const lines = stdout.split('\n');
  const start = lines.indexOf(`--- begin ${file} ---`);
  const end = lines.indexOf(`--- end ${file} ---`);
  return start < 0 || end < start ? undefined : lines.slice(start + 1, end).join('\n');
}

/** The commands the dry run printed under "Would run, in order:", without their environment. */
function printedCommands(stdout: string): string[] {
  const lines = stdout.split('\n');
  const start = lines.indexOf('Would run, in order:');
  if (start < 0) return [];
  const commands: string[] = [];
  for (const line of lines.slice(start + 1)) {
    if (!line.startsWith('  ') || line.startsWith('  (')) break;
    commands.push(line.trim().replace(/ {3}\(with .*\)$/, ''));
  }
  return commands;
}

/** What the handler ran (its `Ran: …` log lines) in one operation, queries left out. */
async function changingCommandsOf(vm: LinuxVm, operation: string): Promise<string[]> {
  return (await vm.sandbox.readLog())
    .filter((line) => line.operation === operation && line.version === version)
    .map((line) => /^Ran: (.*?)(?: exitCode=\S+ durationMs=\S+)?$/.exec(line.message ?? '')?.[1])
    .filter((command): command is string => command !== undefined)
    .filter((command) => !/^(dpkg-query|rpm -q) /.test(command));
}

async function sha256Of(vm: LinuxVm, file: string): Promise<string> {
  return createHash('sha256')
    .update(await fs.readFile(vm.root.path(file)))
    .digest('hex');
}

/**
 * Dry run, then the real command: the dry run changed nothing, and the real command wrote the
 * repository file and key file the dry run printed and ran the commands it printed, in order.
 */
async function dryRunThenInstall(
  vm: LinuxVm,
  files: { repository: string; keys: string },
): Promise<CommandRun> {
  const handler = await handlerIn(vm);
  const before = await snapshot(vm, handler);
  const dry = await dryRun(handler, 'install');
  assertExit(dry, 0);
  assert.deepEqual(await snapshot(vm, handler), before, 'the dry run changed nothing');
  assert.match(dry.stdout, new RegExp(vm.repository.signingKey.fingerprint));
  assert.match(dry.stdout, new RegExp(`Fetched: ${vm.server.url}/keys/`));
  const content = printedFile(dry.stdout, files.repository);
  assert.ok(content, dry.stdout);
  const commands = printedCommands(dry.stdout);
  assert.ok(commands.length >= 2, dry.stdout);

  assertExit(await handler.run('install', { seq: 0 }), 0);
  assert.equal(await vm.root.readFile(files.repository), `${content}\n`);
  const keyFile = new RegExp(
    `Would write ${files.keys} \\(.*sha256 ([0-9a-f]{64})\\) with the trusted keys:`,
  ).exec(dry.stdout);
  assert.equal(await sha256Of(vm, files.keys), keyFile?.[1], dry.stdout);
  assert.deepEqual(await changingCommandsOf(vm, 'install'), commands);

  // Converged now: enable's dry run has nothing to do, and still changes nothing.
  const converged = await snapshot(vm, handler);
  const enable = await dryRun(handler, 'enable');
  assertExit(enable, 0);
  assert.match(enable.stdout, /Nothing to do/);
  assert.deepEqual(printedCommands(enable.stdout), []);
  assert.deepEqual(await snapshot(vm, handler), converged, 'the dry run changed nothing');
  return dry;
}

describe('install --dry-run and enable --dry-run (AADSSHLoginForLinux)', () => {
  test('Debian 12: the plan printed, nothing changed, then install does exactly that; converged enable: nothing to do', async () => {
    await withLinuxVm({ kind: 'debian', label: 'dry-run' }, async (vm) => {
      const dry = await dryRunThenInstall(vm, { repository: LIST, keys: KEYRING });
      assert.match(dry.stdout, /^Distribution: debian 12; package manager: apt\.$/m);
      assert.deepEqual(
        printedCommands(dry.stdout).map((command) => command.split(' ').slice(0, 2).join(' ')),
        ['apt-get update', 'apt-get install'],
      );
    });
  });

  test('SLES 15.5: the pinned version and its lock printed, nothing changed, then install does exactly that', async () => {
    await withLinuxVm(
      { kind: 'rpm', label: 'dry-run-sles', osRelease: await osReleaseFixture('sles-15.5') },
      async (vm) => {
        const dry = await dryRunThenInstall(vm, { repository: ZYPP_REPO, keys: RPM_KEY });
        const commands = printedCommands(dry.stdout);
        assert.equal(commands[0], `rpm --import ${RPM_KEY}`);
        assert.match(commands.join('\n'), /zypper .*install .*aadsshlogin=1\.0\.027980001/);
        assert.match(commands.at(-1) ?? '', /zypper .*addlock aadsshlogin/);
      },
    );
  });

  test('a key with an untrusted fingerprint: the dry run exits 27 saying why, nothing changed', async () => {
    await withLinuxVm({ kind: 'debian', label: 'dry-run-untrusted' }, async (vm) => {
      const handler = await handlerIn(vm, { repository: { baseUrl: vm.server.url } });
      const before = await snapshot(vm, handler);
      const dry = await dryRun(handler, 'install');
      assertExit(dry, 27);
      assert.match(dry.stdout, /failed \(exit 27\); nothing was changed/);
      assert.match(
        dry.stdout,
        new RegExp(`${vm.repository.signingKey.fingerprint}, none of which is trusted`),
      );
      assert.match(dry.stdout, /repository\.keyFingerprints/);
      assert.deepEqual(await snapshot(vm, handler), before, 'the dry run changed nothing');
    });
  });
});
