import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { HandlerFailure } from '../../src/failures.js';
import type { FetchResult } from '../../src/io/http.js';
import { emptyState, type HandlerState } from '../../src/lifecycle/state.js';
import { parseOsRelease } from '../../src/linux/checks/os-release.js';
import { describeRun } from '../../src/linux/dry-run.js';
import {
  CONVERGE_STEPS,
  converge,
  type InstallJob,
  prepareRun,
  queryPackages,
  removeInstallation,
} from '../../src/linux/installer.js';
import { failureLines, readInstallation } from '../../src/linux/journal.js';
import { armor, dearmor, publicKeys } from '../../src/linux/keys.js';
import type { Machine } from '../../src/linux/machine.js';
import { KEY_FILE, WRITTEN_BY } from '../../src/linux/repository.js';
import { parseLinuxSettings } from '../../src/linux/settings.js';
import { fakeClock, memoryFiles, memoryLog, temporaryFolder } from '../fakes.js';
import { osReleaseFixture } from '../fixtures.js';

/**
 * The installer against a VM in memory: files in a map, a package database the fake apt-get,
 * dpkg, rpm, dnf and zypper change, and the repository's keys served from a map. The same
 * scenarios run on the real package managers in test/package/.
 */

let home: { dir: string; cleanup(): Promise<void> };
let trustedArmored = '';
let trustedFingerprint = '';
let otherArmored = '';

before(async () => {
  home = await temporaryFolder();
  const gpg = (args: string[]) =>
    execFileSync('gpg', ['--homedir', home.dir, '--batch', '--quiet', ...args], {
      stdio: ['pipe', 'pipe', 'ignore'],
    }).toString('utf8');
  for (const name of ['Mirror <mirror@example.test>', 'Stranger <stranger@example.test>']) {
    gpg(['--passphrase', '', '--quick-gen-key', name, 'ed25519', 'sign', '1d']);
  }
  trustedArmored = gpg(['--armor', '--export', 'mirror@example.test']);
  otherArmored = gpg(['--armor', '--export', 'stranger@example.test']);
  trustedFingerprint =
    gpg(['--with-colons', '--list-keys', 'mirror@example.test'])
      .split('\n')
      .find((line) => line.startsWith('fpr:'))
      ?.split(':')[9] ?? '';
});
after(async () => home.cleanup());

const BASE = 'http://mirror.example.test';
const REGISTRATIONS = {
  '/etc/ssh/sshd_config':
    'Match User *@*\n    AuthorizedKeysCommand /usr/sbin/aad_certhandler %u %k\n',
  '/etc/nsswitch.conf': 'passwd: files aad\ngroup: files aad\n',
  '/etc/pam.d/common-auth': 'auth optional pam_aad.so\n',
};

interface FakeVm {
  machine: Machine;
  files: Map<string, Buffer>;
  installed: Map<string, string>;
  halfway: Map<string, string>;
  commands: string[];
  fetched: string[];
}

function fakeVm(
  options: {
    files?: Record<string, string>;
    installed?: Record<string, string>;
    answers?: Record<string, { status: number; body?: string } | 'unreachable'>;
    /** argv (joined) prefixes that fail. */
    failing?: string[];
    /** argv (joined) prefixes that fail (exit 100) with this output. */
    failingWith?: Record<string, { stdout?: string; stderr?: string }>;
    /** Files whose writing fails as on a full disk. */
    fullFiles?: string[];
    /** argv (joined) prefixes that fail `times` times with exit 100 and this `stderr`. */
    flaky?: { prefix: string; times: number; stderr: string }[];
    /** Whether installing aadsshlogin writes the registrations. */
    registers?: boolean;
    /** Packages dpkg holds in a halfway state (`name → ${Status}`), e.g. left by a killed run. */
    halfway?: Record<string, string>;
  } = {},
): FakeVm {
  const files = new Map(
    Object.entries(options.files ?? {}).map(([file, text]) => [file, Buffer.from(text)]),
  );
  const installed = new Map(Object.entries(options.installed ?? {}));
  const halfway = new Map(Object.entries(options.halfway ?? {}));
  const commands: string[] = [];
  const fetched: string[] = [];
  const clock = fakeClock();
  const install = (spec: string) => {
    const [name = spec, version = '1.0.031070001'] = spec.split(/=|-(?=\d)/);
    installed.set(name, version);
    if (name === 'aadsshlogin' && options.registers !== false) {
      for (const [file, text] of Object.entries(REGISTRATIONS)) files.set(file, Buffer.from(text));
    }
  };
  const memory = memoryFiles(files);
  const machine: Machine = {
    ...memory,
    writeFile: async (file, content) => {
      if (options.fullFiles?.includes(file)) {
        throw Object.assign(new Error('ENOSPC: no space left on device, write'), {
          code: 'ENOSPC',
        });
      }
      await memory.writeFile(file, content);
    },
    clock,
    proxyEnvironment: {},
    lockProbe: { readText: async () => '', identity: async () => undefined },
    fetchText: async (url): Promise<FetchResult> => {
      fetched.push(url);
      const answer = options.answers?.[url];
      if (answer === 'unreachable') return { ok: false, problem: `${url}: connect ECONNREFUSED` };
      if (answer) return { ok: true, answer: { status: answer.status, body: answer.body ?? '' } };
      if (url === `${BASE}/keys/microsoft.asc`) {
        return { ok: true, answer: { status: 200, body: trustedArmored } };
      }
      if (url.endsWith('/repodata/repomd.xml') && url.includes('/rhel/')) {
        return { ok: true, answer: { status: 200, body: '<repomd/>' } };
      }
      return { ok: true, answer: { status: 404, body: 'not found' } };
    },
    processes: {
      async run(file, args) {
        const line = [file, ...args].join(' ');
        commands.push(line);
        const output = Object.entries(options.failingWith ?? {}).find(([prefix]) =>
          line.startsWith(prefix),
        )?.[1];
        if (output)
          return { exitCode: 100, stdout: output.stdout ?? '', stderr: output.stderr ?? '' };
        const flaky = options.flaky?.find((f) => line.startsWith(f.prefix) && f.times > 0);
        if (flaky) {
          flaky.times -= 1;
          return { exitCode: 100, stdout: '', stderr: flaky.stderr };
        }
        if (options.failing?.some((prefix) => line.startsWith(prefix))) {
          return { exitCode: 100, stdout: '', stderr: `E: ${file} failed on purpose\n` };
        }
        const names = args.filter((arg) => !arg.startsWith('-'));
        switch (file) {
          case 'dpkg-query':
            return {
              exitCode: 0,
              stdout: names
                .flatMap((name) => {
                  const version = installed.get(name);
                  if (version !== undefined) return [`${name}\tinstall ok installed\t${version}\n`];
                  const status = halfway.get(name);
                  return status === undefined ? [] : [`${name}\t${status}\t1.0.031070001\n`];
                })
                .join(''),
              stderr: '',
            };
          case 'rpm':
            if (args[0] === '-q' && args[1] === '--qf') {
              return {
                exitCode: 0,
                stdout: args
                  .slice(3)
                  .map((name) =>
                    installed.has(name)
                      ? `${name}\t${installed.get(name)}-1\n`
                      : `package ${name} is not installed\n`,
                  )
                  .join(''),
                stderr: '',
              };
            }
            if (args[0] === '-q')
              return { exitCode: installed.has(args[1] ?? '') ? 0 : 1, stdout: '', stderr: '' };
            if (args[0] === '--import') {
              installed.set(`gpg-pubkey-${trustedFingerprint.slice(-8).toLowerCase()}`, 'key');
            }
            if (args[0] === '-e') installed.delete(args.at(-1) ?? '');
            return { exitCode: 0, stdout: '', stderr: '' };
          case 'apt-get':
          case 'dnf':
          case 'zypper':
            if (args.includes('install')) {
              for (const spec of names.slice(names.indexOf('install') + 1)) install(spec);
            }
            if (args.includes('remove')) {
              for (const name of names.slice(names.indexOf('remove') + 1)) installed.delete(name);
            }
            return { exitCode: 0, stdout: '', stderr: '' };
          case 'dpkg':
            if (args.includes('--purge')) {
              for (const name of names) {
                installed.delete(name);
                halfway.delete(name);
              }
            }
            if (args.includes('--configure')) {
              for (const name of [...files.keys()]) {
                if (name.startsWith('/var/lib/dpkg/updates/')) files.delete(name);
              }
            }
            return { exitCode: 0, stdout: '', stderr: '' };
          default:
            return { exitCode: 0, stdout: '', stderr: '' };
        }
      },
    },
  };
  return { machine, files, installed, halfway, commands, fetched };
}

async function job(
  vm: FakeVm,
  osName: string,
  publicSettings: Record<string, unknown> = {},
  start: HandlerState = emptyState(),
): Promise<InstallJob & { state(): HandlerState; log: ReturnType<typeof memoryLog> }> {
  let state = start;
  const log = memoryLog();
  return {
    machine: vm.machine,
    os: parseOsRelease(await osReleaseFixture(osName)),
    architecture: 'x86_64',
    settings: parseLinuxSettings({
      repository: { baseUrl: BASE, keyFingerprints: [trustedFingerprint], ...publicSettings },
    }).settings,
    log,
    signal: new AbortController().signal,
    remainingMs: () => 250_000,
    saveState: async (change) => {
      state = change(state);
      return state;
    },
    currentState: () => state,
    state: () => state,
  };
}

const LIST = '/etc/apt/sources.list.d/microsoft-prod.list';
/** How the handler purges one of our packages, in whatever state dpkg holds it. */
const PURGE = 'dpkg --purge --force-remove-reinstreq';
const REPO = '/etc/yum.repos.d/microsoft-prod.repo';
const installs = (vm: FakeVm) =>
  vm.commands.filter((line) => / install | --purge | remove |addlock|versionlock/.test(line));

async function failure(promise: Promise<unknown>): Promise<HandlerFailure> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof HandlerFailure, String(error));
    return error;
  }
  assert.fail('expected a failure');
}

describe('converge on Debian (apt)', () => {
  test('a fresh VM: trusted key only, our source file, refresh, install, all recorded', async () => {
    const vm = fakeVm();
    const run = await job(vm, 'debian-12');
    const result = await converge(run);
    assert.match(vm.files.get(LIST)?.toString() ?? '', new RegExp(`^${WRITTEN_BY}`));
    assert.match(
      vm.files.get(LIST)?.toString() ?? '',
      /deb \[arch=amd64 signed-by=\/usr\/share\/keyrings\/aadsshlogin-microsoft-prod.gpg\] http:\/\/mirror.example.test\/repos\/microsoft-debian-bookworm-prod bookworm main/,
    );
    assert.ok(vm.files.get(KEY_FILE.apt)?.length, 'the keyring is written');
    assert.deepEqual(installs(vm).length, 1);
    assert.equal(vm.installed.get('aadsshlogin'), '1.0.031070001');
    const installation = readInstallation(run.state());
    assert.deepEqual(installation.packages, ['aadsshlogin']);
    assert.deepEqual(
      installation.files?.map((file) => file.path),
      [KEY_FILE.apt, LIST],
    );
    assert.deepEqual(run.state().journal, []);
    assert.deepEqual(
      result.steps.map((step) => [step.name, step.status]),
      CONVERGE_STEPS.map((name) => [name, 'success']),
      'one entry per step, in order, each succeeded',
    );
    assert.match(result.summary, /^aadsshlogin was installed and is registered\.$/);
    assert.ok(run.log.lines.some((line) => line.message.startsWith('Plan: ')));
  });

  test('a converged VM: one query, no network, nothing run', async () => {
    const vm = fakeVm();
    await converge(await job(vm, 'debian-12'));
    vm.commands.length = 0;
    vm.fetched.length = 0;
    const again = await job(vm, 'debian-12');
    const result = await converge(again);
    assert.deepEqual(
      vm.commands.map((line) => line.split(' ')[0]),
      ['dpkg-query'],
    );
    assert.deepEqual(vm.fetched, []);
    assert.equal(
      result.summary,
      'aadsshlogin is installed and registered; nothing needed changing.',
    );
    assert.deepEqual(
      result.steps.map((step) => step.name),
      [...CONVERGE_STEPS],
    );
    assert.match(
      result.steps.find((step) => step.name === 'Install')?.message ?? '',
      /^Nothing to install/,
    );
  });

  test('a key with another fingerprint: 27, nothing written, nothing installed', async () => {
    const vm = fakeVm({
      answers: { [`${BASE}/keys/microsoft.asc`]: { status: 200, body: otherArmored } },
    });
    const error = await failure(converge(await job(vm, 'debian-12')));
    assert.equal(error.code, 27);
    assert.match(error.detail, /none of which is trusted/);
    assert.equal(vm.files.size, 0);
    assert.deepEqual(installs(vm), []);
  });

  test('the repository answering 500 (after retries) or unreachable: 20, nothing changed', async () => {
    for (const answer of [{ status: 500 }, 'unreachable'] as const) {
      const vm = fakeVm({ answers: { [`${BASE}/keys/microsoft.asc`]: answer } });
      const error = await failure(converge(await job(vm, 'debian-12')));
      assert.equal(error.code, 20);
      assert.match(error.detail, /mirror\.example\.test\/keys\/microsoft\.asc/);
      assert.equal(vm.files.size, 0);
    }
  });

  test('apt turned away by a rate limit (429) is run again after a wait; a 503 is not', async () => {
    const throttled =
      'E: Failed to fetch http://mirror.example.test/repos/microsoft-debian-bookworm-prod/dists/bookworm/InRelease  429  Too Many Requests [IP: 10.0.0.1 80]\nE: Some index files failed to download.\n';
    const vm = fakeVm({
      flaky: [
        { prefix: 'apt-get update', times: 2, stderr: throttled },
        { prefix: 'apt-get install', times: 1, stderr: throttled.replace('dists', 'pool') },
      ],
    });
    const run = await job(vm, 'debian-12');
    const started = vm.machine.clock.now().getTime();
    await converge(run);
    assert.equal(vm.installed.get('aadsshlogin'), '1.0.031070001');
    assert.equal(vm.commands.filter((line) => line.startsWith('apt-get update')).length, 3);
    assert.equal(vm.commands.filter((line) => line.startsWith('apt-get install')).length, 2);
    const waits = run.log.lines
      .map((line) => /running it again in (\d+) ms/.exec(line.message)?.[1])
      .filter((wait) => wait !== undefined)
      .map(Number);
    assert.equal(waits.length, 3);
    assert.ok(waits[0] !== undefined && waits[0] >= 2_500 && waits[0] <= 5_000, `${waits[0]}`);
    assert.ok(waits[1] !== undefined && waits[1] >= 5_000 && waits[1] <= 10_000, `${waits[1]}`);
    assert.ok(vm.machine.clock.now().getTime() - started >= 7_500, 'the waits were slept');

    const failing = fakeVm({
      flaky: [
        {
          prefix: 'apt-get update',
          times: 1,
          stderr: throttled.replace('429  Too Many Requests', '503  Service Unavailable'),
        },
      ],
    });
    const error = await failure(converge(await job(failing, 'debian-12')));
    assert.equal(error.code, 20);
    assert.equal(failing.commands.filter((line) => line.startsWith('apt-get update')).length, 1);
  });

  test('a rate limit past the deadline: the last answer is reported (20), nothing left', async () => {
    const vm = fakeVm({
      flaky: [
        {
          prefix: 'dnf -y --disablerepo',
          times: 1000,
          stderr:
            "Errors during downloading metadata for repository 'packages-microsoft-com-prod':\n  - Status code: 429 for http://mirror.example.test/rhel/9/prod/repodata/repomd.xml (IP: 10.0.0.1)\nError: Failed to download metadata for repo 'packages-microsoft-com-prod': Cannot download repomd.xml: Cannot download repodata/repomd.xml: All mirrors were tried\n",
        },
      ],
    });
    const run = await job(vm, 'rhel-9.4');
    const started = vm.machine.clock.now().getTime();
    const deadline = started + 250_000;
    const error = await failure(
      converge({ ...run, remainingMs: () => deadline - vm.machine.clock.now().getTime() }),
    );
    assert.equal(error.code, 20);
    assert.match(error.detail, /Error: Failed to download metadata/);
    const runs = vm.commands.filter((line) => line.startsWith('dnf -y --disablerepo')).length;
    assert.ok(runs >= 4, `ran ${runs} times`);
    assert.ok(
      deadline - vm.machine.clock.now().getTime() >= 60_000,
      'a minute of the deadline kept',
    );
    assert.equal(vm.files.size, 0, [...vm.files.keys()].join(', '));
  });

  test('the install failing: 28 with the tool message, and the source file and key removed again', async () => {
    const vm = fakeVm({ failing: ['apt-get install'] });
    const run = await job(vm, 'debian-12');
    const error = await failure(converge(run));
    assert.equal(error.code, 28);
    assert.match(error.detail, /failed on purpose/);
    assert.match(error.detail, /returned to how it was/);
    assert.equal(vm.files.size, 0);
    assert.deepEqual(run.state().journal, []);
  });

  test('a package that does not register PAM: 21 naming PAM, and the package purged again', async () => {
    const vm = fakeVm({ registers: false, files: { '/etc/pam.d/common-auth': 'auth x\n' } });
    const run = await job(vm, 'debian-12');
    const error = await failure(converge(run));
    assert.equal(error.code, 21);
    assert.match(error.detail, /pam_aad/);
    assert.ok(error.steps.some((step) => step.name === 'PamRegistration'));
    assert.ok(vm.commands.includes(`${PURGE} aadsshlogin`));
    assert.equal(vm.installed.has('aadsshlogin'), false);
    assert.deepEqual([...vm.files.keys()], ['/etc/pam.d/common-auth']);
  });

  test('a repository file someone else wrote is used and never overwritten or removed', async () => {
    const foreign =
      'deb [signed-by=/usr/share/keyrings/microsoft-prod.gpg] https://packages.microsoft.com/repos/microsoft-debian-bookworm-prod bookworm main\n';
    const vm = fakeVm({ files: { [LIST]: foreign } });
    const run = await job(vm, 'debian-12');
    await converge(run);
    assert.equal(vm.files.get(LIST)?.toString(), foreign);
    assert.deepEqual(vm.fetched, [], 'no keys fetched for a file that is not ours');
    assert.ok(vm.installed.has('aadsshlogin'));
    await removeInstallation(run);
    assert.equal(vm.files.get(LIST)?.toString(), foreign);
    assert.equal(vm.installed.has('aadsshlogin'), false);
  });

  test('uninstall leaves alone a file of ours that someone changed since, and says so', async () => {
    const vm = fakeVm();
    const run = await job(vm, 'debian-12');
    await converge(run);
    const edited = `${vm.files.get(LIST)?.toString()}# pinned by configuration management\n`;
    vm.files.set(LIST, Buffer.from(edited));
    await removeInstallation(run);
    assert.equal(vm.files.get(LIST)?.toString(), edited, 'the changed file stays');
    assert.equal(vm.files.has(KEY_FILE.apt), false, 'the unchanged key file goes');
    assert.equal(vm.installed.has('aadsshlogin'), false);
    assert.ok(
      run.log.lines.some(
        (line) => line.level === 'warn' && /Left alone: .*microsoft-prod\.list/.test(line.message),
      ),
    );
  });

  // Claim: the package query the AADLoginForLinux check made is the plan's too: the converged
  // enable runs one package-manager process; after a killed run is undone, it is asked again.
  test('an answer the checks already got is used: a converged VM runs nothing at all', async () => {
    const vm = fakeVm();
    await converge(await job(vm, 'debian-12'));
    const again = await job(vm, 'debian-12');
    const installed = await queryPackages(again, ['aadlogin', 'aadlogin-selinux']);
    assert.deepEqual(
      vm.commands.at(-1)?.split(' ').slice(-7),
      [
        'aadsshlogin-selinux',
        'aadsshlogin',
        'selinux-policy-default',
        'openssh-server',
        'openssh',
        'aadlogin',
        'aadlogin-selinux',
      ],
      'one query for the check and the plan',
    );
    vm.commands.length = 0;
    const result = await converge({ ...again, ...(installed ? { installed } : {}) });
    assert.deepEqual(vm.commands, []);
    assert.match(result.summary, /nothing needed changing/);
  });

  test('an answer from before a killed run was undone is not trusted: the plan asks again', async () => {
    const vm = fakeVm({ installed: { aadsshlogin: '1.0.031070001' } });
    const start: HandlerState = {
      ...emptyState(),
      journal: [{ kind: 'packages', manager: 'apt', names: ['aadsshlogin'] }],
    };
    const run = await job(vm, 'debian-12', {}, start);
    const before = await queryPackages(run, []);
    assert.ok(before?.has('aadsshlogin'));
    await converge({ ...run, ...(before ? { installed: before } : {}) });
    const purged = vm.commands.indexOf(`${PURGE} aadsshlogin`);
    assert.ok(purged >= 0, 'the killed run is undone');
    assert.ok(
      vm.commands.findIndex((line, index) => index > purged && line.startsWith('dpkg-query')) >
        purged,
      'the package database is asked again after the undo',
    );
    assert.ok(vm.installed.has('aadsshlogin'), 'and aadsshlogin is installed again');
  });

  test('a journal left by a killed run is undone first', async () => {
    const vm = fakeVm({ installed: { aadsshlogin: '1.0.031070001' } });
    vm.files.set(LIST, Buffer.from(`${WRITTEN_BY}\nold\n`));
    const { sha256 } = await import('../../src/linux/journal.js');
    const start: HandlerState = {
      ...emptyState(),
      journal: [
        { kind: 'file', path: LIST, written: sha256(`${WRITTEN_BY}\nold\n`), previous: null },
        { kind: 'packages', manager: 'apt', names: ['aadsshlogin'] },
      ],
    };
    const run = await job(vm, 'debian-12', {}, start);
    await converge(run);
    assert.ok(vm.commands.indexOf(`${PURGE} aadsshlogin`) >= 0, 'the half install is purged');
    assert.ok(
      vm.commands.indexOf(`${PURGE} aadsshlogin`) <
        vm.commands.findIndex((line) => line.startsWith('apt-get install')),
    );
    assert.ok(run.log.lines.some((line) => /stopped halfway/.test(line.message)));
    assert.ok(vm.installed.has('aadsshlogin'));
  });

  test('a package a killed run left half-configured is purged before installing again', async () => {
    const vm = fakeVm({ halfway: { aadsshlogin: 'install ok half-configured' } });
    const start: HandlerState = {
      ...emptyState(),
      journal: [{ kind: 'packages', manager: 'apt', names: ['aadsshlogin'] }],
    };
    const run = await job(vm, 'debian-12', {}, start);
    await converge(run);
    const purge = vm.commands.indexOf(`${PURGE} aadsshlogin`);
    assert.ok(purge >= 0, 'the half-configured package is purged');
    assert.ok(purge < vm.commands.findIndex((line) => line.startsWith('apt-get install')));
    assert.ok(vm.installed.has('aadsshlogin'));
    assert.deepEqual(run.state().journal, []);
  });

  test('uninstall purges a package a killed uninstall left half-removed, and never claims it is gone while it is not', async () => {
    const vm = fakeVm();
    const run = await job(vm, 'debian-12');
    await converge(run);
    // A killed `dpkg --purge` (in the package's prerm) leaves it half-configured, wanted purged.
    vm.installed.delete('aadsshlogin');
    vm.halfway.set('aadsshlogin', 'purge ok half-configured');
    const removed = await removeInstallation(run);
    assert.match(removed, /^removed aadsshlogin, /);
    assert.ok(vm.commands.includes(`${PURGE} aadsshlogin`));
    assert.equal(vm.halfway.has('aadsshlogin'), false);
  });

  test('dpkg interrupted halfway: dpkg --configure -a finishes it before anything changes, then apt-get install', async () => {
    const vm = fakeVm({
      files: { '/var/lib/dpkg/updates/0000': '', '/var/lib/dpkg/updates/tmp.i': '' },
    });
    const run = await job(vm, 'debian-12');
    await converge(run);
    const finish = vm.commands.indexOf('dpkg --force-confold --force-confdef --configure -a');
    assert.ok(finish >= 0, vm.commands.join('\n'));
    assert.ok(finish < vm.commands.findIndex((line) => line.startsWith('apt-get update')));
    assert.ok(vm.installed.has('aadsshlogin'));
    assert.ok(run.log.lines.some((line) => /interrupted halfway/.test(line.message)));
  });

  test('dpkg --configure -a failing: 28 naming it, and nothing of this run changed', async () => {
    const vm = fakeVm({
      files: { '/var/lib/dpkg/updates/0003': '' },
      failing: ['dpkg --force-confold --force-confdef --configure -a'],
    });
    const run = await job(vm, 'debian-12');
    const error = await failure(converge(run));
    assert.equal(error.code, 28);
    assert.match(error.detail, /dpkg --force-confold --force-confdef --configure -a/);
    assert.deepEqual([...vm.files.keys()], ['/var/lib/dpkg/updates/0003']);
    assert.deepEqual(run.state().journal, []);
  });

  test('only dpkg journal entries named by digits mean an interrupted run', async () => {
    const vm = fakeVm({ files: { '/var/lib/dpkg/updates/tmp.i': '' } });
    await converge(await job(vm, 'debian-12'));
    assert.equal(
      vm.commands.some((line) => line.includes('--configure')),
      false,
      vm.commands.join('\n'),
    );
  });

  test('with the SELinux policy installed, aadsshlogin-selinux comes first and its module is checked', async () => {
    const vm = fakeVm({ installed: { 'selinux-policy-default': '2:2.2' } });
    const run = await job(vm, 'debian-12');
    // The fake semodule lists no module: the SELinux registration is missing.
    const error = await failure(converge(run));
    assert.ok(
      vm.commands.some((line) => /apt-get install .* aadsshlogin-selinux aadsshlogin$/.test(line)),
    );
    assert.equal(error.code, 21);
    assert.ok(error.steps.some((step) => step.name === 'SelinuxRegistration'));
    const purges = vm.commands.filter((line) => line.startsWith('dpkg --purge'));
    assert.deepEqual(purges, [`${PURGE} aadsshlogin`, `${PURGE} aadsshlogin-selinux`]);
  });
});

describe('converge on rpm families', () => {
  test('AlmaLinux 9: its own folder answers 404, so rhel/9 is used; the key goes into rpm too', async () => {
    const vm = fakeVm();
    const run = await job(vm, 'almalinux-9.4');
    await converge(run);
    assert.ok(vm.fetched.includes(`${BASE}/almalinux/9/prod/repodata/repomd.xml`));
    assert.match(
      vm.files.get(REPO)?.toString() ?? '',
      /baseurl=http:\/\/mirror.example.test\/rhel\/9\/prod\//,
    );
    assert.match(vm.files.get(KEY_FILE.rpm)?.toString() ?? '', /BEGIN PGP PUBLIC KEY BLOCK/);
    assert.ok(vm.commands.includes(`rpm --import ${KEY_FILE.rpm}`));
    assert.ok(vm.commands.some((line) => line.startsWith('dnf -y install aadsshlogin')));
    const installation = readInstallation(run.state());
    assert.deepEqual(installation.rpmKeys, [
      `gpg-pubkey-${trustedFingerprint.slice(-8).toLowerCase()}`,
    ]);
    const message = await removeInstallation(run);
    assert.match(message, /aadsshlogin/);
    assert.equal(vm.files.has(REPO), false);
    assert.equal(vm.files.has(KEY_FILE.rpm), false);
    assert.ok(vm.commands.some((line) => line.startsWith('rpm -e --allmatches gpg-pubkey-')));
  });

  test('SLES 15.5: aadsshlogin=1.0.027980001 installed and locked; uninstall unlocks first', async () => {
    const vm = fakeVm();
    const run = await job(vm, 'sles-15.5');
    await converge(run);
    assert.ok(
      vm.commands.includes('zypper -q -n install --oldpackage aadsshlogin=1.0.027980001'),
      vm.commands.join('\n'),
    );
    assert.ok(vm.commands.includes('zypper -q -n addlock aadsshlogin'));
    await removeInstallation(run);
    const unlock = vm.commands.indexOf('zypper -q -n removelock aadsshlogin');
    const remove = vm.commands.indexOf('zypper -q -n remove aadsshlogin');
    assert.ok(unlock >= 0 && remove > unlock, vm.commands.join('\n'));
  });
});

describe('only trusted keys, and only a repository that passes signature checks', () => {
  // Security (project issue 7): what reaches the keyring is exactly the trusted keys; a key file
  // that is not a key, and a repository whose signatures the package manager rejects, leave
  // nothing behind and install nothing.
  const fingerprintsIn = (keyring: Buffer | undefined) =>
    publicKeys(keyring ?? Buffer.alloc(0)).map((key) => key.fingerprint);

  test('a key file holding a stranger and the trusted key: only the trusted key is installed', async () => {
    const mixed = armor(
      Buffer.concat([
        dearmor(otherArmored) ?? Buffer.alloc(0),
        dearmor(trustedArmored) ?? Buffer.alloc(0),
      ]),
    );
    const vm = fakeVm({
      answers: { [`${BASE}/keys/microsoft.asc`]: { status: 200, body: mixed } },
    });
    const run = await job(vm, 'debian-12');
    await converge(run);
    assert.deepEqual(fingerprintsIn(vm.files.get(KEY_FILE.apt)), [trustedFingerprint]);
    assert.ok(
      run.log.lines.some((line) =>
        /^Not trusted, not installed: keys [0-9A-F]{40} from/.test(line.message),
      ),
    );
  });

  // Also a regression: only the first armored block of a key file was read, so a trusted key in
  // a second block was missed (27 where gpg --import would have found it).
  test('rpm families: the key file imported into rpm holds only the trusted key', async () => {
    const mixed = `${otherArmored}${trustedArmored}`;
    const vm = fakeVm({
      answers: { [`${BASE}/keys/microsoft.asc`]: { status: 200, body: mixed } },
    });
    await converge(await job(vm, 'almalinux-9.4'));
    const armored = vm.files.get(KEY_FILE.rpm)?.toString() ?? '';
    assert.deepEqual(fingerprintsIn(dearmor(armored)), [trustedFingerprint]);
    assert.deepEqual(
      vm.commands.filter((line) => line.startsWith('rpm --import')),
      [`rpm --import ${KEY_FILE.rpm}`],
    );
  });

  test('an untrusted microsoft.asc beside a trusted microsoft-2025.asc: only the trusted one', async () => {
    const vm = fakeVm({
      answers: {
        [`${BASE}/keys/microsoft.asc`]: { status: 200, body: otherArmored },
        [`${BASE}/keys/microsoft-2025.asc`]: { status: 200, body: trustedArmored },
      },
    });
    await converge(await job(vm, 'debian-12'));
    assert.deepEqual(fingerprintsIn(vm.files.get(KEY_FILE.apt)), [trustedFingerprint]);
  });

  test('a key file that is not a key (a captive portal): 20, nothing written or installed', async () => {
    const vm = fakeVm({
      answers: {
        [`${BASE}/keys/microsoft.asc`]: { status: 200, body: '<html>Sign in to Wi-Fi</html>' },
      },
    });
    const error = await failure(converge(await job(vm, 'debian-12')));
    assert.equal(error.code, 20);
    assert.match(error.detail, /did not answer with an OpenPGP key \(not an ASCII-armored/);
    assert.equal(vm.files.size, 0);
    assert.deepEqual(installs(vm), []);
  });

  for (const [osName, refresh, file] of [
    ['debian-12', 'apt-get update', LIST],
    [
      'almalinux-9.4',
      'dnf -y --disablerepo=* --enablerepo=packages-microsoft-com-prod makecache',
      REPO,
    ],
  ] as const) {
    test(`${osName}: a repository whose signatures fail the refresh is removed again, nothing installed`, async () => {
      const vm = fakeVm({ failing: [refresh] });
      const run = await job(vm, osName);
      const error = await failure(converge(run));
      assert.equal(error.code, 20);
      assert.match(error.detail, /failed on purpose/);
      assert.match(error.detail, /returned to how it was/);
      assert.ok(vm.commands.some((line) => line.startsWith(refresh)));
      assert.deepEqual(installs(vm), []);
      assert.equal(vm.files.has(file), false, 'the repository file is gone');
      assert.equal(vm.files.size, 0, [...vm.files.keys()].join(', '));
      assert.deepEqual(run.state().journal, []);
    });
  }
});

describe('a full disk', () => {
  // What apt, dpkg and apt's refresh print when a folder they write to is full (measured in a
  // Debian 12 root whose /var/cache/apt/archives, /var/lib/dpkg or /var/lib/apt/lists was a full
  // tmpfs; test/package/faults-disk.test.ts runs them for real).
  const APT_FETCH =
    'E: Failed to fetch http://mirror.example.test/repos/microsoft-debian-bookworm-prod/pool/main/a/aadsshlogin/aadsshlogin_1.0.031070001_all.deb  Error writing to file - write (28: No space left on device) [IP: 10.0.0.4 80]\nE: Unable to fetch some archives, maybe run apt-get update or try with --fix-missing?\n';
  const DPKG_STDOUT =
    'Fetched 1480 B in 0s (0 B/s)\ndpkg: unrecoverable fatal error, aborting:\n unable to fill /var/lib/dpkg/updates/tmp.i with padding: No space left on device\n';
  const DPKG_STDERR =
    'debconf: delaying package configuration, since apt-utils is not installed\nE: Sub-process /usr/bin/dpkg returned an error code (2)\n';
  const SOURCE_CACHE =
    'E: Write error - write (28: No space left on device)\nE: IO Error saving source cache\nE: The package lists or status file could not be parsed or opened.\n';

  for (const [what, failingWith, quoted] of [
    [
      "apt's download cache",
      { 'apt-get install': { stderr: APT_FETCH } },
      /Error writing to file - write \(28: No space left on device\)/,
    ],
    [
      "dpkg's database (dpkg says so on stdout)",
      { 'apt-get install': { stdout: DPKG_STDOUT, stderr: DPKG_STDERR } },
      /unable to fill \/var\/lib\/dpkg\/updates\/tmp\.i with padding: No space left on device/,
    ],
    [
      "apt's metadata, while refreshing (not the repository's fault: 28, not 20)",
      { 'apt-get update': { stderr: SOURCE_CACHE } },
      /Write error - write \(28: No space left on device\)/,
    ],
  ] as const) {
    test(`${what}: 28 saying the disk is full, which folders to free, the tool's line, and everything undone`, async () => {
      const vm = fakeVm({ failingWith });
      const run = await job(vm, 'debian-12');
      const error = await failure(converge(run));
      assert.equal(error.code, 28);
      assert.match(
        error.detail,
        /^The VM's disk is full: free space \(and inodes\) on the file systems holding \/var\/cache\/apt, \/var\/lib\/apt\/lists and \/var\/lib\/dpkg \(df -h and df -i show which one; apt-get clean empties the package cache\)\. "apt-get /,
      );
      assert.match(error.detail, quoted);
      assert.match(error.detail, /returned to how it was before this run/);
      assert.equal(vm.files.size, 0);
      assert.equal(vm.installed.has('aadsshlogin'), false);
      assert.deepEqual(run.state().journal, []);
    });
  }

  test('the repository file cannot be written: 28 naming it and the full file system, the key removed again', async () => {
    const vm = fakeVm({ fullFiles: [LIST] });
    const run = await job(vm, 'debian-12');
    const error = await failure(converge(run));
    assert.equal(error.code, 28);
    assert.match(
      error.detail,
      /^Cannot write \/etc\/apt\/sources\.list\.d\/microsoft-prod\.list: the file system holding \/etc\/apt\/sources\.list\.d is full \(ENOSPC: no space left on device\); free space or inodes there/,
    );
    assert.match(error.detail, /returned to how it was before this run/);
    assert.equal(vm.files.size, 0, 'the keyring written before it is gone again');
    assert.deepEqual(run.state().journal, []);
  });

  /** A job whose state can be saved `saves` more times, then fails as on a full disk. */
  async function jobWithStateRoom(vm: FakeVm, saves: number) {
    const run = await job(vm, 'debian-12');
    let left = saves;
    const save = run.saveState;
    run.saveState = async (change) => {
      if (left-- <= 0) {
        throw new HandlerFailure(
          'cannotWriteHandlerFiles',
          'Cannot write the handler state /var/lib/waagent/x.state/state.json: the file system holding /var/lib/waagent/x.state is full (ENOSPC: no space left on device).',
        );
      }
      return save(change);
    };
    return run;
  }

  test('the state fills up halfway (the journal entry before the repository file): 64, and the keyring written before it removed', async () => {
    const vm = fakeVm();
    // Saves: the recovery check, the keyring's journal entry; the repository file's fails.
    const run = await jobWithStateRoom(vm, 2);
    const error = await failure(converge(run));
    assert.equal(error.code, 64);
    assert.match(error.detail, /Cannot write the handler state .* returned to how it was/);
    assert.equal(vm.files.size, 0);
    assert.deepEqual(installs(vm), []);
    assert.ok(
      run.log.lines.some((line) => /The undone journal is not saved/.test(line.message)),
      'says the journal on disk is stale (the next command undoes nothing twice)',
    );
  });

  test('the state fills up at the very end (recording the installation): 64, and the packages and files removed again', async () => {
    const vm = fakeVm();
    // Saves: the recovery check, the keyring, the repository file, the packages; the record fails.
    const run = await jobWithStateRoom(vm, 4);
    const error = await failure(converge(run));
    assert.equal(error.code, 64);
    assert.match(error.detail, /returned to how it was before this run/);
    assert.equal(vm.installed.has('aadsshlogin'), false);
    assert.ok(vm.commands.includes(`${PURGE} aadsshlogin`));
    assert.equal(vm.files.has(LIST), false);
    assert.equal(vm.files.has(KEY_FILE.apt), false);
  });
});

describe('prepareRun: what a dry run prints is what converge runs', () => {
  /** The commands that change something, as converge runs them (queries left out). */
  const changing = (vm: FakeVm) =>
    vm.commands.filter((line) => !/^(dpkg-query|rpm -q) /.test(line));

  for (const osName of ['debian-12', 'almalinux-9.4', 'sles-15.5']) {
    test(`${osName}: preparing writes and runs nothing; converge then runs the prepared commands, in order`, async () => {
      const vm = fakeVm();
      const run = await job(vm, osName);
      const prepared = await prepareRun(run, {});
      assert.deepEqual([...vm.files.keys()], [], 'nothing written');
      assert.deepEqual(changing(vm), [], 'only queries ran');
      const printed = describeRun(prepared, {
        os: run.os,
        checks: [],
        journal: [],
        interrupted: undefined,
      });
      const commands = printed
        .slice(printed.indexOf('Would run, in order:') + 1)
        .map((line) => line.trim().replace(/ {3}\(with .*\)$/, ''));
      const file = prepared.plan.repository.target.file;
      const content = printed.slice(
        printed.indexOf(`--- begin ${file} ---`) + 1,
        printed.indexOf(`--- end ${file} ---`),
      );
      assert.ok(printed.some((line) => line.includes(trustedFingerprint)));

      await converge(run);
      assert.deepEqual(changing(vm), commands);
      assert.equal(vm.files.get(file)?.toString(), `${content.join('\n')}\n`);
    });
  }

  test('a converged VM: nothing to do, nothing fetched', async () => {
    const vm = fakeVm();
    const run = await job(vm, 'debian-12');
    await converge(run);
    const fetched = vm.fetched.length;
    const prepared = await prepareRun(run, readInstallation(run.state()));
    assert.equal(prepared.converged, true);
    assert.equal(vm.fetched.length, fetched);
    const printed = describeRun(prepared, {
      os: run.os,
      checks: [],
      journal: [],
      interrupted: undefined,
    });
    assert.match(printed.at(-1) ?? '', /^Nothing to do: .* already installed\.$/);
  });

  test('an untrusted key: 27 saying no offered key is trusted, nothing written', async () => {
    const vm = fakeVm({
      answers: { [`${BASE}/keys/microsoft.asc`]: { status: 200, body: otherArmored } },
    });
    const error = await failure(prepareRun(await job(vm, 'debian-12'), {}));
    assert.equal(error.code, 27);
    assert.match(error.detail, /none of which is trusted/);
    assert.deepEqual([...vm.files.keys()], []);
  });
});

describe('what a failed package manager said, in the status message', () => {
  test("apt's and dnf's error lines come first; other output by its last lines", () => {
    const apt = [
      'Err:1 http://mirror/repos/… aadsshlogin all 1.0.031070001',
      '  File has unexpected size (740 != 1480). Mirror sync in progress? [IP: 127.0.0.1 80]',
      'E: Failed to fetch http://mirror/…/aadsshlogin_1.0.031070001_all.deb  File has unexpected size (740 != 1480). Mirror sync in progress? [IP: 127.0.0.1 80]',
      '   Hashes of expected file:',
      '    - SHA256:df11ab92e9472ccf2de3b44459e39b9986f6f2b6fefdc73a89f6bc1a20919acf',
      '    - Filesize:1480 [weak]',
      'E: Unable to fetch some archives, maybe run apt-get update or try with --fix-missing?',
      '',
    ].join('\n');
    assert.match(
      failureLines(apt),
      /^E: Failed to fetch .*Mirror sync in progress\? .* \| E: Unable/,
    );
    assert.doesNotMatch(failureLines(apt), /SHA256/);
    const dnf =
      'Last metadata expiration check: 0:00:01 ago.\nError: Failed to download metadata for repo\n';
    assert.equal(failureLines(dnf), 'Error: Failed to download metadata for repo');
    assert.equal(failureLines('one\ntwo\nthree\nfour\nfive\n'), 'two | three | four | five');
  });
});
